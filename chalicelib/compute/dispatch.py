"""The AWS Batch dispatcher (DESIGN §4): one job definition per algorithm container, one Batch job
per compute job.

Batch job definitions fix the image, so each distinct algorithm container (image pinned by digest
when the DDO gives a checksum, plus its entrypoint) gets its own definition, registered once and
reused; the resources and the timeout of the chosen environment are passed at submit.

A job is one multi-container ECS task (`ecsProperties`) sharing a task-scoped volume at /data:

    configure (runner, essential=false)
      └─SUCCESS─> algorithm (consumer's image, essential=false)
                    └─COMPLETE─> publish (runner, essential=true)

The algorithm runs only if configure succeeded; publish runs whether the algorithm succeeded or
not (its log is a result too) and, being the one essential container, ends the task. Per-job
values (JOB_ID, MANIFEST_URI, DIDS, ...) go in `ecsPropertiesOverride`; the manifest itself, which
holds decrypted URLs, never reaches Batch: only its S3 URI does.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.compute.environments import Environment
from chalicelib.errors import ServiceUnavailable, ValidationError

log = logging.getLogger(__name__)

# Bump when the layout below changes, so new definitions are registered instead of reusing old ones.
LAYOUT_VERSION = "1"
CONFIGURE, ALGORITHM, PUBLISH = "configure", "algorithm", "publish"
DATA_VOLUME = "data"
DATA_DIR = "/data"
ALGO_PATH = "/data/transformations/algorithm"
ALGORITHM_LOG = "/data/logs/algorithm.log"
DEFINITION_PREFIX = "c2d-algo-"
JOB_NAME_PREFIX = "c2d-"
JOB_ID_TAG = "c2d:jobId"
ENVIRONMENT_TAG = "c2d:environment"
# TerminateJob's reason becomes the job's statusReason; the prefix tells the event handler that
# the owner stopped the job (status 7) rather than it failing.
STOP_REASON_PREFIX = "c2d-stop: "
MIN_ATTEMPT_SECONDS = 60  # Batch refuses shorter timeouts
ATTEMPTS = 3
# ECS hands the task role's credentials to every container of the task; the algorithm is
# untrusted code, so its shell starts without the variables that locate them.
CREDENTIAL_VARIABLES = (
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
)

_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,254}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # what the runner accepts
MAX_ENTRYPOINT = 4096
UNAVAILABLE = "The compute backend is unavailable, try again later"


@dataclass(frozen=True)
class AlgorithmContainer:
    """The DDO's `algorithm.container`: image, tag, checksum (sha256:...), entrypoint."""

    image: str
    entrypoint: str
    tag: str = ""
    checksum: str = ""

    @classmethod
    def from_metadata(cls, container: Mapping[str, Any] | None) -> "AlgorithmContainer":
        """Build and validate from DDO metadata; ValidationError names what is wrong."""
        if not isinstance(container, Mapping):
            raise ValidationError.field("algorithm", "the algorithm has no container")
        values = {k: container.get(k) or "" for k in ("image", "entrypoint", "tag", "checksum")}
        if not all(isinstance(v, str) for v in values.values()):
            raise ValidationError.field("algorithm", "container image, tag, checksum and entrypoint must be text")
        made = cls(image=values["image"].strip(), entrypoint=values["entrypoint"].strip(),
                   tag=values["tag"].strip(), checksum=values["checksum"].strip().lower())
        made.reference()
        return made

    def reference(self) -> str:
        """The image as Batch pulls it: `image@sha256:...` when a checksum pins it, else
        `image:tag` (`latest` when neither the image nor the DDO names a tag)."""
        if not self.entrypoint or len(self.entrypoint) > MAX_ENTRYPOINT or "\x00" in self.entrypoint:
            raise ValidationError.field("algorithm", "container entrypoint is missing or malformed")
        name, _, digest = self.image.partition("@")
        if not _IMAGE.fullmatch(name) or "//" in name or name.endswith(("/", ":")):
            raise ValidationError.field("algorithm", "container image is missing or malformed")
        checksum = (self.checksum or digest).lower()
        if checksum:
            if not _DIGEST.fullmatch(checksum) or (digest and digest.lower() != checksum):
                raise ValidationError.field("algorithm", "container checksum must be sha256:<64 hex digits>")
            reference = f"{_without_tag(name)}@{checksum}"
        elif _has_tag(name):
            reference = name
        else:
            tag = self.tag or "latest"
            if not _TAG.fullmatch(tag):
                raise ValidationError.field("algorithm", "container tag is malformed")
            reference = f"{name}:{tag}"
        if len(reference) > 255:
            raise ValidationError.field("algorithm", "container image reference is too long")
        return reference


def _has_tag(name: str) -> bool:
    return ":" in name.rsplit("/", 1)[-1]


def _without_tag(name: str) -> str:
    return name.rsplit(":", 1)[0] if _has_tag(name) else name


def job_name(job_id: str) -> str:
    """Batch job names allow [A-Za-z0-9_-]; the exact id travels in the c2d:jobId tag."""
    return (JOB_NAME_PREFIX + re.sub(r"[^A-Za-z0-9_-]", "_", job_id))[:128]


def stop_reason(reason: str) -> str:
    return (STOP_REASON_PREFIX + (reason or "Job stopped"))[:255]


def is_stop_reason(status_reason: object) -> bool:
    return isinstance(status_reason, str) and status_reason.startswith(STOP_REASON_PREFIX)


def attempt_seconds(environment: Environment, requested: int | None) -> int:
    """The attempt timeout: what the consumer asked for, never above maxJobDuration."""
    limit = max(MIN_ATTEMPT_SECONDS, int(environment.max_job_duration))
    if requested is None or requested <= 0:
        return limit
    return max(MIN_ATTEMPT_SECONDS, min(int(requested), limit))


def _env(values: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "value": str(value)} for name, value in sorted(values.items())]


def _resources(vcpus: float, memory_mib: int, gpus: int = 0) -> list[dict[str, str]]:
    vcpu_text = str(int(vcpus)) if float(vcpus).is_integer() else str(vcpus)
    resources = [{"type": "VCPU", "value": vcpu_text}, {"type": "MEMORY", "value": str(int(memory_mib))}]
    if gpus:
        resources.append({"type": "GPU", "value": str(int(gpus))})
    return resources


def algorithm_command(entrypoint: str, log_path: str = ALGORITHM_LOG) -> list[str]:
    """Run the entrypoint through sh (it names `$ALGO`), its output appended to algorithm.log,
    without the task-role credential variables, and keep its exit code as the container's.

    `env -u` execs sh, so even /proc/1/environ of the container no longer holds the variables.
    The image's own ENTRYPOINT, if it has one, would prefix this command (Batch cannot override
    it), so algorithm images must not set one, as with Ocean's C2D."""
    unset = [part for name in CREDENTIAL_VARIABLES for part in ("-u", name)]
    script = f"exec >>{log_path} 2>&1\n{entrypoint}"
    return ["env", *unset, "sh", "-c", script]


class Dispatcher(Protocol):
    """What the job service needs from a compute backend (Batch here, processes locally)."""

    def submit(self, job_id: str, environment: Environment, manifest_uri: str,
               container: AlgorithmContainer, timeout: int | None = None, *,
               dids: Sequence[str] = (), algorithm_did: str = "") -> str: ...

    def terminate(self, batch_job_id: str, reason: str = "Job stopped") -> None: ...


class BatchDispatcher:
    """Registers job definitions, submits and terminates jobs through a boto3 Batch client."""

    def __init__(self, batch_client: Any, runner_image: str, results_bucket: str, *,
                 job_role_arn: str | None = None, execution_role_arn: str | None = None,
                 event_bus: str = "default", runner_environment: Mapping[str, str] | None = None,
                 runner_vcpus: float = 1, runner_memory_mib: int = 512,
                 platform: str = "EC2") -> None:
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
        self._definitions: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- job definitions ---------------------------------------------------------------------

    def definition_name(self, container: AlgorithmContainer) -> str:
        """A stable name from everything the definition holds, so a changed runner image or
        role yields a new definition instead of silently reusing a stale one."""
        identity = json.dumps([LAYOUT_VERSION, container.reference(), container.entrypoint,
                               self._runner_image, self._bucket, self._event_bus, self._job_role,
                               self._execution_role, sorted(self._runner_env.items()),
                               self._runner_vcpus, self._runner_memory, self._platform])
        return DEFINITION_PREFIX + hashlib.sha256(identity.encode()).hexdigest()[:40]

    def definition_request(self, container: AlgorithmContainer) -> dict[str, Any]:
        """The RegisterJobDefinition parameters for one algorithm container."""
        mount = [{"sourceVolume": DATA_VOLUME, "containerPath": DATA_DIR, "readOnly": False}]
        runner_env = _env({**self._runner_env, "DATA_DIR": DATA_DIR, "RESULTS_BUCKET": self._bucket,
                           "RUNNER_EVENTS": "eventbridge", "EVENT_BUS_NAME": self._event_bus})
        runner_resources = _resources(self._runner_vcpus, self._runner_memory)
        task: dict[str, Any] = {
            "containers": [
                {"name": CONFIGURE, "image": self._runner_image, "command": [CONFIGURE],
                 "essential": False, "environment": runner_env, "mountPoints": mount,
                 "resourceRequirements": runner_resources},
                {"name": ALGORITHM, "image": container.reference(),
                 "command": algorithm_command(container.entrypoint), "essential": False,
                 "dependsOn": [{"containerName": CONFIGURE, "condition": "SUCCESS"}],
                 "environment": _env({"ALGO": ALGO_PATH}), "mountPoints": mount,
                 "resourceRequirements": _resources(1, 2048)},
                {"name": PUBLISH, "image": self._runner_image, "command": [PUBLISH],
                 "essential": True,
                 "dependsOn": [{"containerName": ALGORITHM, "condition": "COMPLETE"}],
                 "environment": runner_env, "mountPoints": mount,
                 "resourceRequirements": runner_resources},
            ],
            "volumes": [{"name": DATA_VOLUME}],
        }
        if self._job_role:
            task["taskRoleArn"] = self._job_role
        if self._execution_role:
            task["executionRoleArn"] = self._execution_role
        return {
            "jobDefinitionName": self.definition_name(container),
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

    def job_definition(self, container: AlgorithmContainer) -> str:
        """The ARN of the definition for this container: from memory, else the newest ACTIVE
        revision Batch has under its name, else a newly registered one."""
        name = self.definition_name(container)
        with self._lock:
            cached = self._definitions.get(name)
            if cached:
                return cached
            found = self._call("describe_job_definitions", jobDefinitionName=name, status="ACTIVE")
            active = [d for d in found.get("jobDefinitions", []) if d.get("status", "ACTIVE") == "ACTIVE"]
            if active:
                arn = max(active, key=lambda d: int(d.get("revision", 0)))["jobDefinitionArn"]
            else:
                arn = self._call("register_job_definition", **self.definition_request(container))["jobDefinitionArn"]
                log.info("registered job definition %s for %s", name, container.reference())
            self._definitions[name] = arn
            return arn

    # -- jobs --------------------------------------------------------------------------------

    def submit_request(self, job_id: str, environment: Environment, manifest_uri: str,
                       definition_arn: str, timeout: int | None = None, *,
                       dids: Sequence[str] = (), algorithm_did: str = "") -> dict[str, Any]:
        """The SubmitJob parameters: the environment's resources on the algorithm container,
        per-job variables on each container, the job id as a tag and in the name."""
        if not JOB_ID_PATTERN.fullmatch(job_id):
            raise ValueError("job id must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}")
        if not manifest_uri.startswith("s3://") or any(c.isspace() for c in manifest_uri):
            raise ValueError("the manifest must be given as an s3:// URI")
        algorithm_resources = _resources(environment.n_cpu, int(environment.ram_gb * 1024), environment.n_gpu)
        return {
            "jobName": job_name(job_id),
            "jobQueue": environment.job_queue,
            "jobDefinition": definition_arn,
            "ecsPropertiesOverride": {"taskProperties": [{"containers": [
                {"name": CONFIGURE, "environment": _env({"JOB_ID": job_id, "MANIFEST_URI": manifest_uri})},
                {"name": ALGORITHM, "resourceRequirements": algorithm_resources,
                 "environment": _env({"DIDS": json.dumps(list(dict.fromkeys(dids))),
                                      "TRANSFORMATION_DID": algorithm_did})},
                {"name": PUBLISH, "environment": _env({"JOB_ID": job_id})},
            ]}]},
            "timeout": {"attemptDurationSeconds": attempt_seconds(environment, timeout)},
            "propagateTags": True,
            "tags": {JOB_ID_TAG: job_id, ENVIRONMENT_TAG: environment.id},
        }

    def submit(self, job_id: str, environment: Environment, manifest_uri: str,
               container: AlgorithmContainer, timeout: int | None = None, *,
               dids: Sequence[str] = (), algorithm_did: str = "") -> str:
        """Submit the job; returns the Batch job id. ServiceUnavailable if Batch fails."""
        definition = self.job_definition(container)
        request = self.submit_request(job_id, environment, manifest_uri, definition, timeout,
                                      dids=dids, algorithm_did=algorithm_did)
        batch_job_id = self._call("submit_job", **request)["jobId"]
        log.info("job %s submitted to %s as Batch job %s", job_id, environment.job_queue, batch_job_id)
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
