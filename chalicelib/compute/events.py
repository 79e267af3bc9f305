"""Job status from events: AWS Batch "Batch Job State Change" and the runner's stage events.

Each event is parsed into a signal, the job record is read, `plan()` (pure) decides what the
signal changes given what the record already knows, and that change is ONE conditional
UpdateItem whose condition is the status (and results) it was computed from. A concurrent event
that changed the record in between makes the condition fail; the handler then re-reads and
re-plans (rare, bounded). So reordered, duplicated or concurrent events can never move a job
backwards or out of a terminal state (compute.status), and an event that changes nothing
writes nothing.

Mapping (DESIGN §4), with the decisions this module takes:

- Batch SUBMITTED/PENDING/RUNNABLE → 1, STARTING → 10, RUNNING → 40 unless a later stage is known.
- Runner 20/30/60 → that stage; 31/32/62 → that failure (terminal, with the runner's reason).
- Runner 70 is NOT final on its own: publish runs after a failed algorithm too, so "publish
  done" cannot tell 70 from 41. It records the results and holds the job at 60; Batch's final
  event decides. If Batch's SUCCEEDED came first the job is already 70 and the runner's 70 just
  attaches the results. Results are write-once and may be attached to any terminal job but a
  deleted one, so they are never lost whatever the order.
- Batch SUCCEEDED/FAILED, decided from the containers' exit codes and reasons in the event
  (ecsProperties, else the last attempt), so the Batch event alone is enough when the runner's
  event is lost: stopped by the owner (our TerminateJob reason) → 7; configure exit 31/32 (C4) →
  31/32, configure exit ≠ 0 otherwise or a runner image that could not start → the runner's code
  if known, else 31 (checked first: the algorithm then did not run, publish still published the
  logs); the algorithm's image could not start → 32; publish exit ≠ 0 → 62 (before the algorithm,
  so it agrees with the runner's own 62); algorithm exit 124 → 41 "ran out of time" (maxJobDuration
  is enforced in its container, dispatch.algorithm_script); algorithm exit ≠ 0 → 41; otherwise
  SUCCEEDED → 70. An algorithm that did not run is never "failed": after a configure failure
  (its script exits 0, or, with a dependsOn SUCCESS definition, the agent force-stops it with 143
  "CannotStartContainerError: dependency graph") the exit code reported is none; exit 143 with a
  Cannot*Container reason after a good configure is its own start failure → 32.
  FAILED with no container verdict: on "Host EC2*" (the instance went away on the last attempt,
  e.g. a spot reclaim) the runner's failure code, else 70 if the runner finished publishing, else
  31 with a reason saying the infrastructure lost the job, never "Algorithm failed"; otherwise by
  how far the job got: before 30 → 31, before 60 → 41, else 62.
- Attempts: Batch retries an attempt lost to the instance ("Host EC2*"). The record keeps the
  highest attempt seen (a Batch event's in-progress attempt is len(attempts) + 1, a final one's
  len(attempts); a runner event's is its `attempt`, C6); a runner event of an older attempt than
  that changes nothing, results included (the new attempt publishes its own). A runner failure of
  attempt n that arrives before anything of attempt n+1 still ends the job: nothing can tell yet.

The first write that moves a job to 40..60 sets runningAt (Batch's startedAt, else now), a
final Batch event carrying startedAt sets it if nothing did, and a newer attempt's RUNNING event
resets it to that attempt's start (time lost with an instance is not billed): escrow billing
counts the run time from it to dateFinished (payments.settlement). A terminal status sets dateFinished (Batch's stoppedAt, else now) and terminationDetails
{exitCode: the algorithm container's, reason}; `on_terminal(record)` runs once, on the write
that first made the job terminal. Results are only entries under jobs/<jobId>/outputs/ (type
output) and jobs/<jobId>/logs/ (the log types) in our bucket, whatever an event says (never the
manifest or results.json), cut to fit a DynamoDB item (resultsTruncated; the full list is in resultsKey = results.json,
which is also where to look if a 70 job has no results because the runner's event was lost).

Events for queues this provider does not own, for unknown jobs, for another Batch job than the
one recorded, and malformed events are ignored with a log line; `handle()` never raises.
"""
from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from pynamodb.exceptions import DoesNotExist, PynamoDBException

from chalicelib.compute import status as st
from chalicelib.compute import transitions
from chalicelib.compute.dispatch import (
    ALGORITHM,
    CONFIGURE,
    JOB_ID_PATTERN,
    JOB_ID_TAG,
    JOB_NAME_PREFIX,
    PUBLISH,
    is_stop_reason,
)
from chalicelib.models import JobRecord

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
# Container reasons of a container that never ran (its image or its start failed).
START_FAILURES = ("CannotPullContainer", "CannotStartContainer", "CannotCreateContainer",
                  "CannotInspectContainer", "ResourceInitializationError")
CONFIGURE_CODES = frozenset({st.DATA_FAILED, st.ALGORITHM_PROVISIONING_FAILED})  # C4 exit codes = statuses
FORCE_STOPPED = 143  # SIGTERM: what the ECS agent gives a container it stops because of its dependencies
TIMED_OUT = 124  # dispatch.TIMED_OUT: the algorithm ran out of maxJobDuration
HOST_LOST_PREFIX = "Host EC2"
OUT_OF_TIME = "Algorithm ran out of time (maxJobDuration) and was stopped"
INSTANCE_LOST = "The compute instance was lost on the job's last attempt ({reason}); the job could not finish"
MAX_REASON = 255
# ECS/Batch container reasons are "<ErrorClass>: <Docker's message>", and the message names
# registries, addresses and presigned layer URLs ("dial tcp 10.0.3.4:5000: connection refused"):
# a consumer-visible reason keeps the class only (C10; the consumer picks the image's host).
_ERROR_CLASS = re.compile(r"^([A-Z][A-Za-z]*(?:Error|Exception)): ")
MAX_RESULTS = 10_000
MAX_RESULTS_BYTES = 200_000  # of DynamoDB's 400 KB per item; the runner sends at most ~150 KB
WRITE_ATTEMPTS = 4


class Malformed(Exception):
    """The event is not one we can read; the message says why (never the event itself)."""


# -- signals: what an event says, independent of the record ---------------------------------

@dataclass(frozen=True)
class ContainerExit:
    exit_code: int | None = None
    reason: str = ""

    @property
    def failed_to_start(self) -> bool:
        """It never ran: the agent could not pull, create or start it (exit code none, or the
        SIGTERM the agent gives a container it stops before it ran)."""
        return self.exit_code in (None, FORCE_STOPPED) and self.reason.startswith(START_FAILURES)

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
    started_at: int | None = None  # Unix seconds: Batch's startedAt (the job's containers started)
    attempt: int = 1  # the attempt this event is about (1-based)

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


Signal = BatchChange | RunnerStage


@dataclass(frozen=True)
class JobState:
    """What `plan()` needs to know about the record."""

    status: int
    has_results: bool = False
    stage: int | None = None
    stage_failure: int | None = None
    batch_job_id: str | None = None
    attempt: int | None = None

    @classmethod
    def of(cls, record: JobRecord) -> "JobState":
        return cls(status=int(record.status), has_results=record.results is not None,
                   stage=_int_or_none(record.stage), stage_failure=_int_or_none(record.stage_failure),
                   batch_job_id=record.batch_job_id, attempt=_int_or_none(record.batch_attempt))


@dataclass(frozen=True)
class Plan:
    """One update: a new status (None: status unchanged) and the fields that go with it."""

    status: int | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    results: RunnerStage | None = None  # attach this stage's results (write-once)
    finished_at: int | None = None
    started_at: int | None = None  # Batch's startedAt: runningAt if nothing set it before
    attempt: int | None = None  # raise the recorded attempt to this (conditional on it being lower)


@dataclass(frozen=True)
class Outcome:
    """What handling one event did: updated (status moved), attached (results only), attempt
    (a newer Batch attempt recorded, nothing else), unchanged (nothing to write), ignored (not
    ours / unreadable), error (store failed)."""

    action: str
    job_id: str | None = None
    status: int | None = None
    detail: str = ""


# -- parsing ------------------------------------------------------------------------------

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
    )


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
    stage = RunnerStage(job_id=job_id, status=code, reason=_text(detail.get("reason")), attempt=attempt)
    if code not in (st.PUBLISH_FAILED, st.COMPLETED) or "results" not in detail:
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
        attempt=attempt)


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
        room -= len(json.dumps(entry)) + 2
        if room < 0 or len(kept) >= MAX_RESULTS:
            return kept, True
        kept.append(entry)
    if dropped:
        log.warning("job %s: %d malformed result entries dropped", job_id, dropped)
    return kept, False


def _is_job_id(value: Any) -> bool:
    return isinstance(value, str) and JOB_ID_PATTERN.fullmatch(value) is not None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _text(value: Any) -> str:
    return value[:MAX_REASON] if isinstance(value, str) else ""


# -- planning (pure) ----------------------------------------------------------------------

def plan(state: JobState, signal: Signal) -> Plan | None:
    """The single update `signal` makes to a job in `state`, or None if it changes nothing."""
    if state.status == st.DELETED:
        return None
    if isinstance(signal, BatchChange):
        return _plan_batch(state, signal)
    return _plan_runner(state, signal)


def _plan_batch(state: JobState, change: BatchChange) -> Plan | None:
    if state.batch_job_id and state.batch_job_id != change.batch_job_id:
        return None  # an earlier submission of this job: not the one the record follows
    fields: dict[str, Any] = {"batch_status": change.batch_status}
    if not state.batch_job_id:
        fields["batch_job_id"] = change.batch_job_id
    attempt = change.attempt if change.attempt > (state.attempt or 1) else None
    if not change.final:
        proposed = BATCH_PROGRESS[change.batch_status]
        if st.can_move(state.status, proposed):
            return Plan(status=proposed, fields=fields, started_at=change.started_at, attempt=attempt)
        # a retry: nothing moves, but older attempts' runner events must now be ignored, and a
        # running retry restarts the billed time (the lost attempt is the provider's loss)
        running = change.started_at if change.batch_status == "RUNNING" else None
        return Plan(attempt=attempt, started_at=running) if attempt and not st.is_terminal(state.status) else None
    proposed, details = batch_outcome(state, change)
    if not st.can_move(state.status, proposed):
        return None
    fields["termination_details"] = details
    return Plan(status=proposed, fields=fields, finished_at=change.stopped_at, started_at=change.started_at,
                attempt=attempt)


def batch_outcome(state: JobState, change: BatchChange) -> tuple[int, dict[str, Any]]:
    """The terminal status of a SUCCEEDED/FAILED job, and its terminationDetails."""
    exits = change.containers
    configure = exits.get(CONFIGURE, ContainerExit())
    algorithm = exits.get(ALGORITHM, exits.get("", ContainerExit()))
    publish = exits.get(PUBLISH, ContainerExit())

    def details(reason: str, ran: bool = True) -> dict[str, Any]:
        text = reason or change.status_reason
        error_class = _ERROR_CLASS.match(text)
        if error_class:
            log.info("job %s: container reason %s", change.job_id, text[:1000])  # the operator's
            text = error_class.group(1)
        return {"exitCode": algorithm.exit_code if ran else None, "reason": text[:MAX_REASON]}

    if change.batch_status == "FAILED" and is_stop_reason(change.status_reason):
        return st.STOPPED, details("Job stopped")
    if configure.failed or configure.failed_to_start:
        # the algorithm did not run: its script found no ready marker (exit 0), or, with a
        # dependsOn SUCCESS definition, the agent force-stopped it (143, "dependency graph")
        if configure.exit_code in CONFIGURE_CODES:
            code = int(configure.exit_code)
            return code, details(configure.reason or st.status_text(code), ran=False)
        known = state.stage_failure if state.stage_failure in CONFIGURE_CODES else st.DATA_FAILED
        return known, details(configure.reason, ran=False)
    if algorithm.failed_to_start:
        return st.ALGORITHM_PROVISIONING_FAILED, details(algorithm.reason, ran=False)
    if publish.failed_to_start or publish.failed:
        return st.PUBLISH_FAILED, details(publish.reason)
    if algorithm.exit_code == TIMED_OUT:
        return st.ALGORITHM_FAILED, details(OUT_OF_TIME)
    if algorithm.failed:
        return st.ALGORITHM_FAILED, details(algorithm.reason)
    if change.batch_status == "SUCCEEDED":
        return st.COMPLETED, details("")
    if state.stage_failure in RUNNER_FAILURES:
        return state.stage_failure, details("")
    if state.stage == st.COMPLETED:
        return st.COMPLETED, details("")
    if change.status_reason.startswith(HOST_LOST_PREFIX):
        return st.DATA_FAILED, details(INSTANCE_LOST.format(reason=change.status_reason[:120]))
    if st.is_terminal(state.status) or st.rank(state.status) < st.rank(st.PROVISIONED):
        return st.DATA_FAILED, details("")
    if st.rank(state.status) < st.rank(st.PUBLISHING):
        return st.ALGORITHM_FAILED, details("")
    return st.PUBLISH_FAILED, details("")


def _plan_runner(state: JobState, stage: RunnerStage) -> Plan | None:
    if stage.attempt is not None and stage.attempt < (state.attempt or 1):
        return None  # an older attempt's: Batch has retried since
    change = _plan_runner_stage(state, stage)
    newer = stage.attempt if stage.attempt is not None and stage.attempt > (state.attempt or 1) else None
    if newer is None or change is None:
        return change
    return Plan(status=change.status, fields=change.fields, results=change.results,
                finished_at=change.finished_at, attempt=newer)


def _plan_runner_stage(state: JobState, stage: RunnerStage) -> Plan | None:
    attach = stage.results is not None and not state.has_results
    if st.is_terminal(state.status):
        # Too late to change the outcome; the results are still worth keeping.
        return Plan(results=stage) if attach else None
    if stage.status in RUNNER_FAILURES:
        return Plan(status=stage.status, results=stage if attach else None,
                    fields={"stage": stage.status, "stage_failure": stage.status,
                            "termination_details": {"exitCode": None, "reason": stage.reason}})
    if stage.status == st.COMPLETED:
        target = st.next_status(state.status, st.PUBLISHING)
        if target == state.status and not attach and state.stage == st.COMPLETED:
            return None
        return Plan(status=target if target != state.status else None,
                    results=stage if attach else None, fields={"stage": st.COMPLETED})
    if not st.can_move(state.status, stage.status):
        return None
    return Plan(status=stage.status, fields={"stage": stage.status})


# -- applying ----------------------------------------------------------------------------

TerminalHook = Callable[[JobRecord], None]


class JobEvents:
    """Turns events into job record updates; one instance per Lambda container."""

    def __init__(self, model: type[JobRecord] = JobRecord, queues: Iterable[str] = (),
                 clock: Callable[[], float] = time.time, *, results_bucket: str | None = None,
                 on_terminal: TerminalHook | None = None, release_slots: bool = False) -> None:
        """`release_slots`: give the environment's slot back in the same transaction as the write
        that ends a job (compute.transitions); `on_terminal` is told afterwards."""
        self._model = model
        self._queues = frozenset(queues)
        self._clock = clock
        self._bucket = results_bucket
        self._on_terminal = on_terminal
        self._release_slots = release_slots

    def handle(self, event: Any) -> Outcome:
        """Apply one EventBridge event; never raises (a store outage is Outcome 'error')."""
        try:
            signal = parse(event, self._queues, self._bucket)
        except Malformed as exc:
            log.info("event ignored: %s", exc)
            return Outcome("ignored", detail=str(exc))
        except Exception as exc:  # noqa: BLE001 - a bad event must never break the handler
            log.warning("event ignored: unreadable (%s)", type(exc).__name__)
            return Outcome("ignored", detail="unreadable event")
        try:
            return self._apply(signal)
        except PynamoDBException as exc:
            log.error("job %s: job store failed (%s)", signal.job_id,
                      getattr(exc, "cause_response_code", None) or type(exc).__name__)
            return Outcome("error", signal.job_id, detail="job store unavailable")
        except Exception as exc:  # noqa: BLE001 - e.g. a corrupt record
            log.error("job %s: event not applied (%s)", signal.job_id, type(exc).__name__)
            return Outcome("error", signal.job_id, detail=type(exc).__name__)

    def _apply(self, signal: Signal) -> Outcome:
        for _ in range(WRITE_ATTEMPTS):
            try:
                record = self._model.get(signal.job_id, consistent_read=True)
            except DoesNotExist:
                log.info("event for unknown job %s ignored", signal.job_id)
                return Outcome("ignored", signal.job_id, detail="unknown job")
            state = JobState.of(record)
            change = plan(state, signal)
            if change is None:
                return Outcome("unchanged", signal.job_id, state.status)
            try:
                self._write(record, state, change)
            except transitions.ConditionFailed:
                continue  # another event changed the job since we read it: re-plan
            return self._after_write(record, state, change)
        log.warning("job %s: gave up after %d concurrent changes", signal.job_id, WRITE_ATTEMPTS)
        return Outcome("error", signal.job_id, detail="too many concurrent changes")

    def _write(self, record: JobRecord, state: JobState, change: Plan) -> None:
        model = self._model
        now = int(self._clock())
        actions = [model.updated_at.set(now)]
        if change.status is not None:
            actions += [model.status.set(change.status), model.status_text.set(st.status_text(change.status))]
            if st.is_terminal(change.status):
                finished = change.finished_at or now
                actions.append(model.date_finished.set(model.date_finished | finished))
            # runningAt: when the job first reached 40 (its containers run), what billing counts from
            if st.rank(st.RUNNING) <= st.rank(change.status) <= st.rank(st.PUBLISHING):
                actions.append(model.running_at.set(model.running_at | (change.started_at or now)))
            elif change.started_at is not None:
                actions.append(model.running_at.set(model.running_at | change.started_at))
        for name, value in change.fields.items():
            attribute = getattr(model, name)
            if name == "batch_job_id":
                actions.append(attribute.set(attribute | value))
            else:
                actions.append(attribute.set(value))
        condition = model.status == state.status
        if change.attempt is not None:
            actions.append(model.batch_attempt.set(change.attempt))
            if change.status is None and change.started_at is not None:
                actions.append(model.running_at.set(change.started_at))  # a newer attempt runs
            condition &= model.batch_attempt.does_not_exist() | (model.batch_attempt < change.attempt)
        if change.results is not None:
            stage = change.results
            actions.append(model.results.set(stage.results))
            if stage.results_key:
                actions.append(model.results_key.set(stage.results_key))
            if stage.results_truncated is not None:
                actions.append(model.results_truncated.set(stage.results_truncated))
            condition &= model.results.does_not_exist()
        ends_job = change.status is not None and st.is_terminal(change.status) and not st.is_terminal(state.status)
        transitions.write(record, actions, condition, ends_job=ends_job and self._release_slots)

    def _after_write(self, record: JobRecord, state: JobState, change: Plan) -> Outcome:
        if change.status is None:
            if change.results is None:
                log.info("job %s: now at Batch attempt %s", record.job_id, change.attempt)
                return Outcome("attempt", record.job_id, state.status)
            log.info("job %s: results attached (status %s)", record.job_id, state.status)
            return Outcome("attached", record.job_id, state.status)
        log.info("job %s: status %s -> %s", record.job_id, state.status, change.status)
        if st.is_terminal(change.status) and not st.is_terminal(state.status) and self._on_terminal:
            try:
                self._on_terminal(record)
            except Exception as exc:  # noqa: BLE001 - the status is written; a hook must not undo that
                log.error("job %s: terminal hook failed (%s)", record.job_id, type(exc).__name__)
        return Outcome("updated", record.job_id, change.status)


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


# -- Lambda glue ---------------------------------------------------------------------------

def build_job_events(results_bucket: str, on_terminal: TerminalHook | None = None) -> JobEvents:
    """JobEvents for this deployment: the queues of the configured environments (sealed and
    network-allowed), our bucket (`services.job_events` passes the settings' one)."""
    from chalicelib.compute.environments import environments, job_queues

    return JobEvents(JobRecord, queues=job_queues(environments().values()),
                     results_bucket=results_bucket, on_terminal=on_terminal, release_slots=True)


def handle_lambda_event(event: Any, handler: JobEvents) -> dict[str, Any]:
    """For a Chalice `on_cw_event` handler. Raises only when the job store failed, so Lambda's
    asynchronous retry delivers the event again; everything else is absorbed by `handle`."""
    raw = event.to_dict() if hasattr(event, "to_dict") else event
    outcome = handler.handle(raw)
    if outcome.action == "error":
        raise RuntimeError(f"job event not applied ({outcome.detail}); Lambda will retry it")
    return {"action": outcome.action, "jobId": outcome.job_id, "status": outcome.status}
