"""infra/resources.yaml, the stack deployed before `chalice deploy`: it lints clean, and it holds
what the code expects (tables as chalicelib/models.py defines them, named as chalicelib/config.py
names them; the bucket; the queues of the compute environments; the runner's role)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from chalicelib import models
from chalicelib.payments import models as payment_models
from chalicelib.compute.dispatch import DEFAULT_LOG_GROUP, BatchDispatcher, batch_timeout_seconds
from chalicelib.compute.environments import DEFAULT_FILE, load_environments
from chalicelib.compute.event_signals import RUNNER_SOURCE
from chalicelib.config import load_settings
from infra import stage as stage_module
from infra_helpers import ROOT, TEMPLATE, lint

pytestmark = pytest.mark.timeout(120)
EXAMPLE_ENVIRONMENTS = ROOT / "infra" / "environments.example.json"
PREFIX = "pfx-test"


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def _default(template: dict[str, Any], parameter: str) -> Any:
    return template["Parameters"][parameter]["Default"]


def _sub(value: Any) -> str:
    """The text of a {"Fn::Sub": "...${ResourcePrefix}..."} with the test prefix."""
    assert isinstance(value, dict) and "Fn::Sub" in value, value
    return value["Fn::Sub"].replace("${ResourcePrefix}", PREFIX)


def _environment_files() -> list[Path]:
    return [DEFAULT_FILE, EXAMPLE_ENVIRONMENTS]


def test_template_passes_cfn_lint():
    assert lint(TEMPLATE) == []


def test_every_model_has_its_table(infra_template):
    settings = load_settings({"RESOURCE_PREFIX": PREFIX, "CHAINS": '{"1": "https://rpc.invalid"}',
                              "RESULTS_BUCKET": "b"})
    models.bind(settings)
    every_model = models.ALL_MODELS + payment_models.bind(settings.region, {"RESOURCE_PREFIX": PREFIX})
    try:
        _check_tables(infra_template, every_model)
    finally:
        payment_models.bind(settings.region)  # back to the tables the other tests use


def _check_tables(infra_template, every_model) -> None:
    tables = {_sub(t["Properties"]["TableName"]): t for t in _resources(infra_template, "AWS::DynamoDB::Table").values()}
    assert set(tables) == {model.Meta.table_name for model in every_model}
    for model in every_model:
        table, schema = tables[model.Meta.table_name], model._get_schema()
        properties = table["Properties"]
        assert properties["BillingMode"] == "PAY_PER_REQUEST"
        assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"
        assert _pairs(_defaults(properties["AttributeDefinitions"]), "AttributeType") == _pairs(
            schema["attribute_definitions"], "AttributeType")
        assert _pairs(properties["KeySchema"], "KeyType") == _pairs(schema["key_schema"], "KeyType")
        declared = {i["IndexName"]: i for i in _defaults(properties.get("GlobalSecondaryIndexes", []))}
        expected = {i["index_name"]: i for i in schema["global_secondary_indexes"]}
        assert set(declared) == set(expected)
        for name, index in expected.items():
            assert _pairs(declared[name]["KeySchema"], "KeyType") == _pairs(index["key_schema"], "KeyType")
            assert declared[name]["Projection"] == index["projection"]
        ttl = models.TTL_ATTRIBUTES.get(model)
        assert properties.get("TimeToLiveSpecification") == ({"AttributeName": ttl, "Enabled": True} if ttl else None)


def _defaults(items: list) -> list:
    """A list as the template's default parameters make it (the `Fn::If`s of enabled options)."""
    return [item["Fn::If"][1] if isinstance(item, dict) and "Fn::If" in item else item for item in items]


def _pairs(items: list[dict[str, str]], field: str) -> set[tuple[str, str]]:
    return {(item["AttributeName"], item[field]) for item in items}


def test_bucket_is_private_encrypted_and_expires_job_data(infra_template):
    (bucket,) = _resources(infra_template, "AWS::S3::Bucket").values()
    properties = bucket["Properties"]
    assert properties["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]  # what results.py and the runner request
    assert set(properties["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(properties["PublicAccessBlockConfiguration"]) == 4
    rule, markers = properties["LifecycleConfiguration"]["Rules"]
    assert rule["Prefix"] == "jobs/" and rule["Status"] == "Enabled"
    assert rule["ExpirationInDays"] == {"Ref": "JobDataExpirationDays"}
    # versioned (issue 18, point 2): manifests and results are read at the version the API and
    # publish wrote; one made noncurrent by another job's write lives as long as the job's data
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": {"Ref": "JobDataExpirationDays"}}
    assert markers == {"Id": "remove-expired-delete-markers", "Status": "Enabled", "Prefix": "jobs/",
                       "ExpiredObjectDeleteMarker": True}
    longest = max(e.storage_expiry for path in _environment_files()
                  for e in load_environments({"COMPUTE_ENVIRONMENTS_FILE": str(path)}).values())
    assert _default(infra_template, "JobDataExpirationDays") >= math.ceil(longest / 86400)
    (policy,) = _resources(infra_template, "AWS::S3::BucketPolicy").values()
    (deny,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def _vcpus_needed(queue: str) -> int:
    """Every job of the queue's environments at once: the algorithm's nCPU plus the two runner
    containers (configure, publish) the dispatcher adds."""
    runner = BatchDispatcher(None, "image", "bucket")._runner_vcpus
    return max(sum((e.n_cpu + 2 * runner) * e.max_jobs for e in load_environments(
        {"COMPUTE_ENVIRONMENTS_FILE": str(path)}).values() if e.job_queue.rsplit("-", 1)[-1] == queue.rsplit("-", 1)[-1])
        for path in _environment_files())


def test_one_cpu_and_one_gpu_spot_environment_behind_the_configured_queues(infra_template):
    environments = _resources(infra_template, "AWS::Batch::ComputeEnvironment")
    queues = _resources(infra_template, "AWS::Batch::JobQueue")
    assert set(environments) == {"CpuComputeEnvironment", "GpuComputeEnvironment",
                                 "CpuNetworkComputeEnvironment", "GpuNetworkComputeEnvironment"}
    examples = {e.job_queue: e for e in load_environments({"COMPUTE_ENVIRONMENTS_FILE": str(EXAMPLE_ENVIRONMENTS)}).values()}
    for kind, image in (("Cpu", "ECS_AL2023"), ("Gpu", "ECS_AL2023_NVIDIA")):
        resources = environments[f"{kind}ComputeEnvironment"]["Properties"]["ComputeResources"]
        assert environments[f"{kind}ComputeEnvironment"]["Properties"]["Type"] == "MANAGED"
        assert resources["Type"] == "SPOT" and resources["MinvCpus"] == 0
        assert resources["InstanceTypes"] == {"Ref": f"{kind}InstanceTypes"}
        assert resources["Ec2Configuration"] == [{"ImageType": image}]
        # Queue names default from the stack's prefix, so two stages in one account never share one;
        # the example environments file is written for the README's dev stack.
        assert _default(infra_template, f"{kind}JobQueueName") == ""
        queue = queues[f"{kind}JobQueue"]["Properties"]
        assert queue["JobQueueName"] == {"Fn::If": [f"Default{kind}QueueName", {"Fn::Sub": f"${{ResourcePrefix}}-{kind.lower()}"},
                                                    {"Ref": f"{kind}JobQueueName"}]}
        assert infra_template["Conditions"][f"Default{kind}QueueName"] == {"Fn::Equals": [{"Ref": f"{kind}JobQueueName"}, ""]}
        queue_name = f"{_default(infra_template, 'ResourcePrefix')}-{kind.lower()}"
        assert queue_name in examples, f"{queue_name} is no jobQueue of {EXAMPLE_ENVIRONMENTS.name}"
        assert (examples[queue_name].n_gpu > 0) == (kind == "Gpu")
        assert _default(infra_template, f"{kind}MaxVcpus") >= _vcpus_needed(queue_name)
        assert queue["ComputeEnvironmentOrder"] == [{"Order": 1, "ComputeEnvironment": {"Ref": f"{kind}ComputeEnvironment"}}]
    assert _default(infra_template, "CpuInstanceTypes") == "c6i,m6i"
    assert _default(infra_template, "GpuInstanceTypes").startswith("g5.")


def test_network_jobs_have_compute_environments_of_their_own(infra_template):
    """Host-networked jobs on one instance share its network namespace (abstract Unix sockets,
    loopback): the network queues use their own compute environments, with the sealed ones'
    launch template (the same rules), instance types and limits; their names default from the
    prefix, and the example environments name them as networkJobQueue."""
    environments = _resources(infra_template, "AWS::Batch::ComputeEnvironment")
    queues = _resources(infra_template, "AWS::Batch::JobQueue")
    examples = {e.job_queue: e for e in load_environments({"COMPUTE_ENVIRONMENTS_FILE": str(EXAMPLE_ENVIRONMENTS)}).values()}
    for kind in ("Cpu", "Gpu"):
        sealed = environments[f"{kind}ComputeEnvironment"]
        network = environments[f"{kind}NetworkComputeEnvironment"]
        assert sealed.get("Condition") == network.get("Condition")
        sealed_resources, network_resources = (dict(e["Properties"]["ComputeResources"]) for e in (sealed, network))
        assert network_resources.pop("Tags") == {"Name": {"Fn::Sub": f"${{ResourcePrefix}}-batch-{kind.lower()}-net"}}
        sealed_resources.pop("Tags")
        assert network_resources == sealed_resources  # same launch template, rules, types and limits
        queue = queues[f"{kind}NetworkJobQueue"]
        assert queue.get("Condition") == queues[f"{kind}JobQueue"].get("Condition")
        # only the network compute environment serves the network queue, and it serves no other
        assert queue["Properties"]["ComputeEnvironmentOrder"] == [
            {"Order": 1, "ComputeEnvironment": {"Ref": f"{kind}NetworkComputeEnvironment"}}]
        users = [name for name, q in queues.items()
                 if {"Ref": f"{kind}NetworkComputeEnvironment"} in [o["ComputeEnvironment"] for o in q["Properties"]["ComputeEnvironmentOrder"]]]
        assert users == [f"{kind}NetworkJobQueue"]
        assert _default(infra_template, f"{kind}NetworkJobQueueName") == ""
        assert queue["Properties"]["JobQueueName"] == {"Fn::If": [
            f"Default{kind}NetworkQueueName", {"Fn::Sub": f"${{ResourcePrefix}}-{kind.lower()}-net"},
            {"Ref": f"{kind}NetworkJobQueueName"}]}
        sealed_name = f"{_default(infra_template, 'ResourcePrefix')}-{kind.lower()}"
        assert examples[sealed_name].network_job_queue == f"{sealed_name}-net"
        output = infra_template["Outputs"][f"{kind}NetworkJobQueueArn"]
        assert output["Value"] == {"Ref": f"{kind}NetworkJobQueue"}
        assert output.get("Condition") == infra_template["Outputs"][f"{kind}JobQueueArn"].get("Condition")


# Strategies with which Batch can update a compute environment's instances in place (AWS Batch user
# guide, "Perform infrastructure updates"; it also needs the service-linked role).
INFRASTRUCTURE_UPDATE_STRATEGIES = {"BEST_FIT_PROGRESSIVE", "SPOT_CAPACITY_OPTIMIZED", "SPOT_PRICE_CAPACITY_OPTIMIZED"}


def test_compute_environments_move_to_the_latest_ami_in_place(infra_template):
    """Point 6 of issue 18: every infrastructure update (a stack update that changes the launch
    template, or `aws batch update-compute-environment ... updateToLatestImageVersion=true`)
    replaces the instances with ones on the latest ECS-optimized AMI Batch supports, in place,
    after the running jobs had the time of the longest job. Batch ignores the flag if an AMI is
    named anywhere (botocore's Batch model, ComputeResourceUpdate.updateToLatestImageVersion):
    none is."""
    longest = max(batch_timeout_seconds(e.max_job_duration) for path in _environment_files()
                  for e in load_environments({"COMPUTE_ENVIRONMENTS_FILE": str(path)}).values())
    assert _default(infra_template, "InstanceUpdateJobMinutes") * 60 >= longest
    for environment in _resources(infra_template, "AWS::Batch::ComputeEnvironment").values():
        properties = environment["Properties"]
        resources = properties["ComputeResources"]
        assert properties["ReplaceComputeEnvironment"] is False
        assert properties["UpdatePolicy"] == {"TerminateJobsOnUpdate": False,
                                              "JobExecutionTimeoutMinutes": {"Ref": "InstanceUpdateJobMinutes"}}
        assert resources["UpdateToLatestImageVersion"] is True
        assert "ImageId" not in resources and all(set(c) == {"ImageType"} for c in resources["Ec2Configuration"])
        launch_template = resources["LaunchTemplate"]["LaunchTemplateId"]["Ref"]
        assert "ImageId" not in infra_template["Resources"][launch_template]["Properties"]["LaunchTemplateData"]
        # a changed user data is a new launch template version, hence an infrastructure update
        assert resources["LaunchTemplate"]["Version"] == {"Fn::GetAtt": [launch_template, "LatestVersionNumber"]}
        assert "ServiceRole" not in properties and resources["AllocationStrategy"] in INFRASTRUCTURE_UPDATE_STRATEGIES


def test_instances_keep_containers_away_from_instance_credentials(infra_template):
    """IMDSv2 and hop limit 1 still apply (they do not stop a host-networked container); the
    algorithm UIDs' rules are the user data (tests/infra/test_network_rules.py applies them)."""
    for template in _resources(infra_template, "AWS::EC2::LaunchTemplate").values():
        options = template["Properties"]["LaunchTemplateData"]["MetadataOptions"]
        assert options["HttpTokens"] == "required" and options["HttpPutResponseHopLimit"] == 1
        assert "UserData" in template["Properties"]["LaunchTemplateData"]


def _role_statements(infra_template: dict[str, Any], role: str) -> list[dict[str, Any]]:
    properties = infra_template["Resources"][role]["Properties"]
    return [s for policy in properties["Policies"] for s in policy["PolicyDocument"]["Statement"]]


def test_runner_role_reads_manifests_writes_results_and_sends_its_events_only(infra_template):
    """The runner reads a manifest only at a version (the one the API pinned) and writes only
    outputs, logs and results.json: never a manifest, no read of results, no delete. IAM cannot
    tell one job's task from another's, so the rest is the job key (tests/compute/test_job_isolation.py)."""
    role = infra_template["Resources"]["BatchJobRole"]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    statements = _role_statements(infra_template, "BatchJobRole")
    plain = {s["Sid"]: s for s in statements if "Sid" in s}
    assert plain["ReadManifest"]["Action"] == "s3:GetObjectVersion"
    assert plain["ReadManifest"]["Resource"] == {"Fn::Sub": "${ResultsBucket.Arn}/jobs/*/manifest.json"}
    assert sorted(plain["PublishResults"]["Action"]) == ["s3:AbortMultipartUpload", "s3:PutObject"]
    assert plain["PublishResults"]["Resource"] == [{"Fn::Sub": "${ResultsBucket.Arn}/jobs/*/outputs/*"},
                                                   {"Fn::Sub": "${ResultsBucket.Arn}/jobs/*/logs/*"},
                                                   {"Fn::Sub": "${ResultsBucket.Arn}/jobs/*/results.json"}]
    assert plain["StageEvents"]["Action"] == "events:PutEvents"
    assert plain["StageEvents"]["Resource"]["Fn::Sub"].endswith(":event-bus/default")
    assert plain["StageEvents"]["Condition"] == {"StringEquals": {"events:source": RUNNER_SOURCE}}
    (optional,) = [s for s in statements if "Fn::If" in s]
    assert optional["Fn::If"][0] == "WithDataObjects" and optional["Fn::If"][1]["Action"] == "s3:GetObject"
    assert len(statements) == 4


def test_the_execution_role_writes_the_configured_algorithm_log_group(infra_template):
    """Point 8 of issue 18: the ECS agent hands the awslogs driver the task's execution role
    (amazon-ecs-agent agent/engine/docker_task_engine.go: AWSLogAuthExecutionRole ->
    Task.ApplyExecutionRoleLogsAuth sets awslogs-credentials-endpoint), so that role, not the
    instance role, must write ALGORITHM_LOG_GROUP: the stack parameter it writes is the group
    configure hands the app (output AlgorithmLogGroup), and a group other than Batch's default
    is created by the stack."""
    assert _default(infra_template, "AlgorithmLogGroup") == DEFAULT_LOG_GROUP
    (logs,) = [s for s in _role_statements(infra_template, "BatchExecutionRole") if s.get("Sid") == "JobLogs"]
    assert sorted(logs["Action"]) == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert logs["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:"
                                           "log-group:${AlgorithmLogGroup}:*"}
    assert infra_template["Outputs"][stage_module.LOG_GROUP_OUTPUT]["Value"] == {"Ref": "AlgorithmLogGroup"}
    group = infra_template["Resources"]["AlgorithmLogs"]
    assert group["Type"] == "AWS::Logs::LogGroup" and group["Condition"] == "OwnAlgorithmLogGroup"
    assert group["Properties"] == {"LogGroupName": {"Ref": "AlgorithmLogGroup"},
                                   "RetentionInDays": {"Ref": "AlgorithmLogRetentionDays"}}
    assert infra_template["Conditions"]["OwnAlgorithmLogGroup"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AlgorithmLogGroup"}, DEFAULT_LOG_GROUP]}]}


def test_secrets_provider_key_empty_jwt_secret_generated(infra_template):
    secrets = _resources(infra_template, "AWS::SecretsManager::Secret")
    provider = secrets["ProviderKeySecret"]["Properties"]
    assert "SecretString" not in provider and "GenerateSecretString" not in provider
    jwt = secrets["JwtSecret"]["Properties"]["GenerateSecretString"]
    assert jwt["PasswordLength"] >= 32 and jwt["ExcludePunctuation"] is True  # config.py wants >= 32 characters


def test_no_event_rule_of_its_own(infra_template):
    """The runner's stage events go to the default bus, where the rule of Chalice's
    `runner_stage_events` handler picks them up (see test_infra_package)."""
    assert _resources(infra_template, "AWS::Events::Rule") == {}
    assert infra_template["Outputs"]["EventBusName"]["Value"] == "default"


def test_outputs_are_what_configure_reads(infra_template):
    outputs = set(infra_template["Outputs"])
    assert set(stage_module.REQUIRED_OUTPUTS) | set(stage_module.QUEUE_OUTPUTS) <= outputs
    assert set(stage_module.NETWORK_QUEUE_OUTPUTS.values()) <= outputs
    for stage in ("dev", "prod"):
        example = json.loads((ROOT / "infra" / f"example-outputs-{stage}.json").read_text())
        assert set(example) == outputs


def test_repository_for_the_runner_image(infra_template):
    (repository,) = _resources(infra_template, "AWS::ECR::Repository").values()
    assert _sub(repository["Properties"]["RepositoryName"]) == f"{PREFIX}-runner"
    assert (ROOT / "runner" / "Dockerfile").exists()


def test_alarms_read_what_the_functions_write_and_tell_the_topic(infra_template):
    """Every alarm reads a metric of the functions' namespace with the stage's service dimension
    (what configure gives POWERTOOLS_SERVICE_NAME), names a metric the code records, and
    notifies the operator's topic when it fires and when it clears."""
    import re

    from chalicelib.observability.emit import NAMESPACE

    code = "\n".join(path.read_text() for path in (ROOT / "chalicelib").rglob("*.py"))
    recorded = set(re.findall(r'record\(\s*"([A-Za-z]+)"', code)) | set(re.findall(r'"(Escrow[A-Za-z]+)"', code))
    assert stage_module.METRICS_NAMESPACE == NAMESPACE
    (topic,) = _resources(infra_template, "AWS::SNS::Topic")
    alarms = _resources(infra_template, "AWS::CloudWatch::Alarm")
    expected = {"ServerErrors", "Requests", "ReconcilerRuns", "ReconcilerErrors", "ReconcilerRepairs", "JobsPastDeadline",
                "ChainsLowOnGas", "EscrowClaimFailures"}
    read = set()
    for name, alarm in alarms.items():
        properties = alarm["Properties"]
        assert properties["AlarmActions"] == properties["OKActions"] == [{"Ref": topic}], name
        stats = [m["MetricStat"]["Metric"] for m in properties.get("Metrics", []) if "MetricStat" in m] or [properties]
        for metric in stats:
            assert metric["Namespace"] == NAMESPACE
            assert metric["Dimensions"] == [{"Name": "service", "Value": {"Ref": "ResourcePrefix"}}]
            read.add(metric["MetricName"])
    assert read == expected and read <= recorded
    assert alarms["ReconcilerNotRunningAlarm"]["Properties"]["TreatMissingData"] == "breaching"  # a dead reconciler writes nothing
    outputs = {"ResourcePrefix": PREFIX, "ResultsBucketName": "b", "JobDataExpirationDays": "7",
               "ProviderKeySecretArn": "arn:aws:secretsmanager:us-east-1:1:secret:k", "JwtSecretArn": "arn:j",
               "RunnerRepositoryUri": "1.dkr.ecr.us-east-1.amazonaws.com/r", "BatchJobRoleArn": "arn:r",
               "BatchExecutionRoleArn": "arn:e", "EventBusName": "default",
               "CpuJobQueueArn": "arn:aws:batch:us-east-1:1:job-queue/q"}
    environments = [{"id": "e", "chainIds": [1], "jobQueue": "q", "nCPU": 1, "ramGB": 1, "diskGB": 1, "maxJobs": 1,
                     "maxJobDuration": 60, "storageExpiry": 60}]
    env = stage_module.stage_environment(outputs, stage="dev", chains='{"1": "https://rpc.invalid"}',
                                         provider_url="https://p.example", environments=environments)
    assert env["POWERTOOLS_SERVICE_NAME"] == PREFIX and env["POWERTOOLS_METRICS_NAMESPACE"] == NAMESPACE
    (dashboard,) = _resources(infra_template, "AWS::CloudWatch::Dashboard").values()
    body = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    json.loads(body[0].replace("${", "").replace("}\"", "\""))  # the body is JSON once substituted
    for metric in ("JobsStarted", "JobsEnded", "StartsRefused", "AlgorithmSeconds", "QueueWaitSeconds", "EscrowLocks",
                   "EscrowClaims", "EscrowCancels", "ProviderGasBalance", "ProviderGasSpent", "ReconcilerRepairs"):
        assert metric in body[0] and metric in recorded, metric
