"""The AWS Batch dispatcher (DESIGN §4): one job definition per algorithm container and network
policy, one Batch job per compute job.

Batch job definitions fix the image and the container user, so each distinct algorithm container
(image pinned by digest when the DDO gives a checksum, plus its entrypoint) gets one definition per
network policy, registered once and reused; the resources and the timeouts of the job are passed
at submit.

A job is one multi-container ECS task (`ecsProperties`) sharing a task-scoped volume at /data:

    configure (runner, root, essential=false)
      └─SUCCESS─> algorithm (consumer's image, UID 4000 or 4001, essential=false)
                     └─COMPLETE─> publish (runner, root, essential=true)

Why this shape (AWS Batch user guide "Networking modes for AWS Batch jobs"; ECS task IAM roles;
the ECS agent's dependency handling):

- The algorithm depends on configure SUCCESS (issue 18, point 3): its image's ENTRYPOINT runs
  before our command and may ignore it, so after a failed configure the container must not start
  at all. The ECS agent (agent/engine/dependencygraph/graph.go, verifyContainerOrderingStatusResolvable)
  then marks it stopped without pulling or starting it (exit 143, "CannotStartContainerError:
  dependency graph: ... did not exit successfully"), and publish, which depends on it, "will
  never start": configure therefore publishes its own log when it fails (runner/configure.py).
  The algorithm's command (`algorithm_command`, run by the static busybox configure copied to
  /data/.c2d/busybox) still runs the entrypoint only if configure wrote /data/.c2d/ready.
- maxJobDuration is enforced inside the algorithm container (exit 124 when it runs out) for an
  image that runs our command, and from outside for one that does not: the job stays STARTING
  until publish starts (a task's known status is the lowest of its containers'), so Batch's
  attempt timeout, counted from RUNNING, bounds publish only; the reconciler terminates a job
  whose algorithm outlives its deadline (compute.deadlines). Batch's attempt timeout is the
  algorithm's time plus STAGE_MARGIN_SECONDS for publish's uploads.
- ECS-on-EC2 Batch jobs are host-networked and ECS gives the task role to every container of the
  task, whatever the image's ENTRYPOINT does with our command. So the algorithm runs as a fixed
  non-root UID (C1: 4000 sealed, 4001 when every dataset allows network access) that the Batch
  instances' network rules (infra/network_rules.py) keep away from the metadata and credential
  endpoints, and that the instances' OCI runtime (infra/oci_runtime.py) leaves no capability (so no
  setuid or file-capped binary of the image makes it root) and, sealed, a network namespace of its
  own. The credential variables are unset before the entrypoint runs as
  defence in depth only: the rules are what holds.
- Host networking also means every job on an instance shares one network namespace, where an
  abstract Unix socket (or a loopback port) joins any two processes whatever their UID: iptables
  never sees a Unix socket. So a job whose datasets all allow network access is submitted to its
  environment's `networkJobQueue`, whose compute environment runs network-allowed jobs only, and
  a sealed job never shares an instance with one. An environment without that queue runs the job
  sealed (UID 4000 on its normal queue): Ocean's allowNetworkAccess lets an algorithm use the
  network, it does not promise it one; configure's log (consumer-visible) says access was not
  granted here (NETWORK_NOT_GRANTED, passed as C2D_NOTICE).
- The runner containers get C2D_REGION (the API's region: Batch sets no AWS_REGION for ECS agents
  before 1.104.0) and ALGORITHM_UID (who must own /data/outputs and algorithm.log).
- A private image (compute.registry_auth) is pulled with `repositoryCredentials`: the ECS agent
  reads the login from the Secrets Manager secret the definition names, with the execution role
  (which may read the stage's registry secrets only). The consumer's per-job secret makes a
  definition of that job alone; the operator's (REGISTRY_SECRETS, by registry host) one per
  container as any other. The login never reaches a container's environment.
- The algorithm's stdout goes to CloudWatch through the awslogs driver (group ALGORITHM_LOG_GROUP,
  stream prefix c2d); the driver runs in the Docker daemon, not in the container.

What the shape is built from lives by what it decides: `compute.batch_naming` (names, tags and
stop reasons events are recognised by), `compute.job_placement` (queue, UID and time limits),
`compute.algorithm_script` (what runs as the algorithm container's PID 1) and
`compute.container_rules.AlgorithmContainer` (the image reference Batch pulls).

Per-job values (JOB_ID, MANIFEST_URI, DIDS, C2D_MAX_SECONDS, ...) go in `ecsPropertiesOverride`;
the manifest itself, which holds decrypted URLs, never reaches Batch: only its S3 URI does.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
from typing import Any, Mapping, Protocol, Sequence

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.compute.algorithm_script import DATA_DIR, algorithm_command
from chalicelib.compute.batch_naming import (
    ALGORITHM,
    CONFIGURE,
    DEFINITION_PREFIX,
    ENVIRONMENT_TAG,
    JOB_ID_PATTERN,
    JOB_ID_TAG,
    LOG_STREAM_PREFIX,
    PUBLISH,
    job_name,
    stop_reason,
)
from chalicelib.compute.container_rules import AlgorithmContainer
from chalicelib.compute.environments import Environment
from chalicelib.config import image_location
from chalicelib.compute.job_placement import (
    NETWORK_NOT_GRANTED,
    algorithm_uid,
    attempt_seconds,
    batch_timeout_seconds,
    job_queue,
    network_granted,
)
from chalicelib.errors import ServiceUnavailable
from chalicelib.job_key import ENVIRONMENT_VARIABLE as JOB_KEY_VARIABLE
from chalicelib.job_key import SealError, check_job_key

log = logging.getLogger(__name__)

# Bump when the layout below changes, so new definitions are registered instead of reusing old ones.
LAYOUT_VERSION = "4"
DATA_VOLUME = "data"
ALGO_PATH = "/data/transformations/algorithm"
ALGORITHM_LOG = "/data/logs/algorithm.log"
DEFAULT_LOG_GROUP = "/aws/batch/job"
ATTEMPTS = 3

UNAVAILABLE = "The compute backend is unavailable, try again later"


def _env(values: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "value": str(value)} for name, value in sorted(values.items())]


def _resources(vcpus: float, memory_mib: int, gpus: int = 0) -> list[dict[str, str]]:
    vcpu_text = str(int(vcpus)) if float(vcpus).is_integer() else str(vcpus)
    resources = [{"type": "VCPU", "value": vcpu_text}, {"type": "MEMORY", "value": str(int(memory_mib))}]
    if gpus:
        resources.append({"type": "GPU", "value": str(int(gpus))})
    return resources


def _check_key(runner_key: str) -> None:
    try:
        check_job_key(runner_key)
    except SealError as error:
        raise ValueError(f"the runner key is not a job key: {error}") from None


class Dispatcher(Protocol):
    """What the job service needs from a compute backend (Batch here, processes locally).

    `allow_network` (C8) is True only when every dataset of the job allows network access; a
    backend must then still keep the algorithm from credentials and metadata endpoints.
    `runner_key` (chalicelib.job_key) goes to the configure and publish stages only, never to
    the algorithm's. `registry_secret`: the ARN of the consumer's login to the image's registry
    for this job (compute.registry_auth), "" for none."""

    def submit(self, job_id: str, environment: Environment, manifest_uri: str,
               container: AlgorithmContainer, timeout: int | None = None, *,
               dids: Sequence[str] = (), algorithm_did: str = "", allow_network: bool = False,
               runner_key: str, registry_secret: str = "") -> str: ...

    def terminate(self, batch_job_id: str, reason: str = "Job stopped") -> None: ...


class BatchDispatcher:
    """Registers job definitions, submits and terminates jobs through a boto3 Batch client.

    `region` (C5) defaults to the Batch client's, i.e. the API's own region."""

    def __init__(self, batch_client: Any, runner_image: str, results_bucket: str, *,
                 job_role_arn: str | None = None, execution_role_arn: str | None = None,
                 event_bus: str = "default", runner_environment: Mapping[str, str] | None = None,
                 runner_vcpus: float = 1, runner_memory_mib: int = 512,
                 platform: str = "EC2", region: str | None = None,
                 algorithm_log_group: str = DEFAULT_LOG_GROUP,
                 registry_secrets: Mapping[str, str] | None = None) -> None:
        self._client = batch_client
        self._runner_image = runner_image
        self._bucket = results_bucket
        self._job_role = job_role_arn
        self._execution_role = execution_role_arn
        self._event_bus = event_bus
        self._runner_env = dict(runner_environment or {})
        self._runner_vcpus = runner_vcpus
        self._runner_memory = runner_memory_mib
        self._platform = platform
        self._region = region or getattr(getattr(batch_client, "meta", None), "region_name", None) or ""
        self._log_group = algorithm_log_group or DEFAULT_LOG_GROUP
        self._registry_secrets = dict(registry_secrets or {})  # registry host -> the operator's secret ARN
        self._definitions: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- job definitions ---------------------------------------------------------------------

    def credentials(self, container: AlgorithmContainer, registry_secret: str = "") -> str:
        """The secret the algorithm's image is pulled with: the job's own, else the operator's
        for the image's registry, else "" (anonymous)."""
        return registry_secret or self._registry_secrets.get(image_location(container.reference()).split("/", 1)[0], "")

    def definition_name(self, container: AlgorithmContainer, allow_network: bool = False,
                        registry_secret: str = "") -> str:
        """A stable name from everything the definition holds, so a changed runner image, role
        or network policy (the container `user` cannot be overridden at submit) yields a new
        definition instead of silently reusing a stale one."""
        credentials = self.credentials(container, registry_secret)
        identity = json.dumps([LAYOUT_VERSION, container.reference(), container.entrypoint,
                               self._runner_image, self._bucket, self._event_bus, self._job_role,
                               self._execution_role, sorted(self._runner_env.items()),
                               self._runner_vcpus, self._runner_memory, self._platform, self._region,
                               self._log_group, algorithm_uid(allow_network)] + ([credentials] if credentials else []))
        return DEFINITION_PREFIX + hashlib.sha256(identity.encode()).hexdigest()[:40]

    def definition_request(self, container: AlgorithmContainer, allow_network: bool = False,
                           registry_secret: str = "") -> dict[str, Any]:
        """The RegisterJobDefinition parameters for one algorithm container and network policy
        (and the job's own registry login, if any)."""
        uid = algorithm_uid(allow_network)
        mount = [{"sourceVolume": DATA_VOLUME, "containerPath": DATA_DIR, "readOnly": False}]
        runner_env = _env({**self._runner_env, "DATA_DIR": DATA_DIR, "RESULTS_BUCKET": self._bucket,
                           "RUNNER_EVENTS": "eventbridge", "EVENT_BUS_NAME": self._event_bus,
                           "ALGORITHM_UID": str(uid), "C2D_REGION": self._region})
        runner_resources = _resources(self._runner_vcpus, self._runner_memory)
        algorithm_logs = {"awslogs-group": self._log_group, "awslogs-stream-prefix": LOG_STREAM_PREFIX}
        if self._region:
            algorithm_logs["awslogs-region"] = self._region
        task: dict[str, Any] = {
            "containers": [
                {"name": CONFIGURE, "image": self._runner_image, "command": [CONFIGURE],
                 "essential": False, "environment": runner_env, "mountPoints": mount,
                 "resourceRequirements": runner_resources},
                {"name": ALGORITHM, "image": container.reference(),
                 "command": algorithm_command(container.entrypoint), "essential": False,
                 "user": f"{uid}:{uid}",
                 "dependsOn": [{"containerName": CONFIGURE, "condition": "SUCCESS"}],
                 "environment": _env({"ALGO": ALGO_PATH}), "mountPoints": mount,
                 "logConfiguration": {"logDriver": "awslogs", "options": algorithm_logs},
                 "resourceRequirements": _resources(1, 2048)},
                {"name": PUBLISH, "image": self._runner_image, "command": [PUBLISH],
                 "essential": True,
                 "dependsOn": [{"containerName": ALGORITHM, "condition": "COMPLETE"}],
                 "environment": runner_env, "mountPoints": mount,
                 "resourceRequirements": runner_resources},
            ],
            "volumes": [{"name": DATA_VOLUME}],
        }
        credentials = self.credentials(container, registry_secret)
        if credentials:
            task["containers"][1]["repositoryCredentials"] = {"credentialsParameter": credentials}
        if self._job_role:
            task["taskRoleArn"] = self._job_role
        if self._execution_role:
            task["executionRoleArn"] = self._execution_role
        return {
            "jobDefinitionName": self.definition_name(container, allow_network, registry_secret),
            "type": "container",
            "platformCapabilities": [self._platform],
            "ecsProperties": {"taskProperties": [task]},
            # Retry only when the instance went away (spot reclaim), never on a failed stage.
            "retryStrategy": {"attempts": ATTEMPTS, "evaluateOnExit": [
                {"onStatusReason": "Host EC2*", "action": "RETRY"},
                {"onReason": "*", "action": "EXIT"},
            ]},
            "propagateTags": True,
            "tags": {"c2d:component": "algorithm-job-definition"},
        }

    def job_definition(self, container: AlgorithmContainer, allow_network: bool = False,
                       registry_secret: str = "") -> str:
        """The ARN of the definition for this container and policy: from memory, else the newest
        ACTIVE revision Batch has under its name, else a newly registered one. A job's own
        registry login makes a definition of that job only, never kept in memory."""
        name = self.definition_name(container, allow_network, registry_secret)
        with self._lock:
            cached = self._definitions.get(name)
            if cached:
                return cached
            found = self._call("describe_job_definitions", jobDefinitionName=name, status="ACTIVE")
            active = [d for d in found.get("jobDefinitions", []) if d.get("status", "ACTIVE") == "ACTIVE"]
            if active:
                arn = max(active, key=lambda d: int(d.get("revision", 0)))["jobDefinitionArn"]
            else:
                request = self.definition_request(container, allow_network, registry_secret)
                arn = self._call("register_job_definition", **request)["jobDefinitionArn"]
                log.info("registered job definition %s for %s", name, container.reference())
            if not registry_secret:
                self._definitions[name] = arn
            return arn

    # -- jobs --------------------------------------------------------------------------------

    def submit_request(self, job_id: str, environment: Environment, manifest_uri: str,
                       definition_arn: str, timeout: int | None = None, *,
                       dids: Sequence[str] = (), algorithm_did: str = "",
                       allow_network: bool = False, runner_key: str) -> dict[str, Any]:
        """The SubmitJob parameters: the queue of the job's network policy, the environment's
        resources and the algorithm's time on the algorithm container, per-job variables on each
        container (configure's C2D_NOTICE when the datasets allowed a network the environment
        does not grant), Batch's attempt timeout (the algorithm's time plus the stages' margin),
        the job id as a tag and in the name. `definition_arn` must be the definition of
        `network_granted(environment, allow_network)`.

        The job's key (C2D_JOB_KEY) is in the configure and publish containers' overrides only:
        SubmitJob overrides `environment` per container (TaskContainerOverrides; `secrets` cannot
        be overridden at submit), and the algorithm container, whose image is hostile, never
        gets it."""
        if not JOB_ID_PATTERN.fullmatch(job_id):
            raise ValueError("job id must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}")
        if not manifest_uri.startswith("s3://") or any(c.isspace() for c in manifest_uri):
            raise ValueError("the manifest must be given as an s3:// URI")
        algorithm_resources = _resources(environment.n_cpu, int(environment.ram_gb * 1024), environment.n_gpu)
        seconds = attempt_seconds(environment, timeout)
        _check_key(runner_key)
        configure_env = {"JOB_ID": job_id, "MANIFEST_URI": manifest_uri, JOB_KEY_VARIABLE: runner_key}
        if allow_network and not network_granted(environment, allow_network):
            configure_env["C2D_NOTICE"] = NETWORK_NOT_GRANTED
        return {
            "jobName": job_name(job_id),
            "jobQueue": job_queue(environment, allow_network),
            "jobDefinition": definition_arn,
            "ecsPropertiesOverride": {"taskProperties": [{"containers": [
                {"name": CONFIGURE, "environment": _env(configure_env)},
                {"name": ALGORITHM, "resourceRequirements": algorithm_resources,
                 "environment": _env({"DIDS": json.dumps(list(dict.fromkeys(dids))),
                                      "TRANSFORMATION_DID": algorithm_did, "C2D_MAX_SECONDS": str(seconds)})},
                {"name": PUBLISH, "environment": _env({"JOB_ID": job_id, JOB_KEY_VARIABLE: runner_key})},
            ]}]},
            "timeout": {"attemptDurationSeconds": batch_timeout_seconds(seconds)},
            "propagateTags": True,
            "tags": {JOB_ID_TAG: job_id, ENVIRONMENT_TAG: environment.id},
        }

    def submit(self, job_id: str, environment: Environment, manifest_uri: str,
               container: AlgorithmContainer, timeout: int | None = None, *,
               dids: Sequence[str] = (), algorithm_did: str = "", allow_network: bool = False,
               runner_key: str, registry_secret: str = "") -> str:
        """Submit the job; returns the Batch job id. ServiceUnavailable if Batch fails.

        A network-allowed job goes to the environment's network queue as UID 4001; without one it
        runs sealed (UID 4000, normal queue) and its configure log says so."""
        granted = network_granted(environment, allow_network)
        definition = self.job_definition(container, granted, registry_secret)
        request = self.submit_request(job_id, environment, manifest_uri, definition, timeout,
                                      dids=dids, algorithm_did=algorithm_did, allow_network=allow_network,
                                      runner_key=runner_key)
        batch_job_id = self._call("submit_job", **request)["jobId"]
        log.info("job %s submitted to %s as Batch job %s (network %s)", job_id, request["jobQueue"], batch_job_id,
                 "allowed" if granted else "not granted by the environment" if allow_network else "blocked")
        return batch_job_id

    def terminate(self, batch_job_id: str, reason: str = "Job stopped") -> None:
        """Stop the Batch job whatever its state; the resulting FAILED event maps to 7."""
        self._call("terminate_job", jobId=batch_job_id, reason=stop_reason(reason))

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        """One Batch call; any failure becomes ServiceUnavailable with the error code logged
        (never the request, which holds the manifest URI and the job's variables)."""
        try:
            return getattr(self._client, operation)(**params)
        except ClientError as exc:
            problem = exc.response.get("Error", {}).get("Code", "ClientError")
        except BotoCoreError as exc:
            problem = type(exc).__name__
        log.warning("Batch %s failed: %s", operation, problem)
        raise ServiceUnavailable(UNAVAILABLE)
