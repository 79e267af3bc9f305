"""The reconciler: heals what lost events and killed Lambdas leave behind (a scheduled function).

Two things can leave a job that nothing will ever move again:

- **A start killed or left mid-way.** The API function died (its 29 s timeout) after the
  reservation and before SubmitJob, or a paid start answered before its lock was mined: the job
  stays at 1 with no Batch job, its orders used and its slot taken. After STUCK_AFTER (far longer
  than any start can live) such a job is followed if Batch knows a job of its name (SubmitJob
  went through, the record of it did not); else it is finished from its record
  (`JobService.finish_stored`: dispatched if its manifest is stored and its lock, if any, is
  mined; left while its lock is still on its way) or undone: ended with 31, its orders and slot
  given back, its lock cancelled (a lock never sent is never sent by the reconciler).
- **A lost event.** EventBridge delivers at least once, mostly: a job whose record has heard
  nothing for QUIET_AFTER is looked up in Batch (DescribeJobs, 100 ids a call), and each answer
  is applied as the Batch event it stands for (`JobEvents.handle`: the same planning and the
  same conditional writes), so a late or duplicated real event afterwards changes nothing.

- **Escrow payments left behind** (Ocean Node's paid jobs): `payments.heal()` finishes every
  open provider transaction and payment (locks to confirm, claims and cancels to send, stuck
  transactions to replace), then every lock still held is compared with its job: a job that
  ended (its terminal event or hook was lost, or a start abandoned above) is settled as its
  terminal hook would have (payments.settlement.settle_job), a job that does not exist is cancelled.
  A job locked but never dispatched (its start died after the lock) is dispatched above.

- **An algorithm past its deadline** (an image whose ENTRYPOINT ignored our command, so nothing
  in its task stops it): `compute.deadlines` terminates its Batch job; its report then adds
  `terminated`. The schedule runs every minute for this.

- **A registry login left behind** (compute.registry_auth): every per-job secret whose job ended
  (its terminal hook's delete was lost) or has no record (the start died between the secret and
  the record) is deleted; its report then adds `secretsDeleted`.

Candidates come from the sparse index of jobs that have not ended (models.ActiveJobs, one query
per environment, oldest update first), never from a scan of the table.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import PynamoDBException

from chalicelib.compute import status as st
from chalicelib.compute.batch_naming import job_name
from chalicelib.compute.deadlines import Deadlines
from chalicelib.compute.event_signals import BATCH_DETAIL_TYPE, BATCH_SOURCE
from chalicelib.compute.events import JobEvents
from chalicelib.compute.registry_auth import JobRegistrySecrets
from chalicelib.models import JobRecord

log = logging.getLogger(__name__)

STUCK_AFTER = 300  # s; a start lives at most the API function's 29 s
QUIET_AFTER = 600  # s without any change before Batch is asked
DESCRIBE_BATCH = 100  # DescribeJobs takes at most 100 ids
MAX_CANDIDATES = 1000  # per run; the rest wait for the next run (oldest first)


@dataclass
class Report:
    """What one run did, for the function's log and return value."""

    abandoned: list[str] = field(default_factory=list)
    dispatched: list[str] = field(default_factory=list)  # starts finished from their record
    described: int = 0
    applied: dict[str, str] = field(default_factory=dict)  # job id -> the event outcome's action
    errors: int = 0
    escrow: bool = False  # whether escrow payments were looked after (the two fields below)
    healed: int = 0  # open payments moved on by payments.heal()
    settled: dict[str, str] = field(default_factory=dict)  # job id -> its payment's status
    deadlines: bool = False  # whether deadlines were enforced (the field below)
    terminated: list[str] = field(default_factory=list)  # jobs stopped at their algorithm's deadline
    secrets: bool = False  # whether per-job registry secrets were swept (the field below)
    secrets_deleted: int = 0

    def as_dict(self) -> dict[str, Any]:
        done: dict[str, Any] = {"abandoned": self.abandoned, "dispatched": self.dispatched, "described": self.described,
                                "applied": self.applied, "errors": self.errors}
        if self.deadlines:
            done["terminated"] = self.terminated
        if self.secrets:
            done["secretsDeleted"] = self.secrets_deleted
        return {**done, "healed": self.healed, "settled": self.settled} if self.escrow else done


class Reconciler:
    """One run per schedule tick: `run()` never raises for one job's trouble (it counts it)."""

    def __init__(self, events: JobEvents, batch: Any, finish: Callable[[JobRecord, int], str],
                 environments: Iterable[tuple[str, str | Sequence[str]]], jobs: type[JobRecord] = JobRecord,
                 clock: Callable[[], float] = time.time, stuck_after: int = STUCK_AFTER,
                 quiet_after: int = QUIET_AFTER, payments: Any = None,
                 settle: Callable[[Any, JobRecord], None] | None = None, chain_ids: Iterable[int] = (),
                 deadlines: Deadlines | None = None, registry_secrets: JobRegistrySecrets | None = None) -> None:
        """`environments`: (environment id, its job queues: the sealed one, then the network
        queue if it has one); `finish(job, now)`: JobService.finish_stored ("dispatched",
        "abandoned", "waiting" or "busy"); `payments` (EscrowPayments, None
        without escrow) and `settle(payments, job)` (payments.settlement.settle_job) for the payments on
        `chain_ids`; `deadlines`: the algorithms' deadlines to enforce; `registry_secrets`: the
        per-job registry logins to sweep."""
        self._events = events
        self._batch = batch
        self._finish = finish
        self._queues = {environment: (queues,) if isinstance(queues, str) else tuple(queues)
                        for environment, queues in environments}
        self._jobs = jobs
        self._clock = clock
        self._stuck_after = stuck_after
        self._quiet_after = quiet_after
        self._payments = payments
        self._settle = settle
        self._chain_ids = list(chain_ids)
        self._deadlines = deadlines
        self._registry_secrets = registry_secrets

    def run(self) -> Report:
        report = Report()
        now = int(self._clock())
        followed: list[JobRecord] = []
        for job in self._candidates(now - min(self._stuck_after, self._quiet_after)):
            if job.batch_job_id:
                if int(job.updated_at or 0) <= now - self._quiet_after:
                    followed.append(job)
            elif int(job.date_created) <= now - self._stuck_after:
                self._undispatched(job, report, now)
        self._describe([job.batch_job_id for job in followed], report)
        if self._deadlines is not None:
            enforced = self._deadlines.enforce()
            report.deadlines, report.terminated = True, enforced.terminated
            report.errors += enforced.errors
        if self._payments is not None:
            self._escrow(report)
        if self._registry_secrets is not None:
            self._sweep_secrets(report)
        log.info("reconciler: %s", report.as_dict())
        return report

    def _sweep_secrets(self, report: Report) -> None:
        """Delete the registry logins no live job holds (compute.registry_auth)."""
        def job_ended(job_id: str) -> bool | None:
            try:
                return st.is_terminal(int(self._jobs.get(job_id, consistent_read=True).status))
            except self._jobs.DoesNotExist:
                return None

        report.secrets = True
        try:
            deleted, errors = self._registry_secrets.sweep(job_ended)  # type: ignore[union-attr]
        except (ClientError, BotoCoreError) as error:
            log.warning("reconciler: registry secrets not listed (%s)", _code(error))
            deleted, errors = 0, 1
        report.secrets_deleted += deleted
        report.errors += errors

    def _escrow(self, report: Report) -> None:
        """Finish open payments, then settle the held locks whose job ended or is gone."""
        from chalicelib.errors import ServiceUnavailable

        report.escrow = True
        try:
            report.healed = len(self._payments.heal(self._chain_ids))
        except ServiceUnavailable as error:
            log.error("reconciler: escrow heal failed (%s)", error)
            report.errors += 1
        for chain_id in self._chain_ids:
            try:
                held = self._payments.held(chain_id)
            except ServiceUnavailable as error:
                log.error("reconciler: held payments of chain %s unreadable (%s)", chain_id, error)
                report.errors += 1
                continue
            for payment in held:
                try:
                    self._settle_held(payment.job_id, report)
                except Exception as error:  # noqa: BLE001 - one payment must not stop the others
                    log.error("job %s: escrow settlement failed (%s)", payment.job_id, type(error).__name__)
                    report.errors += 1

    def _settle_held(self, job_id: str, report: Report) -> None:
        try:
            job = self._jobs.get(job_id, consistent_read=True)
        except self._jobs.DoesNotExist:
            report.settled[job_id] = self._payments.cancel(job_id, "the job does not exist").status
            return
        if not st.is_terminal(int(job.status)):
            return  # still running: its terminal write settles it
        if self._settle is not None:
            self._settle(self._payments, job)
            settled = self._payments.get(job_id)
            report.settled[job_id] = settled.status if settled is not None else "none"

    def _candidates(self, updated_before: int) -> Iterator[JobRecord]:
        """Jobs that have not ended and did not change since `updated_before`, oldest first."""
        count = 0
        for environment in sorted(self._queues):
            try:
                for job in self._jobs.active.query(environment, self._jobs.updated_at <= updated_before):
                    if st.is_terminal(int(job.status)):
                        continue  # the index lags the table a little
                    yield job
                    count += 1
                    if count >= MAX_CANDIDATES:
                        return
            except PynamoDBException as error:
                log.error("reconciler: active jobs of %s unreadable (%s)", environment, type(error).__name__)

    def _undispatched(self, job: JobRecord, report: Report, now: int) -> None:
        """A job at 1 without a Batch job: follow the Batch job of its name if there is one,
        else finish its start from its record, or end it and give its order and slot back."""
        from chalicelib.errors import ServiceUnavailable

        try:
            found = self._batch_jobs_named(job)
        except (BotoCoreError, ClientError) as error:
            log.error("job %s: Batch could not be asked about it (%s)", job.job_id, _code(error))
            report.errors += 1
            return
        if found:
            self._describe(found, report)
            return
        if int(job.status) != st.WARMING_UP:
            log.warning("job %s: at %s with no Batch job known; left alone", job.job_id, job.status)
            return
        try:
            outcome = self._finish(job, now)
        except (PynamoDBException, ServiceUnavailable) as error:
            log.error("job %s: could not finish or undo its start (%s)", job.job_id, type(error).__name__)
            report.errors += 1
            return
        if outcome == "abandoned":
            report.abandoned.append(job.job_id)
        elif outcome == "dispatched":
            report.dispatched.append(job.job_id)

    def _batch_jobs_named(self, job: JobRecord) -> list[str]:
        """Batch job ids named after this job in its environment's queues (any status): the
        record does not say whether the dispatcher sent it to the network queue."""
        found: list[str] = []
        for queue in self._queues.get(job.environment, ()):
            answer = self._batch.list_jobs(jobQueue=queue, filters=[{"name": "JOB_NAME", "values": [job_name(job.job_id)]}])
            found += [summary["jobId"] for summary in answer.get("jobSummaryList", [])]
        return found

    def _describe(self, batch_job_ids: Sequence[str], report: Report) -> None:
        """Apply what Batch says about these jobs as the events it would have sent."""
        for chunk in _chunks(list(dict.fromkeys(batch_job_ids)), DESCRIBE_BATCH):
            try:
                described = self._batch.describe_jobs(jobs=chunk).get("jobs", [])
            except (BotoCoreError, ClientError) as error:
                log.error("reconciler: DescribeJobs failed (%s)", _code(error))
                report.errors += 1
                continue
            report.described += len(described)
            unknown = set(chunk) - {detail.get("jobId") for detail in described}
            if unknown:
                # Batch forgets jobs some days after they end; such a record needs an operator.
                log.warning("reconciler: Batch knows none of %s", sorted(unknown))
            for detail in described:
                outcome = self._events.handle(batch_event(detail))
                if outcome.job_id:
                    report.applied[outcome.job_id] = outcome.action
                if outcome.action == "error":
                    report.errors += 1


def batch_event(detail: dict[str, Any]) -> dict[str, Any]:
    """The "Batch Job State Change" event for a DescribeJobs job: Batch's events carry exactly
    that object as their detail."""
    return {"version": "0", "source": BATCH_SOURCE, "detail-type": BATCH_DETAIL_TYPE, "detail": detail}


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _code(error: Exception) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "ClientError"))
    return type(error).__name__


# -- Lambda glue ---------------------------------------------------------------------------

def build_reconciler() -> Reconciler:
    """The reconciler of this deployment: its job events, Batch client, start undo, queues."""
    from chalicelib import aws, services
    from chalicelib.compute.environments import environments

    escrow: dict[str, Any] = {}
    if services.escrow_enabled():
        from chalicelib.payments.settlement import settle_job
        from chalicelib.payments.setup import escrow_addresses

        escrow = {"payments": services.payments(), "settle": settle_job, "chain_ids": sorted(escrow_addresses())}
    configured = environments().values()
    return Reconciler(services.job_events(), aws.client("batch"), services.job_service().finish_stored,
                      [(e.id, [q for q in (e.job_queue, e.network_job_queue) if q]) for e in configured],
                      deadlines=Deadlines(aws.client("batch"), {e.id: int(e.max_job_duration) for e in configured}),
                      registry_secrets=services.registry_secrets(), **escrow)
