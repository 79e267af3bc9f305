"""The job service: starting (`compute.job_starts`), finding, stopping and deleting compute jobs,
and their results.

Starts are idempotent per order and finishable from their record (`compute.job_starts`, with
`compute.job_dispatch` for the conditional SubmitJob); the transactions themselves are
`compute.job_reservations`; what the owner is shown of a job is `compute.job_status`. A stop or
delete settles races: it answers the state the job settled on, never "changed concurrently", and
nothing is dispatched after it.
"""
from __future__ import annotations

import logging
import random
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from pynamodb.exceptions import DoesNotExist, PynamoDBException, TransactWriteError

from chalicelib.budget import Deadline
from chalicelib.compute import status as st
from chalicelib.compute import transitions
from chalicelib.compute.dispatch import Dispatcher
from chalicelib.compute.environments import Environment
from chalicelib.compute.environments import environments as configured_environments
from chalicelib.compute.job_options import JobOptions, may_read
from chalicelib.compute.job_reservations import UNAVAILABLE, JobReservations, Order, Slot
from chalicelib.compute.job_starts import DispatchGate, JobStarts, ResumeGate
from chalicelib.compute.job_status import STATUS_ATTRIBUTES, JobPage, page_cursor, status_page
from chalicelib.compute.paging import PAGE_JOBS, Cursor
from chalicelib.compute.plan import ComputePlan
from chalicelib.compute.usage import UsageCounter
from chalicelib.errors import BusinessError, NotFound, ServiceUnavailable, ValidationError
from chalicelib.models import JobRecord, OrderUse, owner_document
from chalicelib.observability import jobs as job_report
from chalicelib.owner import release
from chalicelib.results import JobObjects

if TYPE_CHECKING:
    from chalicelib.compute.registry_auth import JobRegistrySecrets
    from chalicelib.owner.audit import AuditLog
    from chalicelib.owner.release import ReleasePolicy

__all__ = ["DispatchGate", "JobService", "ResumeGate"]

log = logging.getLogger(__name__)

STOPPED_BY_OWNER = "Job stopped by its owner"
STOP_ATTEMPTS = 20  # a job's status moves forward at most ~12 times: a stop always settles within this
CONFLICT_RETRIES = 4  # TransactionConflict (another transaction on the item in flight): retried


class JobService:
    def __init__(
        self,
        objects: JobObjects,
        dispatcher: Callable[[], Dispatcher],
        usage: UsageCounter | None = None,
        jobs: type[JobRecord] = JobRecord,
        orders: type[OrderUse] = OrderUse,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        record_retention: int = 30 * 86400,
        on_terminal: Callable[[JobRecord], None] | None = None,
        resume_gate: Callable[[JobRecord], ResumeGate | None] | None = None,
        environments: Callable[[], Mapping[str, Environment]] = configured_environments,
        audit: "AuditLog | None" = None,
        releases: "ReleasePolicy | None" = None,
        registry_secrets: "JobRegistrySecrets | None" = None,
    ):
        """`dispatcher` is a factory: a stop of a finished job never builds the Batch client.
        `record_retention`: seconds a record outlives its environment's storageExpiry.
        `on_terminal(job)`: told once after a stop or delete of this service ended a job
        (the escrow claim); the event handler has its own hook for the ends it writes.
        `resume_gate(job)`: the gate of a recorded start (its escrow payment), None for a job
        without one.
        `audit`: the publishers' audit log whose entries a start writes in its transaction
        (chalicelib.owner.audit); `releases`: which datasets hold a job's results for their
        owner (chalicelib.owner.release); `registry_secrets`: where a start keeps the consumer's
        registry login while its job exists (compute.registry_auth; None: such starts refused)."""
        self._objects = objects
        self._dispatcher = dispatcher
        self._jobs = jobs
        self._reservations = JobReservations(usage or UsageCounter(), jobs, orders, clock)
        self._starts = JobStarts(objects, dispatcher, self._reservations, jobs, environments, clock=clock,
                                 new_id=new_id, record_retention=record_retention, resume_gate=resume_gate,
                                 audit=audit, releases=releases, registry_secrets=registry_secrets)
        self._clock = clock
        self._on_terminal = on_terminal

    # -- start -----------------------------------------------------------------------------

    def start(self, plan: ComputePlan, owner: str, orders: Sequence[Order], timeout: int | None = None,
              slots: Sequence[Slot] = (), *, deadline: Deadline | None = None,
              gate: DispatchGate | None = None, options: JobOptions = JobOptions()) -> JobRecord:
        """Start a job, or answer (and finish) the one the same owner's same orders made
        (`compute.job_starts.JobStarts.start`). `options`: what the record keeps beside the
        inputs (metadata, viewers)."""
        return self._starts.start(plan, owner, orders, timeout, slots, deadline=deadline, gate=gate, options=options)

    def same_start(self, plan: ComputePlan, owner: str, orders: Sequence[Order],
                   deadline: Deadline | None = None) -> JobRecord | None:
        """The job these orders made for `owner` with exactly these orders, finished now if it
        was left half made; None otherwise (`JobStarts.same_start`)."""
        return self._starts.same_start(plan, owner, orders, deadline)

    def finish_stored(self, job: JobRecord, now: float | None = None) -> str:
        """The reconciler's, for a job at 1 with no Batch job of its name: "dispatched",
        "waiting", "abandoned" or "busy" (`JobStarts.finish_stored`)."""
        return self._starts.finish_stored(job, now)

    def abandon(self, job: JobRecord) -> bool:
        """Undo a start that never reached Batch, if still at 1 with no Batch job (`JobStarts.abandon`)."""
        return self._starts.abandon(job)

    @property
    def objects(self) -> JobObjects:
        """The jobs' S3 objects (the data owner's review downloads and refusals use them too)."""
        return self._objects

    def order_used(self, chain_id: int, tx_id: str) -> bool:
        """Whether this order already started a job: initializeCompute must then ask for a
        reuseOrder (a new transferTxId) instead of offering the order as is."""
        return self._reservations.order_used(chain_id, tx_id)

    # -- find, stop, delete ----------------------------------------------------------------

    def find(self, owner: str, job_id: str | None = None, document_id: str | None = None,
             after: Cursor | None = None, limit: int = PAGE_JOBS, for_status: bool = False,
             viewer: bool = False) -> JobPage:
        """The owner's jobs matching the filters, newest first, at most `limit`; another
        owner's job is not found. Each query reads only the owner's partition of an index.
        `viewer`: a job asked for by its id is found for one of its additionalViewers too
        (reading it; never to stop or delete it).
        `for_status`: a listing reads only what status objects show (parsing whole records,
        orders and all, was most of a page's time)."""
        try:
            if job_id:
                job = self._jobs.get(job_id, consistent_read=True)
                reader = may_read(job.owner, job.viewers, owner) if viewer else job.owner == owner
                found = reader and (not document_id or job.document_id == document_id)
                return JobPage([job] if found else [])
            if document_id:
                index, key, attribute = self._jobs.by_owner_document, owner_document(owner, document_id), "ownerDocument"
            else:
                index, key, attribute = self._jobs.by_owner, owner, "owner"
            results = index.query(key, scan_index_forward=False, limit=limit, page_size=limit,
                                  last_evaluated_key=after.start_key(attribute, key) if after else None,
                                  attributes_to_get=STATUS_ATTRIBUTES if for_status else None)
            jobs = list(results)
            more = results.last_evaluated_key is not None
        except DoesNotExist:
            return JobPage([])
        except PynamoDBException as error:
            raise ServiceUnavailable(UNAVAILABLE) from error
        jobs = [job for job in jobs if job.owner == owner]
        return JobPage(jobs, page_cursor(jobs[-1]) if more and jobs else None)

    def find_one(self, owner: str, job_id: str, viewer: bool = False) -> JobRecord:
        jobs = self.find(owner, job_id=job_id, viewer=viewer).jobs
        if not jobs:
            raise NotFound("Job not found")
        return jobs[0]

    def stop(self, owner: str, job_id: str | None, document_id: str | None, after: Cursor | None = None, *,
             reason: str = STOPPED_BY_OWNER) -> JobPage:
        """Stop one page of the owner's matching jobs (see find): a request stays within its time.
        Each answer is the job's settled state: stopped, or the end it reached first. `reason`:
        what the job's terminationDetails say (the operator's console gives its own)."""
        page = self._require(owner, job_id, document_id, after)
        for job in page.jobs:
            self._move(job, st.STOPPED, reason=reason)
        return page

    def delete(self, owner: str, job_id: str | None, document_id: str | None, after: Cursor | None = None) -> JobPage:
        page = self._require(owner, job_id, document_id, after)
        for job in page.jobs:
            terminated = set()
            if job.batch_job_id and not st.is_terminal(int(job.status)):
                self._terminate(job)  # before its objects go
                terminated.add(job.batch_job_id)
            self._objects.delete_job(job.job_id)
            self._move(job, st.DELETED, terminated)
        return page

    def _require(self, owner: str, job_id: str | None, document_id: str | None, after: Cursor | None) -> JobPage:
        page = self.find(owner, job_id, document_id, after)
        if not page.jobs and after is None:
            raise NotFound("Job not found")
        return page

    def _terminate(self, job: JobRecord, reason: str = STOPPED_BY_OWNER) -> None:
        if job.batch_job_id:
            self._dispatcher().terminate(job.batch_job_id, reason)

    def _move(self, job: JobRecord, target: int, terminated: set[str] | None = None, *,
              reason: str = STOPPED_BY_OWNER) -> None:
        """Move to `target` conditioned on the exact status and Batch job read (its Batch job
        terminated first); the write that ends a running job gives its slot back in the same
        transaction (compute.transitions). A lost race re-reads and decides again: the status
        only moves forward, so this settles on the target or on the end the job reached first.
        A job at 1 that a start is dispatching meanwhile is either stopped before its SubmitJob
        or has its Batch job seen here (or terminated by the start: compute.job_starts)."""
        terminated = set() if terminated is None else terminated
        conflicts = 0
        for _ in range(STOP_ATTEMPTS):
            before = int(job.status)
            if not st.can_move(before, target):
                return
            if job.batch_job_id and job.batch_job_id not in terminated and not st.is_terminal(before):
                self._terminate(job, reason)
                terminated.add(job.batch_job_id)
            now = int(self._clock())
            actions = [
                self._jobs.status.set(target),
                self._jobs.status_text.set(st.status_text(target)),
                self._jobs.date_finished.set(self._jobs.date_finished | now),
                self._jobs.updated_at.set(now),
            ]
            if target == st.STOPPED:
                actions.append(self._jobs.termination_details.set({"exitCode": None, "reason": reason}))
            batch = self._jobs.batch_job_id
            condition = (self._jobs.status == before) & (
                batch == job.batch_job_id if job.batch_job_id else batch.does_not_exist())
            try:
                ends_job = not st.is_terminal(before)
                transitions.write(job, actions, condition, ends_job=ends_job)
                if ends_job:
                    job.refresh(consistent_read=True)  # the status object shows the new state
                    job_report.moved(job, before, target)
                    self._ended(job)
                else:
                    job.refresh(consistent_read=True)
                return
            except transitions.ConditionFailed:
                job.refresh(consistent_read=True)
            except TransactWriteError as error:
                conflicts += 1
                if getattr(error, "cause_response_code", None) != "TransactionConflictException" or conflicts > CONFLICT_RETRIES:
                    raise ServiceUnavailable(UNAVAILABLE) from error
                time.sleep(random.uniform(0, 0.05 * conflicts))  # another transaction on the job is in flight
                job.refresh(consistent_read=True)
            except PynamoDBException as error:
                raise ServiceUnavailable(UNAVAILABLE) from error
        log.warning("job %s: still moving after %d attempts; answering its state", job.job_id, STOP_ATTEMPTS)

    def _ended(self, job: JobRecord) -> None:
        if self._on_terminal is None:
            return
        try:
            self._on_terminal(job)
        except Exception as error:  # noqa: BLE001 - the job ended; the reconciler settles what this missed
            log.error("job %s: terminal hook failed (%s)", job.job_id, type(error).__name__)

    # -- results ---------------------------------------------------------------------------

    def result_url(self, reader: str, job_id: str, index: int) -> str:
        """For the job's owner or one of its additionalViewers."""
        job = self.find_one(reader, job_id, viewer=True)
        if int(job.status) == st.DELETED:
            raise BusinessError("Job was deleted; its results are gone.")
        release.require_released(job, release.storage_expiry(job))  # held for its data owner
        results = job.results or []
        if not results:
            raise BusinessError("Job has no results yet." if not st.is_terminal(int(job.status)) else "Job has no results.")
        match = [item for position, item in enumerate(results) if int(item.get("index", position)) == index]
        if not match:
            raise ValidationError.field("index", f"no result with index {index}; this job has {len(results)}")
        return self._objects.presigned_download(match[0]["key"], match[0].get("filename", "result"),
                                                match[0].get("versionId"))

    def status_objects(self, page: JobPage, with_urls: bool) -> tuple[list[dict[str, Any]], Cursor | None]:
        """The page's status objects within MAX_ANSWER_BYTES of JSON, and where the answer continues
        (compute.job_status.status_page); URLs only when `with_urls` (an authenticated owner)."""
        return status_page(page, self._objects if with_urls else None)
