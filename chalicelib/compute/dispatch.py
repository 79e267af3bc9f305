"""The AWS Batch dispatcher (DESIGN §4): one job definition per algorithm container and network
policy, one Batch job per compute job.

Batch job definitions fix the image and the container user, so each distinct algorithm container
(image pinned by digest when the DDO gives a checksum, plus its entrypoint) gets one definition per
network policy, registered once and reused; the resources and the timeouts of the job are passed
at submit.

A job is one multi-container ECS task (`ecsProperties`) sharing a task-scoped volume at /data:

    configure (runner, root, essential=false)
      └─COMPLETE─> algorithm (consumer's image, UID 4000 or 4001, essential=false)
                     └─COMPLETE─> publish (runner, root, essential=true)

Why this shape (AWS Batch user guide "Networking modes for AWS Batch jobs"; ECS task IAM roles;
the ECS agent's dependency handling):

- The algorithm depends on configure COMPLETE, not SUCCESS: with SUCCESS a failed configure makes
  the ECS agent force-stop the algorithm (exit 143, "CannotStartContainerError: dependency graph")
  and then a publish that depends on it "will never start", so no log would be published. The
  algorithm container therefore always starts; its command (`algorithm_command`, run by the static
  busybox configure copied to /data/.c2d/busybox) runs the entrypoint only if configure wrote
  /data/.c2d/ready, else it says so and exits 0.
- maxJobDuration is enforced inside the algorithm container (exit 124 when it runs out), because
  Batch's own timeout stops the whole task, publish included. Batch's attempt timeout is the
  algorithm's time plus STAGE_MARGIN_SECONDS for configure's downloads and publish's uploads.
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
- The algorithm's stdout goes to CloudWatch through the awslogs driver (group ALGORITHM_LOG_GROUP,
  stream prefix c2d); the driver runs in the Docker daemon, not in the container.

Per-job values (JOB_ID, MANIFEST_URI, DIDS, C2D_MAX_SECONDS, ...) go in `ecsPropertiesOverride`;
the manifest itself, which holds decrypted URLs, never reaches Batch: only its S3 URI does.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import shlex
import threading
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.compute.environments import Environment
from chalicelib.errors import ServiceUnavailable, ValidationError

log = logging.getLogger(__name__)

# Bump when the layout below changes, so new definitions are registered instead of reusing old ones.
LAYOUT_VERSION = "3"
CONFIGURE, ALGORITHM, PUBLISH = "configure", "algorithm", "publish"
DATA_VOLUME = "data"
DATA_DIR = "/data"
ALGO_PATH = "/data/transformations/algorithm"
ALGORITHM_LOG = "/data/logs/algorithm.log"
SEALED_UID, NETWORK_UID = 4000, 4001  # C1; infra/network_rules.py holds the rules for both
DEFAULT_LOG_GROUP = "/aws/batch/job"
LOG_STREAM_PREFIX = "c2d"
TIMED_OUT = 124  # the algorithm's exit code when it ran out of maxJobDuration (as coreutils timeout)
# Added to the algorithm's time for Batch's attempt timeout: configure's downloads before it and
# publish's uploads after it (Batch's clock starts at RUNNING, i.e. with configure).
STAGE_MARGIN_SECONDS = 1800
KILL_GRACE_SECONDS = 10  # between SIGTERM and SIGKILL of an algorithm that ran out of time
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
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "ECS_CONTAINER_METADATA_URI",
    "ECS_CONTAINER_METADATA_URI_V4",
)

_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,254}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # what the runner accepts
MAX_ENTRYPOINT = 4096
UNAVAILABLE = "The compute backend is unavailable, try again later"
NETWORK_NOT_GRANTED = ("network access was not granted on this environment: every dataset allows it, but this "
                       "environment runs no network-allowed jobs, so the algorithm runs without network")


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
    """The algorithm's time: what the consumer asked for, never above maxJobDuration."""
    limit = max(MIN_ATTEMPT_SECONDS, int(environment.max_job_duration))
    if requested is None or requested <= 0:
        return limit
    return max(MIN_ATTEMPT_SECONDS, min(int(requested), limit))


def batch_timeout_seconds(algorithm_seconds: int) -> int:
    """Batch's attempt timeout: the algorithm's time plus the margin for configure and publish, so
    Batch stops a job only when a runner stage hangs, never before publish had its turn."""
    return int(algorithm_seconds) + STAGE_MARGIN_SECONDS


def algorithm_uid(allow_network: bool) -> int:
    return NETWORK_UID if allow_network else SEALED_UID


def network_granted(environment: Environment, allow_network: bool) -> bool:
    """Whether a job that the datasets allow the network (`allow_network`, C8) gets it on Batch:
    only on an environment with a network queue, whose instances run no sealed job."""
    return allow_network and environment.offers_network


def job_queue(environment: Environment, allow_network: bool) -> str:
    """The queue of a job: the network queue for a network-allowed job, else the sealed one."""
    return environment.network_job_queue if network_granted(environment, allow_network) else environment.job_queue


def _env(values: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "value": str(value)} for name, value in sorted(values.items())]


def _resources(vcpus: float, memory_mib: int, gpus: int = 0) -> list[dict[str, str]]:
    vcpu_text = str(int(vcpus)) if float(vcpus).is_integer() else str(vcpus)
    resources = [{"type": "VCPU", "value": vcpu_text}, {"type": "MEMORY", "value": str(int(memory_mib))}]
    if gpus:
        resources.append({"type": "GPU", "value": str(int(gpus))})
    return resources


_SCRIPT = """\
B={busybox}
LOG={log}
say() {{ echo "c2d: $*"; echo "c2d: $*" 2>/dev/null >>"$LOG"; }}
if [ ! -f {ready} ]; then
  say "the algorithm was not run: the job's inputs were not provisioned"
  exit 0
fi
unset {unset}
ENTRY={entrypoint}
LIMIT=${{C2D_MAX_SECONDS:-}}
case $LIMIT in ''|*[!0-9]*) LIMIT={default_limit};; esac
# stop SIGNAL: as PID 1 (the container) every process but this shell and the log's tee, wherever
# the algorithm moved them (setsid, double fork); else (not in a PID namespace of its own) the
# process groups of this shell's children.
stop() {{
  sig=$1
  for p in /proc/[0-9]*; do
    p=${{p#/proc/}}
    case $p in "$$"|"$job") continue;; esac
    read -r stat 2>/dev/null <"/proc/$p/stat" || continue
    set -- ${{stat##*") "}}
    [ "$2" = "$job" ] && continue
    if [ "$$" = 1 ]; then kill -"$sig" "$p" 2>/dev/null
    elif [ "$2" = "$$" ]; then kill -"$sig" -"$p" 2>/dev/null; kill -"$sig" "$p" 2>/dev/null
    fi
  done
}}
# The clock: /proc/uptime and `read -t` on a FIFO only this shell holds (made before the algorithm
# starts, its name removed at once), so keeping the time needs no child the algorithm could kill,
# stop (SIGSTOP) or keep from forking; a child's end (CHLD) wakes the read early.
clock() {{ read -r now _ </proc/uptime; now=${{now%.*}}${{now#*.}}; }}  # hundredths of a second
# Without the FIFO (its name taken by an image ENTRYPOINT that then exec'd us) the clock spins on
# /dev/null rather than wait on a child the algorithm could stop.
FIFO={fifo}-$$-$RANDOM$RANDOM
if "$B" mkfifo -m 600 "$FIFO" 2>/dev/null && exec 3<>"$FIFO" && [ -p /proc/self/fd/3 ]; then
  tick() {{ read -r -t 1 _ <&3; }}
else
  tick() {{ read -r -t 1 _ </dev/null; }}
fi
"$B" rm -f "$FIFO"
# wait_until DEADLINE (on the clock): 0 with $code set once the algorithm's output ended (all its writers closed;
# what is left of it is stopped), 1 at DEADLINE.
wait_until() {{
  while kill -0 "$job" 2>/dev/null; do
    clock
    [ "$now" -ge "$1" ] && return 1
    tick
  done
  stop KILL
  wait "$job"
  code=$?
  return 0
}}
trap 'woke=1' CHLD
set -o pipefail
clock
started=$now
"$B" setsid "$B" sh -c "$ENTRY" </dev/null 3>&- 2>&1 | {{ "$B" tee -a "$LOG"; true; }} 3>&- &
job=$!
if ! wait_until $((started + LIMIT * 100)); then
  stop TERM
  [ "$$" = 1 ] && kill -CONT -1  # what the algorithm stopped (SIGSTOP) takes its TERM, the tee drains
  if ! wait_until $((started + (LIMIT + {grace}) * 100)); then
    stop KILL; stop KILL; stop KILL
    if ! wait_until $((started + (LIMIT + {grace} + 5) * 100)) && [ "$$" = 1 ]; then kill -KILL -1; wait "$job"; fi
  fi
  say "the algorithm ran out of time (maxJobDuration $LIMIT s) and was stopped"
  code={timed_out}
fi
stop KILL
exit "$code"
"""


def algorithm_script(entrypoint: str, data_dir: str = DATA_DIR, default_limit: int = 3600) -> str:
    """The busybox sh script of the algorithm container (C3).

    Without /data/.c2d/ready (configure failed) it runs nothing and exits 0. Otherwise it runs the
    entrypoint (`sh -c`, so `$ALGO` etc. expand) in its own session without the credential
    variables, output appended to logs/algorithm.log and copied to stdout (CloudWatch), and exits
    with the entrypoint's code; at C2D_MAX_SECONDS (the job's maxJobDuration) it sends SIGTERM,
    KILL_GRACE_SECONDS later SIGKILL, and exits 124. Only busybox applets are used, so an image
    without a shell (distroless) works.

    Every process of the container has the algorithm's UID, so the algorithm can kill or stop
    any of them but PID 1 (the kernel drops signals sent to a namespace's init from inside it):
    the script itself keeps the time with builtins only (/proc/uptime, `read -t` on a FIFO it
    alone holds), so there is no watcher to kill or SIGSTOP and no fork to starve, and, as PID 1,
    stops every process of the namespace but the log's tee, wherever the algorithm moved it
    (setsid, double fork), and whatever is left when the algorithm's output ends. Run as anything but PID 1
    (tests; an image ENTRYPOINT that does not exec its arguments) it stops the process groups of
    its children only; Batch's attempt timeout is then the bound.

    configure installs busybox execute-only (0711) and the script starts by exec'ing it again
    as the algorithm's UID: a process that execs a file it cannot read is not dumpable, so the
    algorithm can neither ptrace PID 1 (freeze it, and with it the time limit) nor read its
    /proc files (its environment holds the task role's credential URI)."""
    c2d = f"{data_dir}/.c2d"
    busybox = shlex.quote(f"{c2d}/busybox")
    script = _SCRIPT.format(busybox=busybox, log=shlex.quote(f"{data_dir}/logs/algorithm.log"),
                            ready=shlex.quote(f"{c2d}/ready"), unset=" ".join(CREDENTIAL_VARIABLES),
                            fifo=shlex.quote(f"{data_dir}/outputs/.c2d-clock"),
                            entrypoint=shlex.quote(entrypoint), default_limit=int(default_limit),
                            grace=KILL_GRACE_SECONDS, timed_out=TIMED_OUT)
    # The container runtime may still hold capabilities when it execs PID 1, so the kernel may
    # find the execute-only busybox readable and leave PID 1 dumpable; exec'd again by the
    # algorithm's UID itself, it is not: no ptrace of PID 1, its /proc files root's.
    return f"exec {busybox} sh -c {shlex.quote(script)} c2d-algorithm"


def algorithm_command(entrypoint: str, data_dir: str = DATA_DIR) -> list[str]:
    """The algorithm container's command (C3): the static busybox configure placed in /data/.c2d
    runs `algorithm_script`. An image ENTRYPOINT, if any, still prefixes it (Batch cannot override
    it): whatever it does, it runs as the algorithm's UID under the instance's network rules."""
    return [f"{data_dir}/.c2d/busybox", "sh", "-c", algorithm_script(entrypoint, data_dir)]


class Dispatcher(Protocol):
    """What the job service needs from a compute backend (Batch here, processes locally).

    `allow_network` (C8) is True only when every dataset of the job allows network access; a
    backend must then still keep the algorithm from credentials and metadata endpoints."""

    def submit(self, job_id: str, environment: Environment, manifest_uri: str,
               container: AlgorithmContainer, timeout: int | None = None, *,
               dids: Sequence[str] = (), algorithm_did: str = "", allow_network: bool = False) -> str: ...

    def terminate(self, batch_job_id: str, reason: str = "Job stopped") -> None: ...


class BatchDispatcher:
    """Registers job definitions, submits and terminates jobs through a boto3 Batch client.

    `region` (C5) defaults to the Batch client's, i.e. the API's own region."""

    def __init__(self, batch_client: Any, runner_image: str, results_bucket: str, *,
                 job_role_arn: str | None = None, execution_role_arn: str | None = None,
                 event_bus: str = "default", runner_environment: Mapping[str, str] | None = None,
                 runner_vcpus: float = 1, runner_memory_mib: int = 512,
                 platform: str = "EC2", region: str | None = None,
                 algorithm_log_group: str = DEFAULT_LOG_GROUP) -> None:
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
        self._definitions: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- job definitions ---------------------------------------------------------------------

    def definition_name(self, container: AlgorithmContainer, allow_network: bool = False) -> str:
        """A stable name from everything the definition holds, so a changed runner image, role
        or network policy (the container `user` cannot be overridden at submit) yields a new
        definition instead of silently reusing a stale one."""
        identity = json.dumps([LAYOUT_VERSION, container.reference(), container.entrypoint,
                               self._runner_image, self._bucket, self._event_bus, self._job_role,
                               self._execution_role, sorted(self._runner_env.items()),
                               self._runner_vcpus, self._runner_memory, self._platform, self._region,
                               self._log_group, algorithm_uid(allow_network)])
        return DEFINITION_PREFIX + hashlib.sha256(identity.encode()).hexdigest()[:40]

    def definition_request(self, container: AlgorithmContainer, allow_network: bool = False) -> dict[str, Any]:
        """The RegisterJobDefinition parameters for one algorithm container and network policy."""
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
                 "dependsOn": [{"containerName": CONFIGURE, "condition": "COMPLETE"}],
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
        if self._job_role:
            task["taskRoleArn"] = self._job_role
        if self._execution_role:
            task["executionRoleArn"] = self._execution_role
        return {
            "jobDefinitionName": self.definition_name(container, allow_network),
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

    def job_definition(self, container: AlgorithmContainer, allow_network: bool = False) -> str:
        """The ARN of the definition for this container and policy: from memory, else the newest
        ACTIVE revision Batch has under its name, else a newly registered one."""
        name = self.definition_name(container, allow_network)
        with self._lock:
            cached = self._definitions.get(name)
            if cached:
                return cached
            found = self._call("describe_job_definitions", jobDefinitionName=name, status="ACTIVE")
            active = [d for d in found.get("jobDefinitions", []) if d.get("status", "ACTIVE") == "ACTIVE"]
            if active:
                arn = max(active, key=lambda d: int(d.get("revision", 0)))["jobDefinitionArn"]
            else:
                request = self.definition_request(container, allow_network)
                arn = self._call("register_job_definition", **request)["jobDefinitionArn"]
                log.info("registered job definition %s for %s", name, container.reference())
            self._definitions[name] = arn
            return arn

    # -- jobs --------------------------------------------------------------------------------

    def submit_request(self, job_id: str, environment: Environment, manifest_uri: str,
                       definition_arn: str, timeout: int | None = None, *,
                       dids: Sequence[str] = (), algorithm_did: str = "",
                       allow_network: bool = False) -> dict[str, Any]:
        """The SubmitJob parameters: the queue of the job's network policy, the environment's
        resources and the algorithm's time on the algorithm container, per-job variables on each
        container (configure's C2D_NOTICE when the datasets allowed a network the environment
        does not grant), Batch's attempt timeout (the algorithm's time plus the stages' margin),
        the job id as a tag and in the name. `definition_arn` must be the definition of
        `network_granted(environment, allow_network)`."""
        if not JOB_ID_PATTERN.fullmatch(job_id):
            raise ValueError("job id must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}")
        if not manifest_uri.startswith("s3://") or any(c.isspace() for c in manifest_uri):
            raise ValueError("the manifest must be given as an s3:// URI")
        algorithm_resources = _resources(environment.n_cpu, int(environment.ram_gb * 1024), environment.n_gpu)
        seconds = attempt_seconds(environment, timeout)
        configure_env = {"JOB_ID": job_id, "MANIFEST_URI": manifest_uri}
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
                {"name": PUBLISH, "environment": _env({"JOB_ID": job_id})},
            ]}]},
            "timeout": {"attemptDurationSeconds": batch_timeout_seconds(seconds)},
            "propagateTags": True,
            "tags": {JOB_ID_TAG: job_id, ENVIRONMENT_TAG: environment.id},
        }

    def submit(self, job_id: str, environment: Environment, manifest_uri: str,
               container: AlgorithmContainer, timeout: int | None = None, *,
               dids: Sequence[str] = (), algorithm_did: str = "", allow_network: bool = False) -> str:
        """Submit the job; returns the Batch job id. ServiceUnavailable if Batch fails.

        A network-allowed job goes to the environment's network queue as UID 4001; without one it
        runs sealed (UID 4000, normal queue) and its configure log says so."""
        granted = network_granted(environment, allow_network)
        definition = self.job_definition(container, granted)
        request = self.submit_request(job_id, environment, manifest_uri, definition, timeout,
                                      dids=dids, algorithm_did=algorithm_did, allow_network=allow_network)
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
