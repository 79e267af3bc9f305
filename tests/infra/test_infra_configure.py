"""`python -m infra configure` (stack outputs -> .chalice/) and `python -m infra gateway-responses`
(the JSON 404 after `chalice deploy`), against copies of .chalice/ and in-process moto."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import boto3
import pytest
from infra_helpers import CHALICE_DIR, MERGE_TEMPLATE, ROOT
from moto import mock_aws

from chalicelib.errors import ConfigurationError
from infra import gateway, policies, stage
from infra.__main__ import main

CHAINS = '{"11155111": "https://rpc.example.invalid/sepolia"}'
EXAMPLE_ENVIRONMENTS = ROOT / "infra" / "environments.example.json"


def _outputs(stage_name: str = "dev") -> dict[str, str]:
    return json.loads((ROOT / "infra" / f"example-outputs-{stage_name}.json").read_text())


def _environments() -> list[dict[str, Any]]:
    return json.loads(EXAMPLE_ENVIRONMENTS.read_text())


def _environment(**changes: Any) -> dict[str, str]:
    arguments: dict[str, Any] = {"stage": "dev", "chains": CHAINS, "provider_url": "https://p.example.invalid",
                                 "environments": _environments()}
    arguments.update(changes)
    outputs = arguments.pop("outputs", _outputs())
    return stage.stage_environment(outputs, **arguments)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A Chalice project folder with a copy of the repository's .chalice/config.json."""
    (tmp_path / ".chalice").mkdir()
    shutil.copy(CHALICE_DIR / "config.json", tmp_path / ".chalice" / "config.json")
    return tmp_path


def test_environment_from_outputs():
    env = _environment(runner_tag="v7", metadata_url="https://aquarius.example.invalid/")
    outputs = _outputs()
    assert env["RESULTS_BUCKET"] == outputs["ResultsBucketName"]
    assert env["PROVIDER_KEY_SECRET"] == outputs["ProviderKeySecretArn"]
    assert env["JWT_SECRET_NAME"] == outputs["JwtSecretArn"]
    assert env["RUNNER_IMAGE"] == outputs["RunnerRepositoryUri"] + ":v7"
    assert env["COMPUTE_BACKEND"] == "batch" and env["METADATA_URL"] == "https://aquarius.example.invalid"
    assert json.loads(env["COMPUTE_ENVIRONMENTS"]) == _environments()


def test_configure_gives_each_environment_its_network_queue():
    """An environments file that names no networkJobQueue gets the stack's network queue beside
    each sealed one; an explicit "" keeps the environment sealed for every job."""
    plain = [{k: v for k, v in item.items() if k != "networkJobQueue"} for item in _environments()]
    written = json.loads(_environment(environments=plain)["COMPUTE_ENVIRONMENTS"])
    assert [e["networkJobQueue"] for e in written] == ["ocean-c2d-dev-cpu-net", "ocean-c2d-dev-gpu-net"]
    assert json.loads(_environment()["COMPUTE_ENVIRONMENTS"]) == _environments()
    sealed = [dict(plain[0], networkJobQueue=""), plain[1]]
    written = json.loads(_environment(environments=sealed)["COMPUTE_ENVIRONMENTS"])
    assert [e["networkJobQueue"] for e in written] == ["", "ocean-c2d-dev-gpu-net"]
    without = {k: v for k, v in _outputs().items() if "Network" not in k}  # a stack from before
    written = json.loads(_environment(environments=plain, outputs=without)["COMPUTE_ENVIRONMENTS"])
    assert all("networkJobQueue" not in e for e in written)


def test_the_algorithm_log_group_is_the_one_the_execution_role_writes(infra_template):
    """configure takes ALGORITHM_LOG_GROUP from the stack, so the group the dispatcher names in
    the job definition's awslogs options (and the API reads streamable logs from) is the group
    the stack's execution role may write; a stack from before that output keeps the default,
    which its role writes."""
    from fnmatch import fnmatchcase

    from chalicelib.compute.dispatch import DEFAULT_LOG_GROUP, AlgorithmContainer, BatchDispatcher
    from chalicelib.config import load_settings

    (role_logs,) = [s for p in infra_template["Resources"]["BatchExecutionRole"]["Properties"]["Policies"]
                    for s in p["PolicyDocument"]["Statement"] if s.get("Sid") == "JobLogs"]
    for configured in ("/c2d/algorithms", None):
        outputs = dict(_outputs(), AlgorithmLogGroup=configured) if configured else {
            k: v for k, v in _outputs().items() if k != stage.LOG_GROUP_OUTPUT}
        env = _environment(outputs=outputs)
        group = configured or DEFAULT_LOG_GROUP
        assert env.get("ALGORITHM_LOG_GROUP") == configured
        settings = load_settings(env)
        dispatcher = BatchDispatcher(None, settings.runner_image, settings.bucket, region="us-east-1",
                                     algorithm_log_group=settings.algorithm_log_group)
        request = dispatcher.definition_request(AlgorithmContainer(image="python:3.13", entrypoint="python $ALGO"))
        (algorithm,) = [c for c in request["ecsProperties"]["taskProperties"][0]["containers"] if c["name"] == "algorithm"]
        assert algorithm["logConfiguration"]["options"]["awslogs-group"] == group
        writable = role_logs["Resource"]["Fn::Sub"].replace("${AlgorithmLogGroup}", group).replace(
            "${AWS::Partition}", "aws").replace("${AWS::Region}", "us-east-1").replace("${AWS::AccountId}", "123456789012")
        assert fnmatchcase(f"arn:aws:logs:us-east-1:123456789012:log-group:{group}:log-stream:c2d/algorithm/0f1e", writable)
        read = {s["Sid"]: s for s in policies.api_policy(env, "ocean-c2d-provider", "dev")["Statement"]}["ReadAlgorithmLogs"]
        assert read["Resource"] == [f"arn:aws:logs:us-east-1:123456789012:log-group:{group}:log-stream:c2d/*"]


@pytest.mark.parametrize("change, message", [
    ({"environments": [dict(_environments()[0], jobQueue="elsewhere")]}, "job queue 'elsewhere'"),
    ({"environments": [dict(_environments()[0], chainIds=[137])]}, "chains [137]"),
    ({"environments": [dict(_environments()[0], storageExpiry=8 * 86400)]}, "storageExpiry"),
    ({"outputs": {k: v for k, v in _outputs().items() if k != "GpuJobQueueArn"}}, "ocean-c2d-gpu"),
    ({"outputs": {k: v for k, v in _outputs().items() if k != "JwtSecretArn"}}, "JwtSecretArn"),
    ({"outputs": {k: v for k, v in _outputs().items() if k != "GpuNetworkJobQueueArn"}}, "ocean-c2d-dev-gpu-net"),
    ({"environments": [dict(_environments()[0], networkJobQueue="ocean-c2d-dev-gpu"), _environments()[1]]}, "never share"),
    ({"environments": [dict(_environments()[0], networkJobQueue="elsewhere-net")]}, "networkJobQueue 'elsewhere-net'"),
    ({"environments": [dict(_environments()[0], id=f"env-{i}", description="x" * 200) for i in range(12)]}, "4096"),
    ({"provider_url": "provider.example"}, "provider URL"),
    ({"chains": "{}"}, "CHAINS"),
])
def test_environment_refuses_what_would_fail_after_deploy(change, message):
    with pytest.raises(ConfigurationError) as raised:
        _environment(**change)
    assert message in str(raised.value)


def test_configure_writes_config_and_policies(project, tmp_path):
    outputs_file = tmp_path / "outputs.json"
    outputs_file.write_text(json.dumps(_outputs()))
    code = main(["--project-dir", str(project), "configure", "--stage", "dev", "--outputs-file", str(outputs_file),
                 "--chains", CHAINS, "--provider-url", "https://p.example.invalid",
                 "--environments", str(EXAMPLE_ENVIRONMENTS)])
    assert code == 0
    config = json.loads((project / ".chalice" / "config.json").read_text())
    original = json.loads((CHALICE_DIR / "config.json").read_text())
    assert config["stages"]["local"] == original["stages"]["local"]
    assert config["stages"]["prod"] == original["stages"]["prod"]
    env = config["stages"]["dev"]["environment_variables"]
    for name, document in policies.render(env, config["app_name"], "dev").items():
        assert json.loads((project / ".chalice" / name).read_text()) == document
    assert config["stages"]["dev"]["lambda_functions"]["api_handler"] == stage.API_HANDLER

    # Rerun after `chalice deploy`: CHAINS kept, the URL taken from what Chalice recorded.
    deployed = project / ".chalice" / "deployed"
    deployed.mkdir()
    (deployed / "dev.json").write_text(json.dumps({"resources": [
        {"name": "rest_api", "resource_type": "rest_api", "rest_api_id": "abc123",
         "rest_api_url": "https://abc123.execute-api.us-east-1.amazonaws.com/api/"}]}))
    assert main(["--project-dir", str(project), "configure", "--stage", "dev", "--outputs-file", str(outputs_file),
                 "--runner-tag", "v2"]) == 0
    env = json.loads((project / ".chalice" / "config.json").read_text())["stages"]["dev"]["environment_variables"]
    assert env["CHAINS"] == CHAINS and env["RUNNER_IMAGE"].endswith(":v2")
    assert json.loads(env["COMPUTE_ENVIRONMENTS"]) == _environments()
    assert env["PROVIDER_URL"] == "https://abc123.execute-api.us-east-1.amazonaws.com/api"

    # A URL of the operator's own (a custom domain) is never replaced by the recorded one.
    assert main(["--project-dir", str(project), "configure", "--stage", "dev", "--outputs-file", str(outputs_file),
                 "--provider-url", "https://provider.example.com"]) == 0
    assert main(["--project-dir", str(project), "configure", "--stage", "dev", "--outputs-file", str(outputs_file)]) == 0
    env = json.loads((project / ".chalice" / "config.json").read_text())["stages"]["dev"]["environment_variables"]
    assert env["PROVIDER_URL"] == "https://provider.example.com"


def test_configure_reports_errors_without_writing(project, tmp_path, capsys):
    outputs_file = tmp_path / "outputs.json"
    outputs_file.write_text(json.dumps({"ResourcePrefix": "x"}))
    before = (project / ".chalice" / "config.json").read_text()
    assert main(["--project-dir", str(project), "configure", "--stage", "dev", "--outputs-file", str(outputs_file),
                 "--environments", str(EXAMPLE_ENVIRONMENTS)]) == 2
    assert "error:" in capsys.readouterr().err
    assert (project / ".chalice" / "config.json").read_text() == before


@pytest.fixture
def moto_aws():
    with mock_aws():
        yield


def test_outputs_are_read_from_the_stack(moto_aws):
    """DescribeStacks as CloudFormation answers it (moto cannot build the Batch part of the real
    template, so this stack only has the outputs' shape)."""
    template = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
                "Outputs": {key: {"Value": value} for key, value in _outputs().items()}}
    client = boto3.client("cloudformation", region_name="us-east-1")
    client.create_stack(StackName="ocean-c2d-dev", TemplateBody=json.dumps(template))
    assert stage.read_stack_outputs(client, "ocean-c2d-dev") == _outputs()


def test_gateway_responses_after_chalice_deploy(moto_aws, project):
    apigateway = boto3.client("apigateway", region_name="us-east-1")
    api = apigateway.create_rest_api(name="ocean-c2d-provider")["id"]
    root = apigateway.get_resources(restApiId=api)["items"][0]["id"]
    apigateway.put_method(restApiId=api, resourceId=root, httpMethod="GET", authorizationType="NONE")
    apigateway.put_integration(restApiId=api, resourceId=root, httpMethod="GET", type="MOCK")
    apigateway.create_deployment(restApiId=api, stageName="api")
    deployed = project / ".chalice" / "deployed"
    deployed.mkdir()
    (deployed / "dev.json").write_text(json.dumps({"resources": [
        {"name": "rest_api", "resource_type": "rest_api", "rest_api_id": api,
         "rest_api_url": f"https://{api}.execute-api.us-east-1.amazonaws.com/api/"}]}))

    assert main(["--project-dir", str(project), "gateway-responses", "--stage", "dev"]) == 0
    response = apigateway.get_gateway_response(restApiId=api, responseType="MISSING_AUTHENTICATION_TOKEN")
    assert response["statusCode"] == "404"
    assert json.loads(response["responseTemplates"]["application/json"]) == {"error": "Not found"}
    assert len(apigateway.get_deployments(restApiId=api)["items"]) == 2


def test_configure_reports_a_missing_stack(moto_aws, project, capsys):
    assert main(["--project-dir", str(project), "configure", "--stage", "dev", "--stack", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_gateway_responses_need_a_deployed_stage(project, capsys):
    assert main(["--project-dir", str(project), "gateway-responses", "--stage", "dev"]) == 2
    assert "chalice deploy --stage dev" in capsys.readouterr().err


def test_merge_template_is_the_gateway_module_s():
    assert json.loads(MERGE_TEMPLATE.read_text()) == gateway.merge_template()


def test_env_prints_the_stage_variables_for_a_shell(capsys):
    import shlex

    assert main(["--project-dir", str(ROOT), "env", "--stage", "dev"]) == 0
    exported = dict(shlex.split(line)[1].split("=", 1) for line in capsys.readouterr().out.splitlines())
    config = json.loads((CHALICE_DIR / "config.json").read_text())
    assert exported == config["stages"]["dev"]["environment_variables"]
