"""What a signal changes on a job, given what its record already knows: pure decisions, one
`Plan` (a single conditional update) or None when nothing changes.

Mapping (DESIGN §4), with the decisions this module takes:

- Batch SUBMITTED/PENDING/RUNNABLE → 1, STARTING → 10, RUNNING → 40 unless a later stage is known.
- Runner 20/30/40/60 → that stage (configure sends 40 as it exits: the algorithm's turn); 31/32/62
  → that failure (terminal, with the runner's reason).
- Runner 70 is NOT final on its own: publish runs after a failed algorithm too, so "publish
  done" cannot tell 70 from 41. It records the results and holds the job at 60; Batch's final
  event decides. If Batch's SUCCEEDED came first the job is already 70 and the runner's 70 just
  attaches the results. Results are write-once and may be attached to any terminal job but a
  deleted one, so they are never lost whatever the order.
- Batch SUCCEEDED/FAILED, decided from the containers' exit codes and reasons in the event
  (ecsProperties, else the last attempt), so the Batch event alone is enough when the runner's
  event is lost: stopped by the owner (our TerminateJob reason) → 7; configure exit 31/32 (C4) →
  31/32 (configure's own verdict, first); the algorithm container's own start failure (a
  Cannot*/ResourceInitialization reason not caused by a dependency: its image absent, private,
  rate-limited, of another architecture) → 32 with the reason's error class, whatever exit code
  or configure's fate (issue 18, point 4); configure exit ≠ 0 otherwise or a runner image that
  could not start → the runner's code if known, else 31 (the algorithm then did not run);
  FAILED "Task failed to start" with no container verdict → 32 once configure had succeeded,
  else 31; publish exit ≠ 0 → 62 (before the algorithm,
  so it agrees with the runner's own 62); algorithm exit 124 → 41 "ran out of time" (maxJobDuration
  is enforced in its container, compute.algorithm_script); algorithm exit ≠ 0 → 41; otherwise
  SUCCEEDED → 70. An algorithm that did not run is never "failed": after a configure failure
  (its script exits 0, or, with a dependsOn SUCCESS definition, the agent force-stops it with 143
  "CannotStartContainerError: dependency graph") the exit code reported is none; exit 143 with a
  Cannot*Container reason after a good configure is its own start failure → 32.
  FAILED with no container verdict: on "Host EC2*" (the instance went away on the last attempt,
  e.g. a spot reclaim) the runner's failure code, else 70 if the runner finished publishing, else
  31 with a reason saying the infrastructure lost the job, never "Algorithm failed"; otherwise by
  how far the job got: before 30 → 31, before 60 → 41, else 62.
- Marks of the current attempt (issue 18, points 3 and 5), each written once, with whatever else
  the event changes, or alone when nothing else changes: Batch STARTING → `starting_at` (when
  the task started, configure first); the task Batch names → `log_stream` (the algorithm's
  CloudWatch stream); configure's signed 30 and 40 → `algorithm_started_at` (its `at`: the
  algorithm container starts as configure exits); Batch RUNNING (its startedAt: every container
  is up, so publish started and the algorithm had exited) and publish's signed 60 →
  `publish_started_at`, the 60 also `algorithm_run` (the algorithm container's
  StartedAt/FinishedAt as the ECS agent recorded them). A newer attempt starts over: its marks replace, the others are removed. They bound the
  algorithm's time (compute.deadlines) and bill it (payments.settlement).
- A deadline stop (TerminateJob with compute.deadlines' reason) → 41 "ran out of time".
- Attempts: Batch retries an attempt lost to the instance ("Host EC2*"). The record keeps the
  highest attempt seen (a Batch event's in-progress attempt is len(attempts) + 1, a final one's
  len(attempts); a runner event's is its `attempt`, C6); a runner event of an older attempt than
  that changes nothing, results included (the new attempt publishes its own). A runner failure of
  attempt n that arrives before anything of attempt n+1 still ends the job: nothing can tell yet.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from chalicelib.compute import status as st
from chalicelib.compute.algorithm_script import TIMED_OUT
from chalicelib.compute.batch_naming import ALGORITHM, CONFIGURE, PUBLISH, is_deadline_reason, is_stop_reason
from chalicelib.compute.event_signals import (
    BATCH_PROGRESS,
    MAX_REASON,
    RUNNER_FAILURES,
    TASK_FAILED_TO_START,
    BatchChange,
    ContainerExit,
    RunnerStage,
    Signal,
)
from chalicelib.models import JobRecord

log = logging.getLogger(__name__)

CONFIGURE_CODES = frozenset({st.DATA_FAILED, st.ALGORITHM_PROVISIONING_FAILED})  # C4 exit codes = statuses
# Record fields of the current attempt written once each (see the module docstring); None as a
# value means "now", the handler's clock.
MARKS = ("starting_at", "log_stream", "algorithm_started_at", "publish_started_at", "algorithm_run")
HOST_LOST_PREFIX = "Host EC2"
OUT_OF_TIME = "Algorithm ran out of time (maxJobDuration) and was stopped"
INSTANCE_LOST = "The compute instance was lost on the job's last attempt ({reason}); the job could not finish"
# ECS/Batch container reasons are "<ErrorClass>: <Docker's message>", and the message names
# registries, addresses and presigned layer URLs ("dial tcp 10.0.3.4:5000: connection refused"):
# a consumer-visible reason keeps the class only (C10; the consumer picks the image's host).
_ERROR_CLASS = re.compile(r"^([A-Z][A-Za-z]*(?:Error|Exception)): ")


@dataclass(frozen=True)
class JobState:
    """What `plan()` needs to know about the record."""

    status: int
    has_results: bool = False
    stage: int | None = None
    stage_failure: int | None = None
    batch_job_id: str | None = None
    attempt: int | None = None
    marks: frozenset[str] = frozenset()  # which MARKS the record holds
    held: bool = False  # its results await the data owner's release (chalicelib.owner.release)

    @classmethod
    def of(cls, record: JobRecord) -> "JobState":
        return cls(status=int(record.status), has_results=record.results is not None,
                   stage=_int_or_none(record.stage), stage_failure=_int_or_none(record.stage_failure),
                   batch_job_id=record.batch_job_id, attempt=_int_or_none(record.batch_attempt),
                   marks=frozenset(name for name in MARKS if getattr(record, name) is not None),
                   held=isinstance(record.release, dict) and record.release.get("state") == "pending")


@dataclass(frozen=True)
class Plan:
    """One update: a new status (None: status unchanged) and the fields that go with it."""

    status: int | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    results: RunnerStage | None = None  # attach this stage's results (write-once)
    finished_at: int | None = None
    started_at: int | None = None  # Batch's startedAt: runningAt if nothing set it before
    attempt: int | None = None  # raise the recorded attempt to this (conditional on it being lower)
    marks: Mapping[str, Any] = field(default_factory=dict)  # MARKS to write once (None: now); all anew with `attempt`


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def plan(state: JobState, signal: Signal) -> Plan | None:
    """The single update `signal` makes to a job in `state`, or None if it changes nothing."""
    if state.status == st.DELETED:
        return None
    if isinstance(signal, BatchChange):
        change = _plan_batch(state, signal)
        if state.batch_job_id and state.batch_job_id != signal.batch_job_id:
            return change
    else:
        change = _plan_runner(state, signal)
        if signal.attempt is not None and signal.attempt < (state.attempt or 1):
            return change
    return _with_marks(state, change, _signal_marks(signal))


def _signal_marks(signal: Signal) -> dict[str, Any]:
    """The MARKS this signal carries (None: the time it is handled)."""
    if isinstance(signal, BatchChange):
        marks: dict[str, Any] = {"starting_at": None} if signal.batch_status == "STARTING" else {}
        if signal.batch_status == "RUNNING":  # all containers up: publish started, the algorithm had exited
            marks["publish_started_at"] = signal.started_at
        if signal.log_stream:
            marks["log_stream"] = signal.log_stream
        return marks
    if signal.status in (st.PROVISIONED, st.RUNNING):  # configure's last two: the algorithm's turn
        return {"algorithm_started_at": signal.at}
    if signal.status == st.PUBLISHING:
        return {"publish_started_at": signal.at, **({"algorithm_run": signal.algorithm_run} if signal.algorithm_run else {})}
    return {}


def _with_marks(state: JobState, change: Plan | None, marks: dict[str, Any]) -> Plan | None:
    """`change` with the marks the record lacks (all of them for a newer attempt, which starts
    over); a plan of marks alone when nothing else changes. An ended job takes no marks."""
    newer = change is not None and change.attempt is not None
    wanted = {name: value for name, value in marks.items() if newer or name not in state.marks}
    if not wanted or st.is_terminal(state.status) or (change is not None and change.status is not None
                                                      and st.is_terminal(change.status) and not newer):
        return change
    if change is None:
        return Plan(marks=wanted)
    return Plan(status=change.status, fields=change.fields, results=change.results, finished_at=change.finished_at,
                started_at=change.started_at, attempt=change.attempt, marks=wanted)


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
    if proposed == st.COMPLETED and state.held:
        proposed = st.AWAITING_RELEASE  # the owner's release decides whether it becomes 70
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
        # Ocean Node's OOMKilled: the algorithm's container hit its memory limit
        return {"exitCode": algorithm.exit_code if ran else None, "reason": text[:MAX_REASON],
                "OOMKilled": ran and algorithm.oom_killed}

    if change.batch_status == "FAILED" and is_stop_reason(change.status_reason):
        return st.STOPPED, details("Job stopped")
    if change.batch_status == "FAILED" and is_deadline_reason(change.status_reason):
        return st.ALGORITHM_FAILED, details(OUT_OF_TIME)  # an image that ignored our command, stopped from outside
    if configure.exit_code in CONFIGURE_CODES:
        code = int(configure.exit_code)  # configure's own verdict: the algorithm never started (SUCCESS)
        return code, details(configure.reason or st.status_text(code), ran=False)
    if algorithm.failed_to_start and not algorithm.by_dependency:
        # its image could not be pulled (absent, private, rate limit, no manifest for this
        # platform) or started (wrong architecture): whatever happened to configure meanwhile
        # (a manifest pull fails before configure ends, and the task stops it), that is why
        return st.ALGORITHM_PROVISIONING_FAILED, details(algorithm.reason, ran=False)
    if configure.failed or configure.failed_to_start:
        # the algorithm did not run: the agent never started it (143, "dependency graph"), or,
        # with an older dependsOn COMPLETE definition, its script found no ready marker (exit 0)
        known = state.stage_failure if state.stage_failure in CONFIGURE_CODES else st.DATA_FAILED
        return known, details(configure.reason, ran=False)
    if algorithm.failed_to_start:
        return st.ALGORITHM_PROVISIONING_FAILED, details(algorithm.reason, ran=False)
    if (change.batch_status == "FAILED" and change.status_reason.startswith(TASK_FAILED_TO_START)
            and algorithm.exit_code is None and publish.exit_code is None):
        # the task never got going, and no container says why: nothing of the algorithm ran
        ran_configure = configure.exit_code == 0 or st.rank(state.status) >= st.rank(st.PROVISIONED)
        return (st.ALGORITHM_PROVISIONING_FAILED if ran_configure else st.DATA_FAILED), details("", ran=False)
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
