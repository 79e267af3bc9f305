"""Job status from events: AWS Batch "Batch Job State Change" and the runner's stage events.

Each event is parsed into a signal (`compute.event_signals`: what the event says), the job record
is read, `plan()` (`compute.event_planning`, pure) decides what the signal changes given what the
record already knows, and that change is ONE conditional UpdateItem whose condition is the status
(and results) it was computed from. A concurrent event that changed the record in between makes
the condition fail; the handler then re-reads and re-plans (rare, bounded). So reordered,
duplicated or concurrent events can never move a job backwards or out of a terminal state
(compute.status), and an event that changes nothing writes nothing.

The first write that moves a job to 40..60 sets runningAt (Batch's startedAt, else now), a
final Batch event carrying startedAt sets it if nothing did, and a newer attempt's RUNNING event
resets it to that attempt's start (time lost with an instance is not billed): escrow billing
counts the run time from it to dateFinished (payments.settlement). A terminal status sets
dateFinished (Batch's stoppedAt, else now) and terminationDetails {exitCode: the algorithm
container's, reason}; `on_terminal(record)` runs once, on the write that first made the job
terminal.

Events for queues this provider does not own, for unknown jobs, for another Batch job than the
one recorded, runner events not signed with the job's own key (chalicelib.job_key: another job,
or the algorithm, speaking for this one), and malformed events are ignored with a log line;
`handle()` never raises.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from pynamodb.exceptions import DoesNotExist, PynamoDBException

from chalicelib.compute import status as st
from chalicelib.compute import transitions
from chalicelib.compute.event_planning import MARKS, JobState, Plan, plan
from chalicelib.compute.event_signals import Malformed, RunnerStage, Signal, parse
from chalicelib.models import JobRecord
from chalicelib.observability import jobs as job_report

log = logging.getLogger(__name__)

WRITE_ATTEMPTS = 4


@dataclass(frozen=True)
class Outcome:
    """What handling one event did: updated (status moved), attached (results only), attempt
    (a newer Batch attempt recorded, nothing else), noted (marks of the attempt only: times, the
    log stream), unchanged (nothing to write), ignored (not ours / unreadable), error (store failed)."""

    action: str
    job_id: str | None = None
    status: int | None = None
    detail: str = ""


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
            if isinstance(signal, RunnerStage) and not signal.signed_by(record.runner_key):
                log.warning("job %s: runner event refused: not signed with the job's key", signal.job_id)
                return Outcome("ignored", signal.job_id, detail="runner event not signed with the job's key")
            state = JobState.of(record)
            change = plan(state, signal)
            if change is None:
                return Outcome("unchanged", signal.job_id, state.status)
            running_before = record.running_at  # the write refreshes the record
            try:
                self._write(record, state, change)
            except transitions.ConditionFailed:
                continue  # another event changed the job since we read it: re-plan
            if change.status is not None:  # metrics: queue wait, ends by status, algorithm seconds
                job_report.moved(record, state.status, change.status, started_at=change.started_at,
                                 finished_at=change.finished_at, running_before=running_before)
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
        actions += _marks(model, change, now)
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
            if change.results is None and change.attempt is None:
                log.info("job %s: noted %s", record.job_id, ", ".join(sorted(change.marks)))
                return Outcome("noted", record.job_id, state.status)
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


def _marks(model: type[JobRecord], change: Plan, now: int) -> list[Any]:
    """The plan's marks (event_planning.MARKS): each written only if absent, or, for a newer
    attempt, all anew (the ones it does not carry removed)."""
    actions = []
    for name in MARKS:
        attribute = getattr(model, name)
        if name in change.marks:
            value = change.marks[name]
            value = now if value is None else value
            actions.append(attribute.set(value) if change.attempt is not None else attribute.set(attribute | value))
        elif change.attempt is not None:
            actions.append(attribute.remove())
    return actions


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
