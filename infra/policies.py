"""The Lambda functions' IAM policies, rendered from a stage's environment variables.

`chalice deploy` takes a policy file per stage (autogen is off: Chalice's analyzer cannot read
this app, and it would grant too much anyway). The files are rendered from the same environment
variables the functions read, so a policy names exactly the tables, bucket, secrets, queues and
roles that the stage's code is configured to use, and nothing else:

- `policy-<stage>.json`, the API handler: items of the six tables and of the three escrow
  payment tables (payments.models), Query on the jobs table's indexes (the consumers' two, and
  the operator console's active-by-update and by-environment) and the payment tables' four,
  objects under `jobs/` of the results bucket and their versions (manifest put, presigned
  downloads of the version publish wrote, deletion of every version), the two secrets, Batch job
  definitions named `c2d-algo-*`, submit and terminate on
  the stage's queues (every jobQueue and networkJobQueue), PassRole of the two Batch job roles.
- `policy-<stage>-events.json`, the two event handlers: read and update job records, update the
  environment counters, and settle a paid job's escrow lock when it ends (the payment tables'
  items and indexes, and the provider key's secret to sign the claim).
- `policy-<stage>-reconcile.json`, the reconciler (compute.reconcile): what the event handlers
  may, plus Query on the jobs table's index of active jobs, releasing orders (DeleteItem on the
  orders table) and deleting a killed start's manifest (under `jobs/`), asking Batch about jobs
  (DescribeJobs, ListJobs), finishing a start left at 1 from its record (reading its manifest's
  existence, and the API's dispatch statements: definitions, SubmitJob and TerminateJob on the
  stage's queues, PassRole of the two job roles; TerminateJob also stops the Batch job of an
  algorithm past its deadline), and what healing escrow payments needs (the events' escrow
  statements).
- Every one of the three may delete a job's registry login secret (`<RESOURCE_PREFIX>/job-registry/*`,
  compute.registry_auth: the write that ends a job deletes it); the API also creates it (with its
  job-id tag) and the reconciler lists secrets to sweep the ones left behind.
- `policy-<stage>-index.json`, the asset indexer (assets.indexer, every minute): the items of the
  assets table (read, write, forget an asset), its own cursors in the counters table and nothing
  else of it (`dynamodb:LeadingKeys` `indexer#*`: never an environment's slot counter), and the
  provider key's secret (a DDO encrypted for this provider is decrypted to see where it points).
  It reaches the chains over their RPC URLs, which need no permission.

Only `batch:DescribeJobDefinitions` and `batch:DescribeJobs` (API: the algorithm container's log
stream, for Ocean Node's computeStreamableLogs), and `batch:DescribeJobDefinitions`,
`batch:DescribeJobs`, `batch:ListJobs`, `secretsmanager:ListSecrets` (reconciler) have `"*"` as resource: AWS Batch supports no resource-level permission for them
or Secrets Manager for ListSecrets (WILDCARD_ACTIONS, RECONCILE_WILDCARD_ACTIONS; tests/infra checks them against the IAM reference).
The log streams themselves are read only in ALGORITHM_LOG_GROUP, under the `c2d` stream prefix.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from chalicelib.compute.batch_naming import DEFINITION_PREFIX
from chalicelib.compute.environments import job_queues, load_environments
from chalicelib.config import Settings, load_settings
from chalicelib.errors import ConfigurationError
from chalicelib.payments import models as payment_models

# Actions that AWS authorizes only on "*" and that the functions need.
WILDCARD_ACTIONS = frozenset({"batch:DescribeJobDefinitions", "batch:DescribeJobs"})
RECONCILE_WILDCARD_ACTIONS = frozenset({"batch:DescribeJobDefinitions", "batch:DescribeJobs", "batch:ListJobs",
                                        "secretsmanager:ListSecrets"})
ACTIVE_JOBS_INDEX = "active-by-update"  # models.ActiveJobs
API_JOB_INDEXES = ("by-owner", "by-owner-document", ACTIVE_JOBS_INDEX, "by-environment")
INDEXER_KEYS = "indexer#*"  # models.IndexerCursor's keys in the counters table (assets.indexer._key)


@dataclass(frozen=True)
class Account:
    """Where the stage lives, read from a secret's ARN (arn:<partition>:secretsmanager:<region>:<account>:...)."""

    partition: str
    region: str
    account: str

    @classmethod
    def from_arn(cls, arn: str) -> "Account":
        parts = arn.split(":", 6)
        if len(parts) < 7 or parts[0] != "arn" or not (parts[1] and parts[3] and parts[4]):
            raise ConfigurationError("PROVIDER_KEY_SECRET must be the secret's full ARN (from the stack outputs)")
        return cls(partition=parts[1], region=parts[3], account=parts[4])

    def arn(self, service: str, resource: str) -> str:
        return f"arn:{self.partition}:{service}:{self.region}:{self.account}:{resource}"


def function_prefix(app_name: str, stage: str) -> str:
    """Chalice names the functions <app>-<stage>[-<handler>]; `chalice package` stacks named
    <app>-<stage> give theirs the same prefix."""
    return f"{app_name}-{stage}"


def _statement(sid: str, actions: list[str], resources: list[str] | str, **condition: Any) -> dict[str, Any]:
    statement: dict[str, Any] = {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


def _document(statements: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": statements}


def _logs(where: Account, app_name: str, stage: str) -> dict[str, Any]:
    group = where.arn("logs", f"log-group:/aws/lambda/{function_prefix(app_name, stage)}*")
    return _statement("FunctionLogs", ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"], [group])


def _table(where: Account, name: str) -> str:
    return where.arn("dynamodb", f"table/{name}")


def _tables(settings: Settings) -> list[str]:
    return [settings.nonces_table, settings.revoked_tokens_table, settings.jobs_table,
            settings.orders_table, settings.assets_table, settings.counters_table, settings.audit_table]


def _payment_tables(env: Mapping[str, str]) -> list[str]:
    """The escrow payments' tables (chain accounts, transactions, payments), by model order."""
    names = payment_models.table_names(env)
    return [names[model] for model in payment_models.PAYMENT_MODELS]


CONSOLE_PAYMENT_INDEXES = frozenset({"by-chain"})  # read by the operator's console (the API) only


def _payment_indexes(where: Account, env: Mapping[str, str], console: bool = True) -> list[str]:
    names = payment_models.table_names(env)
    return [f"{_table(where, names[model])}/index/{index.Meta.index_name}"
            for model in payment_models.PAYMENT_MODELS for index in model._indexes.values()
            if console or index.Meta.index_name not in CONSOLE_PAYMENT_INDEXES]


def _escrow(where: Account, env: Mapping[str, str], secret: str) -> list[dict[str, Any]]:
    """What settling and healing escrow payments needs outside the API: the payment tables'
    items (the sender's nonce store takes TransactWriteItems: authorised per item action), their
    indexes, and the provider key to sign claims and cancels."""
    return [
        _statement("EscrowPayments", ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
                                      "dynamodb:ConditionCheckItem"],
                   [_table(where, name) for name in _payment_tables(env)]),
        _statement("EscrowPaymentIndexes", ["dynamodb:Query"], _payment_indexes(where, env, console=False)),
        _statement("ProviderKey", ["secretsmanager:GetSecretValue"], [secret]),
    ]


def _job_registry_secrets(where: Account, settings: Settings, actions: list[str], sid: str) -> dict[str, Any]:
    """`actions` on the per-job registry login secrets of the stage (compute.registry_auth)."""
    return _statement(sid, actions, [where.arn("secretsmanager", f"secret:{settings.registry_secret_prefix}*")])


def _secret_arns(env: Mapping[str, str]) -> list[str]:
    """The provider key's and the JWT secret's ARNs, then, if configured, the registry logins'
    (REGISTRY_CREDENTIALS_SECRET and REGISTRY_SECRETS' ARNs, compute.image_digests)."""
    arns = []
    for name in ("PROVIDER_KEY_SECRET", "JWT_SECRET_NAME", "REGISTRY_CREDENTIALS_SECRET"):
        value = env.get(name, "").strip()
        if name == "REGISTRY_CREDENTIALS_SECRET" and not value:
            continue
        if not value.startswith("arn:"):
            raise ConfigurationError(f"{name} must be the secret's ARN in a deployed stage")
        arns.append(value)
    return arns + sorted(set(load_settings(env).registry_secrets.values()))


def _dispatch(where: Account, env: Mapping[str, str], settings: Settings) -> list[dict[str, Any]]:
    """What dispatching a job to Batch needs (the API's starts, the reconciler's finished ones):
    the algorithm definitions, SubmitJob on the stage's queues (sealed and network-allowed),
    TerminateJob (a job stopped while it was submitted), PassRole of the two job roles."""
    roles = [settings.batch_job_role_arn, settings.batch_execution_role_arn]
    if not all(roles):
        raise ConfigurationError("BATCH_JOB_ROLE_ARN and BATCH_EXECUTION_ROLE_ARN are required with COMPUTE_BACKEND=batch")
    queues = sorted(job_queues(load_environments(env).values()))
    definitions = where.arn("batch", f"job-definition/{DEFINITION_PREFIX}*")
    jobs = where.arn("batch", "job/*")
    return [
        _statement("FindJobDefinitions", ["batch:DescribeJobDefinitions"], "*"),
        _statement("RegisterJobDefinitions", ["batch:RegisterJobDefinition"], [definitions]),
        _statement("SubmitJobs", ["batch:SubmitJob"],
                   [where.arn("batch", f"job-queue/{queue}") for queue in queues] + [definitions, jobs]),
        _statement("TagOnCreate", ["batch:TagResource"], [definitions, jobs]),
        _statement("StopJobs", ["batch:TerminateJob"], [jobs]),
        _statement("PassJobRoles", ["iam:PassRole"], [str(role) for role in roles]),
    ]


def api_policy(env: Mapping[str, str], app_name: str, stage: str) -> dict[str, Any]:
    """The API handler's policy for the stage configured by `env`."""
    settings = load_settings(env)
    secrets = _secret_arns(env)
    where = Account.from_arn(secrets[0])
    tables = [_table(where, name) for name in _tables(settings) + _payment_tables(env)]
    bucket = f"arn:{where.partition}:s3:::{settings.bucket}"
    dispatch = _dispatch(where, env, settings)
    return _document([
        _logs(where, app_name, stage),
        _statement("Items", ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
                             "dynamodb:BatchGetItem", "dynamodb:ConditionCheckItem"], tables),
        # by-owner(-document): consumers' listings; active-by-update and by-environment: the operator's console
        _statement("JobIndexes", ["dynamodb:Query"],
                   [f"{_table(where, settings.jobs_table)}/index/{index}" for index in API_JOB_INDEXES]),
        _statement("EscrowPaymentIndexes", ["dynamodb:Query"], _payment_indexes(where, env)),
        # a publisher's audit log: one partition (their address and dataset) a page
        _statement("AuditLog", ["dynamodb:Query"], [_table(where, settings.audit_table)]),
        _statement("JobObjects", ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:DeleteObject",
                                  "s3:DeleteObjectVersion"], [f"{bucket}/jobs/*"]),
        _statement("ListJobObjects", ["s3:ListBucket", "s3:ListBucketVersions"], [bucket],
                   StringLike={"s3:prefix": ["jobs/*"]}),
        _statement("Secrets", ["secretsmanager:GetSecretValue"], secrets),
        _job_registry_secrets(where, settings, ["secretsmanager:CreateSecret", "secretsmanager:PutSecretValue",
                                                "secretsmanager:TagResource", "secretsmanager:DeleteSecret"],
                              "JobRegistrySecrets"),
        dispatch[0],
        _statement("FindAlgorithmLogStreams", ["batch:DescribeJobs"], "*"),
        _statement("ReadAlgorithmLogs", ["logs:GetLogEvents"],
                   [where.arn("logs", f"log-group:{settings.algorithm_log_group}:log-stream:c2d/*")]),
        *dispatch[1:],
    ])


def events_policy(env: Mapping[str, str], app_name: str, stage: str) -> dict[str, Any]:
    """The two event handlers' policy: job records and the environment counters, nothing else."""
    settings = load_settings(env)
    secret = _secret_arns(env)[0]
    where = Account.from_arn(secret)
    return _document([
        _logs(where, app_name, stage),
        _statement("JobRecords", ["dynamodb:GetItem", "dynamodb:UpdateItem"], [_table(where, settings.jobs_table)]),
        _statement("EnvironmentCounters", ["dynamodb:UpdateItem"], [_table(where, settings.counters_table)]),
        _job_registry_secrets(where, settings, ["secretsmanager:DeleteSecret"], "DeleteJobRegistrySecrets"),
        *_escrow(where, env, secret),
    ])


def reconcile_policy(env: Mapping[str, str], app_name: str, stage: str) -> dict[str, Any]:
    """The reconciler's policy: the event handlers' writes, the active jobs index, releasing the
    orders and the manifest of a start killed before dispatch, Batch's job descriptions, and
    dispatching a start finished from its record."""
    settings = load_settings(env)
    secret = _secret_arns(env)[0]
    where = Account.from_arn(secret)
    jobs = _table(where, settings.jobs_table)
    bucket = f"arn:{where.partition}:s3:::{settings.bucket}"
    return _document([
        _logs(where, app_name, stage),
        _statement("JobRecords", ["dynamodb:GetItem", "dynamodb:UpdateItem"], [jobs]),
        _statement("ActiveJobs", ["dynamodb:Query"], [f"{jobs}/index/{ACTIVE_JOBS_INDEX}"]),
        _statement("EnvironmentCounters", ["dynamodb:UpdateItem"], [_table(where, settings.counters_table)]),
        _statement("ReleaseOrders", ["dynamodb:DeleteItem"], [_table(where, settings.orders_table)]),
        _statement("DeleteManifests", ["s3:DeleteObject", "s3:DeleteObjectVersion"], [f"{bucket}/jobs/*"]),
        _statement("FindManifests", ["s3:GetObject"], [f"{bucket}/jobs/*/manifest.json"]),
        _statement("ListJobObjects", ["s3:ListBucket", "s3:ListBucketVersions"], [bucket],
                   StringLike={"s3:prefix": ["jobs/*"]}),
        _statement("DescribeJobs", ["batch:DescribeJobs", "batch:ListJobs"], "*"),
        _job_registry_secrets(where, settings, ["secretsmanager:DeleteSecret"], "DeleteJobRegistrySecrets"),
        _statement("FindJobRegistrySecrets", ["secretsmanager:ListSecrets"], "*"),
        *_dispatch(where, env, settings),  # StopJobs: also an algorithm past its deadline (compute.deadlines)
        *_escrow(where, env, secret),
    ])


def index_policy(env: Mapping[str, str], app_name: str, stage: str) -> dict[str, Any]:
    """The asset indexer's policy: asset records, its cursors, the provider key; nothing of jobs,
    orders, payments, Batch or the results bucket."""
    settings = load_settings(env)
    secret = _secret_arns(env)[0]
    where = Account.from_arn(secret)
    return _document([
        _logs(where, app_name, stage),
        _statement("AssetRecords", ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"],
                   [_table(where, settings.assets_table)]),
        _statement("IndexerCursors", ["dynamodb:GetItem", "dynamodb:PutItem"], [_table(where, settings.counters_table)],
                   **{"ForAllValues:StringLike": {"dynamodb:LeadingKeys": [INDEXER_KEYS]}}),
        _statement("ProviderKey", ["secretsmanager:GetSecretValue"], [secret]),
    ])


def policy_files(stage: str) -> dict[str, str]:
    """File names under .chalice/ of each policy of a stage."""
    return {"api": f"policy-{stage}.json", "events": f"policy-{stage}-events.json",
            "reconcile": f"policy-{stage}-reconcile.json", "index": f"policy-{stage}-index.json"}


def render(env: Mapping[str, str], app_name: str, stage: str) -> dict[str, dict[str, Any]]:
    """{file name: policy document} for a stage."""
    names = policy_files(stage)
    return {names["api"]: api_policy(env, app_name, stage), names["events"]: events_policy(env, app_name, stage),
            names["reconcile"]: reconcile_policy(env, app_name, stage), names["index"]: index_policy(env, app_name, stage)}
