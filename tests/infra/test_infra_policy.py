"""The deployed stages of .chalice/config.json and their IAM policies: wired to the infrastructure,
least privilege, and `"*"` only where AWS accepts nothing else."""
from __future__ import annotations

import ast
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import cfnlint
import pytest
from infra_helpers import CHALICE_DIR, DEPLOYED_STAGES, ROOT, chalice_config, stage_env

import app as app_module
from chalicelib.compute.batch_naming import DEFINITION_PREFIX
from chalicelib.compute.environments import load_environments
from chalicelib.config import load_settings
from chalicelib.errors import ConfigurationError
from infra import policies, stage as stage_module

APP_NAME = "ocean-c2d-provider"
# Actions the infrastructure template grants on "*" (the Batch job execution role).
TEMPLATE_WILDCARD_ACTIONS = frozenset({"ecr:GetAuthorizationToken"})


@lru_cache(maxsize=1)
def iam_reference() -> dict[str, dict[str, list[str]]]:
    """{"service:action" (lower case): resource types} from the IAM service authorization data
    that cfn-lint ships (an action without resource types can only be granted on "*")."""
    data = json.loads((Path(cfnlint.__file__).parent / "data" / "AdditionalSpecs" / "Policies.json").read_text())
    return {f"{service}:{action}": spec.get("Resources", [])
            for service, body in data.items() for action, spec in body.get("Actions", {}).items()}


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for statement in document["Statement"]:
        if "Fn::If" in statement:  # optional statement of the template
            yield from (s for s in statement["Fn::If"][1:] if isinstance(s, dict) and "Effect" in s)
        else:
            yield statement


def check_least_privilege(document: dict[str, Any], wildcard_allowed: frozenset[str]) -> None:
    """Allow only; named actions that exist; "*" resources only for actions allowed on nothing else."""
    reference = iam_reference()
    for statement in _statements(document):
        assert statement["Effect"] == "Allow" and "NotAction" not in statement and "NotResource" not in statement
        actions = _listed(statement["Action"])
        resources = _listed(statement["Resource"])
        for action in actions:
            assert "*" not in action, f"wildcard action {action}"
            assert action.lower() in reference, f"{action} is no IAM action"
        if "*" in resources:
            assert resources == ["*"]
            for action in actions:
                assert action in wildcard_allowed, f"{action} granted on '*'"
                assert reference[action.lower()] == [], f"{action} supports resource-level permissions: name them"
        else:
            for action in actions:
                assert reference[action.lower()], f"{action} cannot be limited to resources: grant it on '*' explicitly"
            for resource in resources:
                assert not (isinstance(resource, str) and resource.endswith(":*:*")), resource


def _policy(stage: str, kind: str) -> dict[str, Any]:
    return json.loads((CHALICE_DIR / policies.policy_files(stage)[kind]).read_text())


def _by_sid(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {statement["Sid"]: statement for statement in document["Statement"]}


@pytest.mark.parametrize("stage", DEPLOYED_STAGES)
def test_policy_files_are_rendered_from_the_stage_environment(stage):
    """configure writes both together: a hand edit of one, or a stale one, fails here."""
    rendered = policies.render(stage_env(stage), APP_NAME, stage)
    for name, document in rendered.items():
        assert json.loads((CHALICE_DIR / name).read_text()) == document, f"{name}: rerun python -m infra configure"


@pytest.mark.parametrize("stage", DEPLOYED_STAGES)
def test_stage_policies_are_least_privilege(stage):
    check_least_privilege(_policy(stage, "api"), policies.WILDCARD_ACTIONS)
    check_least_privilege(_policy(stage, "events"), frozenset())
    check_least_privilege(_policy(stage, "reconcile"), policies.RECONCILE_WILDCARD_ACTIONS)
    check_least_privilege(_policy(stage, "index"), frozenset())


def test_wildcard_lists_are_exactly_what_aws_requires():
    reference = iam_reference()
    for action in policies.WILDCARD_ACTIONS | policies.RECONCILE_WILDCARD_ACTIONS | TEMPLATE_WILDCARD_ACTIONS:
        assert reference[action.lower()] == [], action


def test_template_roles_are_least_privilege(infra_template):
    for name, resource in infra_template["Resources"].items():
        if resource["Type"] == "AWS::IAM::Role":
            for policy in resource["Properties"].get("Policies", []):
                check_least_privilege(policy["PolicyDocument"], TEMPLATE_WILDCARD_ACTIONS)


@pytest.mark.parametrize("stage", DEPLOYED_STAGES)
def test_api_policy_names_exactly_the_stage_resources(stage):
    env = stage_env(stage)
    settings = load_settings(env)
    where = policies.Account.from_arn(env["PROVIDER_KEY_SECRET"])
    statements = _by_sid(_policy(stage, "api"))
    table = lambda name: f"arn:{where.partition}:dynamodb:{where.region}:{where.account}:table/{name}"  # noqa: E731
    names = [settings.nonces_table, settings.revoked_tokens_table, settings.jobs_table, settings.orders_table,
             settings.assets_table, settings.counters_table, settings.audit_table]
    assert names == [f"{env['RESOURCE_PREFIX']}-{n}" for n in
                     ("nonces", "revoked-tokens", "jobs", "orders", "assets", "counters", "audit")]
    payments = [f"{env['RESOURCE_PREFIX']}-{n}" for n in ("chain-accounts", "transactions", "escrow-payments")]
    assert sorted(statements["Items"]["Resource"]) == sorted(table(n) for n in names + payments)
    assert sorted(statements["EscrowPaymentIndexes"]["Resource"]) == sorted([
        f"{table(payments[1])}/index/open-by-chain", f"{table(payments[2])}/index/open-payments",
        f"{table(payments[2])}/index/held-payments", f"{table(payments[2])}/index/by-chain"])
    assert sorted(statements["JobIndexes"]["Resource"]) == sorted(
        f"{table(settings.jobs_table)}/index/{i}" for i in ("by-owner", "by-owner-document", "active-by-update", "by-environment"))
    # a start puts its audit entries in its transaction (Items); a publisher's page is one Query
    assert statements["AuditLog"]["Action"] == ["dynamodb:Query"]
    assert statements["AuditLog"]["Resource"] == [table(settings.audit_table)]
    assert statements["JobObjects"]["Resource"] == [f"arn:aws:s3:::{settings.bucket}/jobs/*"]
    # results are served at the version publish wrote, and a deleted job loses every version
    assert statements["JobObjects"]["Action"] == ["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:GetObject",
                                                  "s3:GetObjectVersion", "s3:PutObject"]
    assert statements["ListJobObjects"]["Action"] == ["s3:ListBucket", "s3:ListBucketVersions"]
    assert statements["ListJobObjects"]["Condition"] == {"StringLike": {"s3:prefix": ["jobs/*"]}}
    assert statements["Secrets"]["Resource"] == [env["PROVIDER_KEY_SECRET"], env["JWT_SECRET_NAME"]]
    configured = load_environments(env).values()
    queues = {e.job_queue for e in configured} | {e.network_job_queue for e in configured}
    # every environment of a deployed stage has its network queue (configure fills it in)
    assert all(e.network_job_queue == f"{e.job_queue}-net" for e in configured)
    submit = statements["SubmitJobs"]["Resource"]
    assert {r.rsplit("/", 1)[-1] for r in submit if ":job-queue/" in r} == queues
    assert all(r.endswith(f"job-definition/{DEFINITION_PREFIX}*") for r in statements["RegisterJobDefinitions"]["Resource"])
    assert statements["PassJobRoles"]["Resource"] == [settings.batch_job_role_arn, settings.batch_execution_role_arn]
    assert statements["FunctionLogs"]["Resource"] == [
        f"arn:aws:logs:{where.region}:{where.account}:log-group:/aws/lambda/{APP_NAME}-{stage}*"]
    assert statements["FindJobDefinitions"]["Resource"] == "*"


@pytest.mark.parametrize("stage", DEPLOYED_STAGES)
def test_event_handlers_touch_job_records_and_counters_only(stage):
    env = stage_env(stage)
    statements = _by_sid(_policy(stage, "events"))
    assert set(statements) == {"FunctionLogs", "JobRecords", "EnvironmentCounters", "DeleteJobRegistrySecrets",
                               *ESCROW_STATEMENTS}
    _check_job_registry_secrets(env, statements["DeleteJobRegistrySecrets"], ["secretsmanager:DeleteSecret"])
    _check_escrow(env, statements)
    assert statements["JobRecords"]["Resource"][0].endswith(f":table/{env['RESOURCE_PREFIX']}-jobs")
    assert statements["EnvironmentCounters"]["Action"] == ["dynamodb:UpdateItem"]
    assert statements["EnvironmentCounters"]["Resource"][0].endswith(f":table/{env['RESOURCE_PREFIX']}-counters")


@pytest.mark.parametrize("stage", DEPLOYED_STAGES)
def test_reconciler_touches_active_jobs_orders_and_manifests_only(stage):
    env = stage_env(stage)
    prefix = env["RESOURCE_PREFIX"]
    statements = _by_sid(_policy(stage, "reconcile"))
    assert set(statements) == {"FunctionLogs", "JobRecords", "ActiveJobs", "EnvironmentCounters", "ReleaseOrders",
                               "DeleteManifests", "FindManifests", "ListJobObjects", "DescribeJobs",
                               "DeleteJobRegistrySecrets", "FindJobRegistrySecrets",
                               *DISPATCH_STATEMENTS, *ESCROW_STATEMENTS}
    # the sweep of registry logins left behind (compute.registry_auth): ListSecrets takes no resource
    _check_job_registry_secrets(env, statements["DeleteJobRegistrySecrets"], ["secretsmanager:DeleteSecret"])
    assert statements["FindJobRegistrySecrets"]["Action"] == ["secretsmanager:ListSecrets"]
    assert statements["FindJobRegistrySecrets"]["Resource"] == "*"
    # it dispatches a start it finishes from its record exactly as the API does
    api = _by_sid(_policy(stage, "api"))
    assert all(statements[sid] == api[sid] for sid in DISPATCH_STATEMENTS)
    assert statements["FindManifests"] == {"Sid": "FindManifests", "Effect": "Allow", "Action": ["s3:GetObject"],
                                           "Resource": [f"arn:aws:s3:::{env['RESULTS_BUCKET']}/jobs/*/manifest.json"]}
    # the same TerminateJob stops an algorithm past its deadline (compute.deadlines)
    where = policies.Account.from_arn(env["PROVIDER_KEY_SECRET"])
    assert statements["StopJobs"]["Action"] == ["batch:TerminateJob"]
    assert statements["StopJobs"]["Resource"] == [f"arn:aws:batch:{where.region}:{where.account}:job/*"]
    _check_escrow(env, statements)
    assert statements["JobRecords"]["Resource"][0].endswith(f":table/{prefix}-jobs")
    assert statements["ActiveJobs"]["Resource"] == [statements["JobRecords"]["Resource"][0] + "/index/active-by-update"]
    assert statements["ReleaseOrders"]["Action"] == ["dynamodb:DeleteItem"]
    assert statements["ReleaseOrders"]["Resource"][0].endswith(f":table/{prefix}-orders")
    assert statements["DeleteManifests"]["Resource"] == [f"arn:aws:s3:::{env['RESULTS_BUCKET']}/jobs/*"]
    assert statements["DeleteManifests"]["Action"] == ["s3:DeleteObject", "s3:DeleteObjectVersion"]
    assert statements["DescribeJobs"] == {"Sid": "DescribeJobs", "Effect": "Allow", "Resource": "*",
                                          "Action": ["batch:DescribeJobs", "batch:ListJobs"]}
    from chalicelib.models import JobRecord

    assert JobRecord.active.Meta.index_name == "active-by-update"


ESCROW_STATEMENTS = ("EscrowPayments", "EscrowPaymentIndexes", "ProviderKey")
DISPATCH_STATEMENTS = ("FindJobDefinitions", "RegisterJobDefinitions", "SubmitJobs", "TagOnCreate", "StopJobs",
                       "PassJobRoles")


def _check_escrow(env: dict[str, str], statements: dict[str, dict[str, Any]]) -> None:
    """A paid job's end is settled from the event handlers and healed by the reconciler: the
    payment tables' items and indexes (nothing else) and the provider key (not the JWT secret)."""
    prefix = env["RESOURCE_PREFIX"]
    items = statements["EscrowPayments"]
    assert sorted(r.rsplit("/", 1)[-1] for r in items["Resource"]) == sorted(
        f"{prefix}-{n}" for n in ("chain-accounts", "transactions", "escrow-payments"))
    assert items["Action"] == ["dynamodb:ConditionCheckItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
    assert sorted(r.split(":table/", 1)[1] for r in statements["EscrowPaymentIndexes"]["Resource"]) == sorted([
        f"{prefix}-transactions/index/open-by-chain", f"{prefix}-escrow-payments/index/open-payments",
        f"{prefix}-escrow-payments/index/held-payments"])
    assert statements["ProviderKey"]["Resource"] == [env["PROVIDER_KEY_SECRET"]]


def _event_handler_names() -> set[str]:
    """Functions of EventBridge rules (the reconciler's and the indexer's schedules are too)."""
    return {source.name for source in app_module.app.event_sources}


@pytest.mark.parametrize("stage", DEPLOYED_STAGES)
def test_stage_settings_per_function(stage):
    config = chalice_config()["stages"][stage]
    assert config["autogen_policy"] is False
    assert config["iam_policy_file"] == policies.policy_files(stage)["api"]
    functions = config["lambda_functions"]
    scheduled = {stage_module.RECONCILE_FUNCTION, stage_module.INDEX_FUNCTION}
    assert set(stage_module.EVENT_HANDLERS) | scheduled == _event_handler_names()
    assert set(functions) == {"api_handler", stage_module.REGISTER_FUNCTION} | _event_handler_names()
    assert functions["api_handler"]["lambda_timeout"] <= 29  # API Gateway's integration limit
    assert functions[stage_module.INDEX_FUNCTION]["lambda_timeout"] <= 60, "a run ends before the next minute's"
    kinds = {**{name: "events" for name in stage_module.EVENT_HANDLERS}, stage_module.RECONCILE_FUNCTION: "reconcile",
             stage_module.INDEX_FUNCTION: "index"}
    for name, settings in functions.items():
        assert settings["lambda_memory_size"] >= 128 and settings["lambda_timeout"] > 0
        expected = policies.policy_files(stage)[kinds.get(name, "api")]
        assert settings.get("iam_policy_file", config["iam_policy_file"]) == expected


def _string_literals(folder: Path) -> set[str]:
    found: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
    return found


@pytest.mark.parametrize("stage", DEPLOYED_STAGES)
def test_stage_environment_is_what_the_app_reads(stage):
    env = stage_env(stage)
    read = _string_literals(ROOT / "chalicelib")
    unknown = sorted(name for name in env if name not in read)
    assert not unknown, f"variables no chalicelib module reads: {unknown}"
    settings = load_settings(env)
    assert settings.stage == stage and settings.compute_backend == "batch"
    assert ".dkr.ecr." in settings.runner_image and settings.event_bus == "default"
    assert settings.provider_url.startswith("https://")
    assert load_environments(env)
    size = sum(len(k) + len(v.encode()) for k, v in env.items())
    assert size <= stage_module.LAMBDA_ENV_LIMIT


def test_local_stage_is_left_alone():
    assert chalice_config()["stages"]["local"] == {"api_gateway_stage": "api", "environment_variables": {"STAGE": "local"}}


def test_render_refuses_a_secret_name_without_account():
    env = dict(stage_env("dev"), PROVIDER_KEY_SECRET="ocean-c2d-dev/provider-key")
    with pytest.raises(ConfigurationError):
        policies.render(env, APP_NAME, "dev")


def test_the_api_may_read_the_registry_logins_secret_when_one_is_configured():
    """REGISTRY_CREDENTIALS_SECRET (image digests: the operator's registry logins) joins the
    secrets the API reads; an ARN is required, as for every secret of a deployed stage."""
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ocean-c2d-dev/registries-AbCdEf"
    env = dict(stage_env("dev"), REGISTRY_CREDENTIALS_SECRET=arn)
    api = _by_sid(policies.render(env, APP_NAME, "dev")[policies.policy_files("dev")["api"]])
    assert arn in api["Secrets"]["Resource"]
    assert arn not in _by_sid(_policy("dev", "api"))["Secrets"]["Resource"]
    with pytest.raises(ConfigurationError):
        policies.render(dict(env, REGISTRY_CREDENTIALS_SECRET="ocean-c2d-dev/registries"), APP_NAME, "dev")


def _check_job_registry_secrets(env: dict[str, str], statement: dict[str, Any], actions: list[str]) -> None:
    """The per-job registry logins: the stage's prefix, nothing else of Secrets Manager."""
    where = policies.Account.from_arn(env["PROVIDER_KEY_SECRET"])
    assert statement["Action"] == actions
    assert statement["Resource"] == [
        f"arn:aws:secretsmanager:{where.region}:{where.account}:secret:{env['RESOURCE_PREFIX']}/job-registry/*"]


@pytest.mark.parametrize("stage", DEPLOYED_STAGES)
def test_the_api_keeps_a_jobs_registry_login_under_the_stage_prefix_only(stage):
    env = stage_env(stage)
    _check_job_registry_secrets(env, _by_sid(_policy(stage, "api"))["JobRegistrySecrets"], [
        "secretsmanager:CreateSecret", "secretsmanager:DeleteSecret", "secretsmanager:PutSecretValue",
        "secretsmanager:TagResource"])


def test_the_api_reads_the_operators_registry_secrets_when_configured():
    """REGISTRY_SECRETS (the logins ECS pulls with) are read by the image digests too."""
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ocean-c2d-dev/ghcr-AbCdEf"
    env = dict(stage_env("dev"), REGISTRY_SECRETS=json.dumps({"ghcr.io": arn}))
    api = _by_sid(policies.render(env, APP_NAME, "dev")[policies.policy_files("dev")["api"]])
    assert api["Secrets"]["Resource"][-1] == arn


def test_the_jobs_execution_role_reads_the_registry_logins_only(infra_template):
    """ECS pulls a private algorithm image with the execution role: the per-job secrets under the
    stage's prefix, and the operator's when the stack names them."""
    statements = infra_template["Resources"]["BatchExecutionRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    by_sid = {s["Sid"]: s for s in _statements(statements)}
    assert by_sid["JobRegistryLogins"]["Action"] == "secretsmanager:GetSecretValue"
    assert by_sid["JobRegistryLogins"]["Resource"] == {"Fn::Sub": (
        "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${ResourcePrefix}/job-registry/*")}
    assert by_sid["OperatorRegistryLogins"]["Resource"] == {"Ref": "RegistrySecretArns"}


def test_least_privilege_check_can_fail():
    too_broad = {"Statement": [{"Effect": "Allow", "Action": ["dynamodb:GetItem"], "Resource": "*"}]}
    with pytest.raises(AssertionError):
        check_least_privilege(too_broad, policies.WILDCARD_ACTIONS)
    wildcard_action = {"Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": ["arn:aws:s3:::b/*"]}]}
    with pytest.raises(AssertionError):
        check_least_privilege(wildcard_action, frozenset())


@pytest.mark.parametrize("stage", DEPLOYED_STAGES)
def test_the_indexer_touches_asset_records_its_cursors_and_the_provider_key_only(stage):
    """tests/assets/test_assets_indexer.py checks every call of a real run against this policy."""
    env = stage_env(stage)
    prefix = env["RESOURCE_PREFIX"]
    statements = _by_sid(_policy(stage, "index"))
    assert set(statements) == {"FunctionLogs", "AssetRecords", "IndexerCursors", "ProviderKey"}
    assert statements["AssetRecords"]["Resource"] == [statements["AssetRecords"]["Resource"][0]]
    assert statements["AssetRecords"]["Resource"][0].endswith(f":table/{prefix}-assets")
    assert statements["AssetRecords"]["Action"] == ["dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem"]
    cursors = statements["IndexerCursors"]
    assert cursors["Resource"][0].endswith(f":table/{prefix}-counters") and len(cursors["Resource"]) == 1
    assert cursors["Condition"] == {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["indexer#*"]}}
    from chalicelib.assets.indexer import _key

    assert _key(1).startswith(policies.INDEXER_KEYS.rstrip("*"))
    assert statements["ProviderKey"]["Resource"] == [env["PROVIDER_KEY_SECRET"]]
