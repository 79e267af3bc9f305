"""A Chalice stage wired to its infrastructure stack: environment variables, policy files and
per-function settings in .chalice/, computed from the stack's outputs.

This is the step between `aws cloudformation deploy` (infra/resources.yaml) and `chalice deploy`,
as in Chalice's own workshop (record the stack outputs in .chalice/config.json): everything
account-specific is written here, checked against what the app will do with it (queues of the
compute environments exist (each with its network queue, filled in from the stack when the
environments file names none), their chains are served, results outlive storageExpiry, the Lambda
environment fits in 4 KB), so a mistake shows up now rather than as a 503 after the deploy.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from chalicelib.compute.environments import parse_environments
from chalicelib.config import load_settings
from chalicelib.errors import ConfigurationError
from infra import policies

REQUIRED_OUTPUTS = (
    "ResourcePrefix", "ResultsBucketName", "JobDataExpirationDays", "ProviderKeySecretArn", "JwtSecretArn",
    "RunnerRepositoryUri", "BatchJobRoleArn", "BatchExecutionRoleArn", "EventBusName", "CpuJobQueueArn",
)
QUEUE_OUTPUTS = ("CpuJobQueueArn", "GpuJobQueueArn")
# The algorithm containers' log group, which the stack lets the jobs' execution role write.
LOG_GROUP_OUTPUT = "AlgorithmLogGroup"
# The queue of network-allowed jobs beside each sealed queue (a compute environment of its own).
NETWORK_QUEUE_OUTPUTS = {"CpuJobQueueArn": "CpuNetworkJobQueueArn", "GpuJobQueueArn": "GpuNetworkJobQueueArn"}
METRICS_NAMESPACE = "OceanC2D"  # the namespace of the stack's alarms (infra/resources.yaml)
LAMBDA_ENV_LIMIT = 4096  # bytes of all keys and values together
DAY = 86400

# Memory buys CPU on Lambda: the API handler imports web3 and does ECIES/secp256k1 work; API
# Gateway gives up after 29 s, so a longer timeout would only run on for nobody.
API_HANDLER = {"lambda_memory_size": 1024, "lambda_timeout": 29}
EVENT_HANDLER = {"lambda_memory_size": 256, "lambda_timeout": 30}
EVENT_HANDLERS = ("batch_job_events", "runner_stage_events")
# Operators invoke it to register an NFT; it reads the chain and writes the assets table, as the
# API does, so it runs with the API's policy.
REGISTER_FUNCTION = "register_asset"
REGISTER_HANDLER = {"lambda_memory_size": 512, "lambda_timeout": 120}
# The scheduled reconciler (compute.reconcile), with a policy of its own.
RECONCILE_FUNCTION = "reconcile_jobs"
RECONCILE_HANDLER = {"lambda_memory_size": 256, "lambda_timeout": 120}
# The asset indexer (assets.indexer), every minute, with a policy of its own. It imports web3 and
# decrypts DDOs (memory buys CPU); a run ends within its minute (MAX_BLOCKS bounds it), and one cut
# short only leaves its cursor where it was.
INDEX_FUNCTION = "index_assets"
INDEX_HANDLER = {"lambda_memory_size": 512, "lambda_timeout": 60}


def read_stack_outputs(cloudformation: Any, stack_name: str) -> dict[str, str]:
    """The stack's outputs by key (DescribeStacks)."""
    stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    return {item["OutputKey"]: item["OutputValue"] for item in stack.get("Outputs", [])}


def deployed_url(project_dir: Path, stage: str) -> str | None:
    """The API URL `chalice deploy` recorded for the stage, if it has been deployed."""
    path = project_dir / ".chalice" / "deployed" / f"{stage}.json"
    if not path.exists():
        return None
    for resource in json.loads(path.read_text()).get("resources", []):
        if resource.get("resource_type") == "rest_api" and resource.get("rest_api_url"):
            return str(resource["rest_api_url"]).rstrip("/")
    return None


def queue_names(outputs: Mapping[str, str]) -> set[str]:
    """Names of the stack's job queues (from their ARNs, .../job-queue/<name>)."""
    return {outputs[key].rsplit("/", 1)[-1] for key in QUEUE_OUTPUTS if outputs.get(key)}


def network_queue_names(outputs: Mapping[str, str]) -> set[str]:
    """Names of the stack's queues of network-allowed jobs."""
    return {outputs[key].rsplit("/", 1)[-1] for key in NETWORK_QUEUE_OUTPUTS.values() if outputs.get(key)}


def with_network_queues(raw: Sequence[Mapping[str, Any]], outputs: Mapping[str, str]) -> list[dict[str, Any]]:
    """The environments, each on one of the stack's sealed queues given that queue's network
    queue as networkJobQueue unless it names one (or "" to run every job sealed) itself."""
    network = {outputs[sealed].rsplit("/", 1)[-1]: outputs[key].rsplit("/", 1)[-1]
               for sealed, key in NETWORK_QUEUE_OUTPUTS.items() if outputs.get(sealed) and outputs.get(key)}
    completed = []
    for item in raw:
        item = dict(item)
        queue = str(item.get("jobQueue", "")).rsplit("/", 1)[-1]
        if "networkJobQueue" not in item and queue in network:
            item["networkJobQueue"] = network[queue]
        completed.append(item)
    return completed


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _check_environments(raw: Sequence[Mapping[str, Any]], outputs: Mapping[str, str], chains: Mapping[int, str]) -> None:
    queues, network_queues = queue_names(outputs), network_queue_names(outputs)
    expiry_days = int(outputs["JobDataExpirationDays"])
    for environment in parse_environments(list(raw)).values():
        if environment.job_queue not in queues:
            raise ConfigurationError(f"compute environment {environment.id}: job queue {environment.job_queue!r} "
                                     f"is not in the stack (it has {', '.join(sorted(queues))})")
        network = environment.network_job_queue.rsplit("/", 1)[-1]
        if network and network not in network_queues:
            raise ConfigurationError(f"compute environment {environment.id}: networkJobQueue {network!r} is not one "
                                     f"of the stack's network queues ({', '.join(sorted(network_queues)) or 'none'})")
        unserved = sorted(set(environment.chain_ids) - set(chains))
        if unserved:
            raise ConfigurationError(f"compute environment {environment.id}: chains {unserved} are not in CHAINS")
        if environment.storage_expiry > expiry_days * DAY:
            raise ConfigurationError(f"compute environment {environment.id}: storageExpiry {environment.storage_expiry} s "
                                     f"outlives the bucket's {expiry_days}-day expiry (JobDataExpirationDays)")


def stage_environment(outputs: Mapping[str, str], *, stage: str, chains: str, provider_url: str,
                      environments: Sequence[Mapping[str, Any]], runner_tag: str = "latest",
                      metadata_url: str | None = None, token_max_lifetime: int = 86400,
                      admin_addresses: str | None = None) -> dict[str, str]:
    """The Lambda environment of a stage; ConfigurationError names what does not fit."""
    missing = [key for key in REQUIRED_OUTPUTS if not outputs.get(key)]
    if missing:
        raise ConfigurationError(f"the stack has no output {', '.join(missing)}: is it infra/resources.yaml?")
    if not provider_url.startswith(("https://", "http://")):
        raise ConfigurationError("the provider URL must be the public http(s) URL of the API")
    environments = with_network_queues(environments, outputs)
    env = {
        "STAGE": stage,
        "RESOURCE_PREFIX": outputs["ResourcePrefix"],
        "CHAINS": chains,
        "RESULTS_BUCKET": outputs["ResultsBucketName"],
        "PROVIDER_KEY_SECRET": outputs["ProviderKeySecretArn"],
        "JWT_SECRET_NAME": outputs["JwtSecretArn"],
        "TOKEN_MAX_LIFETIME": str(int(token_max_lifetime)),
        "PROVIDER_URL": provider_url.rstrip("/"),
        "COMPUTE_BACKEND": "batch",
        "COMPUTE_ENVIRONMENTS": _compact(environments),
        "RUNNER_IMAGE": f"{outputs['RunnerRepositoryUri']}:{runner_tag}",
        "BATCH_JOB_ROLE_ARN": outputs["BatchJobRoleArn"],
        "BATCH_EXECUTION_ROLE_ARN": outputs["BatchExecutionRoleArn"],
        "EVENT_BUS_NAME": outputs["EventBusName"],
        # the functions' metrics: what the stack's alarms and dashboard read (chalicelib/observability)
        "POWERTOOLS_SERVICE_NAME": outputs["ResourcePrefix"],
        "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
    }
    if admin_addresses:
        env["ADMIN_ADDRESSES"] = admin_addresses
    if metadata_url:
        env["METADATA_URL"] = metadata_url.rstrip("/")
    if outputs.get(LOG_GROUP_OUTPUT):  # a stack from before has none: its execution role writes the default
        env["ALGORITHM_LOG_GROUP"] = outputs[LOG_GROUP_OUTPUT]
    settings = load_settings(env)
    _check_environments(environments, outputs, settings.chains)
    size = sum(len(key.encode()) + len(value.encode()) for key, value in env.items())
    if size > LAMBDA_ENV_LIMIT:
        raise ConfigurationError(f"the Lambda environment would be {size} bytes (limit {LAMBDA_ENV_LIMIT}): "
                                 "fewer or shorter compute environment descriptions")
    return env


def function_settings(stage: str) -> dict[str, Any]:
    """Chalice stage settings besides the environment: own policies, memory and timeouts."""
    files = policies.policy_files(stage)
    events = {"iam_policy_file": files["events"], **EVENT_HANDLER}
    return {
        "autogen_policy": False,
        "iam_policy_file": files["api"],
        "lambda_functions": {"api_handler": dict(API_HANDLER), **{name: dict(events) for name in EVENT_HANDLERS},
                             REGISTER_FUNCTION: dict(REGISTER_HANDLER),
                             RECONCILE_FUNCTION: {"iam_policy_file": files["reconcile"], **RECONCILE_HANDLER},
                             INDEX_FUNCTION: {"iam_policy_file": files["index"], **INDEX_HANDLER}},
    }


def apply_stage(config: Mapping[str, Any], stage: str, env: Mapping[str, str]) -> dict[str, Any]:
    """A copy of .chalice/config.json with the stage wired; other stages and the stage's extra
    variables (ones this module does not manage) are kept."""
    updated = json.loads(json.dumps(config))
    current = updated.setdefault("stages", {}).setdefault(stage, {})
    current.setdefault("api_gateway_stage", "api")
    current.update(function_settings(stage))
    variables = current.setdefault("environment_variables", {})
    variables.pop("METADATA_URL", None)
    variables.update(env)
    return updated


def write_stage(project_dir: Path, stage: str, env: Mapping[str, str]) -> list[Path]:
    """Write .chalice/config.json and the stage's policy files; returns the paths written."""
    chalice_dir = project_dir / ".chalice"
    config_path = chalice_dir / "config.json"
    config = apply_stage(json.loads(config_path.read_text()), stage, env)
    app_name = config["app_name"]
    written = []
    for name, document in policies.render(config["stages"][stage]["environment_variables"], app_name, stage).items():
        path = chalice_dir / name
        path.write_text(json.dumps(document, indent=2) + "\n")
        written.append(path)
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    return [config_path, *written]
