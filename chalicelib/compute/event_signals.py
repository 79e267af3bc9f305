"""What an event says about a job, independent of its record: the signals of AWS Batch's
"Batch Job State Change" events and of the runner's stage events (docs/internals.md), and the
Batch-shaped event a backend without Batch reports with.

Parsing is strict because events are hostile input: anything that is not one of our events (a
queue this provider does not use, no job id we could have made, a status the runner does not
send) is `Malformed`, and the handler ignores it. A runner's results are kept only as entries
under jobs/<jobId>/outputs/ (type output) and jobs/<jobId>/logs/ (the log types) in our bucket,
whatever the event says (never the manifest or results.json), cut to fit a DynamoDB item
(resultsTruncated; the full list is in resultsKey = results.json, which is also where to look if
a 70 job has no results because the runner's event was lost).
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from chalicelib.compute import status as st
from chalicelib.compute.batch_naming import ALGORITHM, JOB_ID_PATTERN, JOB_ID_TAG, JOB_NAME_PREFIX, algorithm_log_stream
from chalicelib.job_key import detail_signed

log = logging.getLogger(__name__)

BATCH_SOURCE = "aws.batch"
BATCH_DETAIL_TYPE = "Batch Job State Change"
RUNNER_SOURCE = "ocean.c2d.runner"  # runner/events.py SOURCE (the runner is not in the Lambda zip)
RUNNER_DETAIL_TYPE = "Compute Job Stage Change"
BATCH_PROGRESS = {"SUBMITTED": st.WARMING_UP, "PENDING": st.WARMING_UP, "RUNNABLE": st.WARMING_UP,
                  "STARTING": st.STARTED, "RUNNING": st.RUNNING}
BATCH_FINAL = frozenset({"SUCCEEDED", "FAILED"})
RUNNER_PROGRESS = frozenset({20, 30, 40, 50, 60})
RUNNER_FAILURES = frozenset({31, 32, 62})
RESULT_TYPES = frozenset({"output", "algorithmLog", "configurationLog", "publishLog"})
# Container reasons of a container that never ran: its image or its start failed (the error
# names of amazon-ecs-agent's agent/dockerclient/dockerapi/errors.go, agent/engine/errors.go and
# ecs-agent/api/errors/errors.go; "CannotPull" covers CannotPullContainerError, the manifest's
# CannotPullImageManifestError, CannotPullECRContainerError and CannotPullContainerAuthError).
START_FAILURES = ("CannotPull", "CannotStartContainer", "CannotCreateContainer", "CannotInspectContainer",
                  "ResourceInitializationError", "TaskStoppedBeforePullBeginError", "ContainerNetworkingError",
                  "HostConfigError", "InvalidVolumeError", "CannotCreateVolume")
TASK_FAILED_TO_START = "Task failed to start"  # Batch's statusReason when the ECS task never got going
FORCE_STOPPED = 143  # SIGTERM: what the ECS agent gives a container it stops because of its dependencies
MAX_REASON = 255
MAX_RESULTS = 10_000
MAX_RESULTS_BYTES = 200_000  # of DynamoDB's 400 KB per item; the runner sends at most ~150 KB
MAX_RUN_SECONDS = 30 * 86400  # an algorithm run longer than this is no report of ours
LOG_STREAM = re.compile(r"[A-Za-z0-9._/-]{1,512}")
VERSION_ID = re.compile(r"[A-Za-z0-9._+/=-]{1,1024}")  # S3 version ids: URL-safe text, "null" never kept
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class Malformed(Exception):
    """The event is not one we can read; the message says why (never the event itself)."""


# Batch's reason for a container the kernel killed at its memory limit (exit 137):
# "OutOfMemoryError: Container killed due to memory usage"; Ocean Node's OOMKilled.
OOM_REASON = "OutOfMemoryError"


@dataclass(frozen=True)
class ContainerExit:
    exit_code: int | None = None
    reason: str = ""

    @property
    def oom_killed(self) -> bool:
        return self.reason.startswith(OOM_REASON)

    @property
    def failed_to_start(self) -> bool:
        """It never ran: the agent could not pull, create or start it. Whatever exit code goes
        with such a reason (none, the 143 the agent gives a container it stops before it ran,
        Docker's 126-128 for a start the runtime refused: exec format error, a file-capped
        binary refused), no process of its image ran; only an inspect error may come after a run."""
        if not self.reason.startswith(START_FAILURES):
            return False
        return self.exit_code in (None, FORCE_STOPPED) or not self.reason.startswith("CannotInspectContainer")

    @property
    def by_dependency(self) -> bool:
        """The agent stopped it because a container it depends on failed or will never start."""
        return "dependency graph" in self.reason

    @property
    def failed(self) -> bool:
        return self.exit_code is not None and self.exit_code != 0


@dataclass(frozen=True)
class BatchChange:
    job_id: str
    batch_job_id: str
    batch_status: str
    status_reason: str = ""
    containers: Mapping[str, ContainerExit] = field(default_factory=dict)
    stopped_at: int | None = None  # Unix seconds
    started_at: int | None = None  # Unix seconds: Batch's startedAt (RUNNING: publish started)
    attempt: int = 1  # the attempt this event is about (1-based)
    log_stream: str | None = None  # the algorithm container's CloudWatch stream, from the task it names

    @property
    def final(self) -> bool:
        return self.batch_status in BATCH_FINAL


@dataclass(frozen=True)
class RunnerStage:
    job_id: str
    status: int
    reason: str = ""
    results: list[dict[str, Any]] | None = None
    results_key: str | None = None
    results_truncated: bool | None = None
    attempt: int | None = None  # C6; absent locally
    at: int | None = None  # the stage's clock when it sent this (30: the algorithm may start; 60: it has ended)
    algorithm_run: dict[str, Any] | None = None  # 60: the algorithm container's times, as the ECS agent recorded them
    detail: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)  # as received: its signature is checked against the record's key

    def signed_by(self, key: str | None) -> bool:
        """Whether the job's key signed this event (chalicelib.job_key). A record without a key
        (made before jobs had one) accepts its runner's unsigned events, as it always did."""
        return key is None or detail_signed(key, self.detail)


Signal = BatchChange | RunnerStage


def parse(event: Any, queues: Iterable[str] = (), results_bucket: str | None = None) -> Signal:
    """The signal an EventBridge event carries; Malformed if it is not one of ours."""
    if not isinstance(event, Mapping):
        raise Malformed("event is not an object")
    source, detail_type, detail = event.get("source"), event.get("detail-type"), event.get("detail")
    if not isinstance(detail, Mapping):
        raise Malformed("event has no detail")
    if source == BATCH_SOURCE and detail_type == BATCH_DETAIL_TYPE:
        return parse_batch(detail, frozenset(queues))
    if source == RUNNER_SOURCE and detail_type == RUNNER_DETAIL_TYPE:
        return parse_runner(detail, results_bucket)
    raise Malformed(f"unexpected source/detail-type {str(source)[:40]!r}/{str(detail_type)[:40]!r}")


def parse_batch(detail: Mapping[str, Any], queues: frozenset[str]) -> BatchChange:
    batch_status = detail.get("status")
    if batch_status not in BATCH_PROGRESS and batch_status not in BATCH_FINAL:
        raise Malformed("unknown Batch status")
    queue = detail.get("jobQueue")
    if not isinstance(queue, str) or not queue:
        raise Malformed("Batch event has no jobQueue")
    if queues and queue not in queues and queue.rsplit("/", 1)[-1] not in queues:
        raise Malformed("Batch event for a queue this provider does not use")
    batch_job_id = detail.get("jobId")
    if not isinstance(batch_job_id, str) or not batch_job_id:
        raise Malformed("Batch event has no jobId")
    stopped_at, started_at = detail.get("stoppedAt"), detail.get("startedAt")
    attempts = detail.get("attempts")
    finished = len(attempts) if isinstance(attempts, list) else 0
    return BatchChange(
        job_id=_batch_job_owner(detail),
        batch_job_id=batch_job_id,
        batch_status=batch_status,
        status_reason=_text(detail.get("statusReason")),
        containers=_container_exits(detail),
        stopped_at=int(stopped_at) // 1000 if _is_int(stopped_at) and stopped_at > 0 else None,
        started_at=int(started_at) // 1000 if _is_int(started_at) and started_at > 0 else None,
        # `attempts` lists the attempts that ended: a final event's last one is its own
        attempt=max(1, finished if batch_status in BATCH_FINAL else finished + 1),
        log_stream=algorithm_stream(detail) if batch_status in ("STARTING", "RUNNING") else None,
    )


def algorithm_stream(detail: Mapping[str, Any]) -> str | None:
    """The current attempt's algorithm stream: the container's logStreamName when Batch gives
    it, else derived from the task's ARN (ecsProperties.taskProperties[].taskArn), which a
    STARTING event already carries while the algorithm runs (the job reaches RUNNING only when
    publish starts)."""
    ecs = detail.get("ecsProperties")
    tasks = ecs.get("taskProperties") if isinstance(ecs, Mapping) else None
    for task in tasks if isinstance(tasks, list) else []:
        if not isinstance(task, Mapping):
            continue
        for container in task.get("containers") if isinstance(task.get("containers"), list) else []:
            if (isinstance(container, Mapping) and container.get("name") == ALGORITHM
                    and isinstance(container.get("logStreamName"), str)
                    and LOG_STREAM.fullmatch(container["logStreamName"])):
                return container["logStreamName"]
        stream = algorithm_log_stream(task.get("taskArn"))
        if stream:
            return stream
    return None


def _batch_job_owner(detail: Mapping[str, Any]) -> str:
    """Our job id: the c2d:jobId tag, else the job name `c2d-<jobId>`."""
    tags = detail.get("tags")
    tagged = tags.get(JOB_ID_TAG) if isinstance(tags, Mapping) else None
    if _is_job_id(tagged):
        return tagged
    name = detail.get("jobName")
    if isinstance(name, str) and name.startswith(JOB_NAME_PREFIX) and _is_job_id(name[len(JOB_NAME_PREFIX):]):
        return name[len(JOB_NAME_PREFIX):]
    raise Malformed("Batch event names no compute job")


def _container_exits(detail: Mapping[str, Any]) -> dict[str, ContainerExit]:
    """Exit code and reason per container name: the job's ecsProperties (current attempt),
    completed from the last attempt's task; a single-container job appears under ""."""
    exits: dict[str, ContainerExit] = {}
    sources: list[Any] = []
    ecs = detail.get("ecsProperties")
    if isinstance(ecs, Mapping):
        sources.append(ecs.get("taskProperties"))
    attempts = detail.get("attempts")
    last = attempts[-1] if isinstance(attempts, list) and attempts and isinstance(attempts[-1], Mapping) else {}
    sources.append(last.get("taskProperties"))
    for tasks in sources:
        for task in tasks if isinstance(tasks, list) else []:
            containers = task.get("containers") if isinstance(task, Mapping) else None
            for container in containers if isinstance(containers, list) else []:
                if not isinstance(container, Mapping) or not isinstance(container.get("name"), str):
                    continue
                found = ContainerExit(
                    exit_code=container["exitCode"] if _is_int(container.get("exitCode")) else None,
                    reason=_text(container.get("reason")))
                known = exits.get(container["name"])
                if known is None or (known.exit_code is None and not known.reason):
                    exits[container["name"]] = found
    if not exits:
        single = detail.get("container") if isinstance(detail.get("container"), Mapping) else last.get("container")
        if isinstance(single, Mapping) and (_is_int(single.get("exitCode")) or single.get("reason")):
            exits[""] = ContainerExit(single["exitCode"] if _is_int(single.get("exitCode")) else None,
                                      _text(single.get("reason")))
    return exits


def parse_runner(detail: Mapping[str, Any], results_bucket: str | None) -> RunnerStage:
    job_id, code = detail.get("jobId"), detail.get("status")
    if not _is_job_id(job_id):
        raise Malformed("runner event has no valid jobId")
    if not _is_int(code) or code not in RUNNER_PROGRESS | RUNNER_FAILURES | {st.COMPLETED}:
        raise Malformed("runner event has a status the runner does not send")
    attempt = detail.get("attempt")
    if attempt is not None and not (_is_int(attempt) and 1 <= attempt <= 10_000):
        raise Malformed("runner event has an invalid attempt")
    at = detail.get("at")
    stage = RunnerStage(job_id=job_id, status=code, reason=_text(detail.get("reason")), attempt=attempt,
                        at=at if _is_int(at) and at > 0 else None, algorithm_run=_algorithm_run(detail.get("algorithm")),
                        detail=detail)
    if code not in RUNNER_FAILURES | {st.COMPLETED} or "results" not in detail:
        return stage
    bucket = detail.get("bucket")
    if results_bucket and bucket is not None and bucket != results_bucket:
        log.warning("job %s: results in another bucket than ours ignored", job_id)
        return stage
    results, cut = _results(job_id, detail.get("results"))
    key = detail.get("resultsKey")
    truncated = detail.get("resultsTruncated")
    return RunnerStage(
        job_id=job_id, status=code, reason=stage.reason, results=results,
        results_key=key if key == f"jobs/{job_id}/results.json" else None,
        results_truncated=True if cut else (truncated if isinstance(truncated, bool) else None),
        attempt=attempt, at=stage.at, algorithm_run=stage.algorithm_run, detail=detail)


def _algorithm_run(raw: Any) -> dict[str, Any] | None:
    """Publish's report of the algorithm container's run ({"startedAt", "finishedAt"} in epoch
    seconds, "exitCode"), kept only when it is a plausible run."""
    if not isinstance(raw, Mapping):
        return None
    started, finished = raw.get("startedAt"), raw.get("finishedAt")
    if not all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t < 2**40 for t in (started, finished)):
        return None
    if not 0 <= finished - started <= MAX_RUN_SECONDS:
        return None
    code = raw.get("exitCode")
    return {"startedAt": round(float(started), 3), "finishedAt": round(float(finished), 3),
            "exitCode": code if _is_int(code) else None}


def result_key_allowed(job_id: str, kind: Any, key: Any) -> bool:
    """Whether a result entry may name this object: outputs under jobs/<id>/outputs/, logs under
    jobs/<id>/logs/, nothing else of the job's prefix (its manifest holds decrypted URLs), no
    other job's, no `..` or empty segment."""
    if not isinstance(key, str) or len(key) > 1024:
        return False
    folder = "outputs" if kind == "output" else "logs" if kind in RESULT_TYPES else None
    prefix = f"jobs/{job_id}/{folder}/"
    rest = key[len(prefix):]
    return (folder is not None and key.startswith(prefix) and bool(rest)
            and all(part not in ("", ".", "..") for part in rest.split("/")))


def _results(job_id: str, raw: Any) -> tuple[list[dict[str, Any]], bool]:
    """The runner's results, keeping only well-formed entries whose object lies in this job's
    own outputs/ or logs/ (a forged event must not point a consumer at another job's files or at
    the manifest), and only as many as fit a DynamoDB item; the second value says whether some
    did not fit."""
    if not isinstance(raw, list):
        raise Malformed("runner results are not a list")
    kept: list[dict[str, Any]] = []
    room, dropped = MAX_RESULTS_BYTES, 0
    for item in raw:
        if not isinstance(item, Mapping):
            dropped += 1
            continue
        name, size, kind, key = item.get("filename"), item.get("filesize"), item.get("type"), item.get("key")
        if not (isinstance(name, str) and 0 < len(name) <= 1024 and _is_int(size) and size >= 0
                and kind in RESULT_TYPES and result_key_allowed(job_id, kind, key)):
            dropped += 1
            continue
        entry = {"filename": name, "filesize": size, "type": kind, "key": key}
        entry.update(_pins(item))
        room -= len(json.dumps(entry)) + 2
        if room < 0 or len(kept) >= MAX_RESULTS:
            return kept, True
        kept.append(entry)
    if dropped:
        log.warning("job %s: %d malformed result entries dropped", job_id, dropped)
    return kept, False


def _pins(item: Mapping[str, Any]) -> dict[str, str]:
    """What publish says it wrote: the S3 version (served by that id, so another job's later
    write at the key is never what the consumer downloads) and the sha256 of its bytes; kept
    only when well-formed."""
    pins: dict[str, str] = {}
    version, digest = item.get("versionId"), item.get("sha256")
    if isinstance(version, str) and version != "null" and VERSION_ID.fullmatch(version):
        pins["versionId"] = version
    if isinstance(digest, str) and SHA256_HEX.fullmatch(digest):
        pins["sha256"] = digest
    return pins


def _is_job_id(value: Any) -> bool:
    return isinstance(value, str) and JOB_ID_PATTERN.fullmatch(value) is not None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: Any) -> str:
    return value[:MAX_REASON] if isinstance(value, str) else ""


def batch_state_event(job_id: str, batch_job_id: str, job_queue: str, batch_status: str, *,
                      exit_codes: Mapping[str, int | None] | None = None, status_reason: str = "",
                      stopped_at_ms: int | None = None) -> dict[str, Any]:
    """A "Batch Job State Change" event carrying what this module reads, for a backend that
    runs jobs without Batch (the local dispatcher) to report them the same way. Its final
    event is required: the runner's 70 alone leaves a job at 60 (see the module docstring)."""
    containers = [{"name": name, **({"exitCode": code} if code is not None else {})}
                  for name, code in (exit_codes or {}).items()]
    detail: dict[str, Any] = {
        "jobName": JOB_NAME_PREFIX + job_id, "jobId": batch_job_id, "jobQueue": job_queue,
        "status": batch_status, "tags": {JOB_ID_TAG: job_id},
        "ecsProperties": {"taskProperties": [{"containers": containers}]},
    }
    if status_reason:
        detail["statusReason"] = status_reason
    if stopped_at_ms is not None:
        detail["stoppedAt"] = stopped_at_ms
    return {"version": "0", "source": BATCH_SOURCE, "detail-type": BATCH_DETAIL_TYPE, "detail": detail}
