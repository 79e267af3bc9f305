"""The job service: starting, finding, stopping and deleting compute jobs, and their results.

Starting is one DynamoDB transaction (take an environment slot, mark every order used, create
the job record), then the inputs manifest to S3, then one SubmitJob. If anything after the
transaction fails, the start is undone in one more transaction (slot back, orders released, job
ended with a failure status), so a failed dispatch never consumes an order nor leaves a job
without a terminal state. The transactions themselves are `compute.job_reservations`; what the
owner is shown of a job is `compute.job_status`.
"""
from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Protocol, Sequence

from pynamodb.exceptions import DoesNotExist, PynamoDBException, TransactWriteError

from chalicelib import budget
from chalicelib.budget import Deadline
from chalicelib.compute import status as st
from chalicelib.compute import transitions
from chalicelib.compute.container_rules import AlgorithmContainer
from chalicelib.compute.dispatch import Dispatcher
from chalicelib.compute.environments import Environment
from chalicelib.compute.job_options import JobOptions, may_read
from chalicelib.compute.job_reservations import (
    DISPATCH_FAILED,
    UNAVAILABLE,
    JobReservations,
    Order,
    Slot,
    unique_orders,
)
from chalicelib.compute.job_status import STATUS_ATTRIBUTES, JobPage, page_cursor, status_page
from chalicelib.compute.paging import PAGE_JOBS, Cursor
from chalicelib.compute.plan import ComputePlan
from chalicelib.compute.usage import UsageCounter
from chalicelib.errors import BusinessError, NotFound, ServiceUnavailable, ValidationError
from chalicelib.models import JobRecord, OrderUse, owner_document
from chalicelib.observability import jobs as job_report
from chalicelib.results import JobObjects

log = logging.getLogger(__name__)

STOPPED_BY_OWNER = "Job stopped by its owner"


class DispatchGate(Protocol):
    """What must hold between a start's reservation and its dispatch (an escrow lock mined).

    `check()` runs before anything is reserved and raises to refuse; `before_dispatch(job)` runs
    after the reservation and raises to refuse (the start is undone; the error's `job_reason`,
    if any, becomes the job's terminationDetails reason); `cancel(job, reason)` undoes what it
    did when the dispatch fails afterwards. `seconds_needed`: its time on top of the start's."""

    seconds_needed: float

    def check(self) -> None: ...

    def before_dispatch(self, job: JobRecord) -> None: ...

    def cancel(self, job: JobRecord, reason: str) -> None: ...


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
    ):
        """`dispatcher` is a factory: a stop of a finished job never builds the Batch client.
        `record_retention`: seconds a record outlives its environment's storageExpiry.
        `on_terminal(job)`: told once after a stop or delete of this service ended a job
        (the escrow claim); the event handler has its own hook for the ends it writes."""
        self._objects = objects
        self._dispatcher = dispatcher
        self._jobs = jobs
        self._reservations = JobReservations(usage or UsageCounter(), jobs, orders, clock)
        self._clock = clock
        self._new_id = new_id
        self._record_retention = record_retention
        self._on_terminal = on_terminal

    # -- start -----------------------------------------------------------------------------

    def start(self, plan: ComputePlan, owner: str, orders: Sequence[Order], timeout: int | None = None,
              slots: Sequence[Slot] = (), *, deadline: Deadline | None = None,
              gate: DispatchGate | None = None, options: JobOptions = JobOptions()) -> JobRecord:
        """Reserve, record, [gate], write the manifest, dispatch; undo everything but the record
        on failure. `slots`: further counters the job holds (free compute starts with no order
        but these). `gate`: what must hold before the dispatch (an escrow lock, payments.paid_start).
        `options`: what the record keeps beside the inputs (metadata, viewers).

        Nothing is reserved unless `deadline` leaves START_RESERVE_SECONDS: a Lambda killed
        between the reservation and SubmitJob would leave the order used and the slot taken
        until the reconciler (compute.reconcile) gives them back."""
        if deadline is not None:
            deadline.require(budget.START_RESERVE_SECONDS + (gate.seconds_needed if gate else 0))
        container = AlgorithmContainer.from_metadata(plan.algorithm.container)  # refused: nothing exists yet
        if gate is not None:
            gate.check()
        job = self._new_record(plan, owner, orders, options)
        if slots:
            job.usage_keys = [slot.key for slot in slots]
        self._reservations.reserve(job, plan.environment, orders, slots)
        gated = False
        try:
            if gate is not None:
                gate.before_dispatch(job)
                gated = True
            manifest_uri = self._objects.write_manifest(job.job_id, self._manifest(job, plan))
            batch_job_id = self._dispatcher().submit(
                job.job_id, plan.environment, manifest_uri, container, timeout,
                dids=[dataset.did for dataset in plan.datasets], algorithm_did=plan.algorithm.did,
                allow_network=plan.allow_network,
            )
        except Exception as error:
            reason = getattr(error, "job_reason", None) or DISPATCH_FAILED
            self._undo(job, plan.environment, orders, error, slots, reason=reason)
            if gated and gate is not None:
                gate.cancel(job, reason)
            if isinstance(error, (ServiceUnavailable, BusinessError, ValidationError)):
                raise
            raise ServiceUnavailable(DISPATCH_FAILED) from error
        self._record_dispatch(job, batch_job_id)
        return job

    def order_used(self, chain_id: int, tx_id: str) -> bool:
        """Whether this order already started a job: initializeCompute must then ask for a
        reuseOrder (a new transferTxId) instead of offering the order as is."""
        return self._reservations.order_used(chain_id, tx_id)

    def _new_record(self, plan: ComputePlan, owner: str, orders: Sequence[Order], options: JobOptions) -> JobRecord:
        now = int(self._clock())
        environment = plan.environment
        main = plan.datasets[0]
        return self._jobs(
            self._new_id(),
            owner=owner,
            document_id=main.did,
            date_created=now,
            status=st.WARMING_UP,
            status_text=st.status_text(st.WARMING_UP),
            environment=environment.id,
            chain_id=plan.chain_id,
            agreement_id=main.transfer_tx_id or "",
            input_dids=[dataset.did for dataset in plan.datasets],
            algo_did=plan.algorithm.did,
            orders=[order.key for order in orders],
            updated_at=now,
            active_environment=environment.id,
            owner_document=owner_document(owner, main.did),
            metadata=options.metadata,
            viewers=list(options.viewers) or None,
            # the latest a job can end, then its results' storage, then the operator's retention
            expires_at=datetime.fromtimestamp(
                now + environment.max_job_duration + environment.storage_expiry + self._record_retention, timezone.utc),
        )

    def _undo(self, job: JobRecord, environment: Environment, orders: Sequence[Order], cause: Exception,
              slots: Sequence[Slot] = (), reason: str = DISPATCH_FAILED) -> None:
        log.warning("job %s: start failed (%s); releasing its orders and slot", job.job_id, type(cause).__name__)
        try:
            self._reservations.release(job, environment.id, [order.key for order in unique_orders(orders)],
                                       slot_keys=[slot.key for slot in slots], reason=reason)
        except PynamoDBException:
            log.error("job %s: could not undo its start; orders %s stay reserved", job.job_id, job.orders)
        self._delete_manifest(job)

    def abandon(self, job: JobRecord) -> bool:
        """Undo a start that never reached Batch (its Lambda died between the reservation and
        SubmitJob): the undo of a failed start, if the job is still at 1 with no Batch job.
        False if it moved meanwhile; PynamoDBException if the store failed (try again later)."""
        try:
            self._reservations.release(job, job.environment, list(dict.fromkeys(job.orders or [])),
                                       self._jobs.batch_job_id.does_not_exist(), slot_keys=list(job.usage_keys or []))
        except TransactWriteError as error:
            if any(getattr(reason, "code", None) == "ConditionalCheckFailed" for reason in error.cancellation_reasons or []):
                return False
            raise
        log.warning("job %s: start abandoned before dispatch; orders %s and its slot given back", job.job_id, job.orders)
        self._delete_manifest(job)
        return True

    def _delete_manifest(self, job: JobRecord) -> None:
        try:
            self._objects.delete_job(job.job_id)
        except ServiceUnavailable:
            log.error("job %s: could not delete its manifest", job.job_id)

    def _record_dispatch(self, job: JobRecord, batch_job_id: str) -> None:
        try:
            job.update(actions=[self._jobs.batch_job_id.set(self._jobs.batch_job_id | batch_job_id)])
        except PynamoDBException:
            # The Batch job runs and its events still find the record by our job id.
            log.error("job %s: Batch job %s submitted but not recorded", job.job_id, batch_job_id)
        job.batch_job_id = batch_job_id

    def _manifest(self, job: JobRecord, plan: ComputePlan) -> dict[str, Any]:
        """The inputs manifest (docs/internals.md). `algorithm.checksums` are the sha256 of each
        algorithm file as the provider downloaded it at start: the runner places only files that
        still match them, so a server cannot swap the approved algorithm after the start."""
        return {
            "jobId": job.job_id,
            "owner": job.owner,
            "bucket": self._objects.bucket,
            "prefix": f"jobs/{job.job_id}/",
            "inputs": [dataset.manifest() for dataset in plan.datasets],
            "algorithm": {**plan.algorithm.manifest(), "checksums": list(plan.algorithm.checksums)},
        }

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
        `reason`: what the job's terminationDetails say (the operator's console gives its own)."""
        page = self._require(owner, job_id, document_id, after)
        for job in page.jobs:
            if not st.is_terminal(int(job.status)):
                self._terminate(job, reason)
                self._move(job, st.STOPPED, reason=reason)
        return page

    def delete(self, owner: str, job_id: str | None, document_id: str | None, after: Cursor | None = None) -> JobPage:
        page = self._require(owner, job_id, document_id, after)
        for job in page.jobs:
            if not st.is_terminal(int(job.status)):
                self._terminate(job)
            self._objects.delete_job(job.job_id)
            self._move(job, st.DELETED)
        return page

    def _require(self, owner: str, job_id: str | None, document_id: str | None, after: Cursor | None) -> JobPage:
        page = self.find(owner, job_id, document_id, after)
        if not page.jobs and after is None:
            raise NotFound("Job not found")
        return page

    def _terminate(self, job: JobRecord, reason: str = STOPPED_BY_OWNER) -> None:
        if job.batch_job_id:
            self._dispatcher().terminate(job.batch_job_id, reason)

    def _move(self, job: JobRecord, target: int, attempts: int = 3, reason: str = STOPPED_BY_OWNER) -> None:
        """Move to `target` conditioned on the exact status read; the write that ends a running
        job gives its slot back in the same transaction (compute.transitions)."""
        for _ in range(attempts):
            before = int(job.status)
            if not st.can_move(before, target):
                return
            now = int(self._clock())
            actions = [
                self._jobs.status.set(target),
                self._jobs.status_text.set(st.status_text(target)),
                self._jobs.date_finished.set(self._jobs.date_finished | now),
                self._jobs.updated_at.set(now),
            ]
            if target == st.STOPPED:
                actions.append(self._jobs.termination_details.set({"exitCode": None, "reason": reason}))
            try:
                ends_job = not st.is_terminal(before)
                transitions.write(job, actions, self._jobs.status == before, ends_job=ends_job)
                if ends_job:
                    job.refresh(consistent_read=True)  # the status object shows the new state
                    job_report.moved(job, before, target)
                    self._ended(job)
                return
            except transitions.ConditionFailed:
                job.refresh(consistent_read=True)
            except PynamoDBException as error:
                raise ServiceUnavailable(UNAVAILABLE) from error
        raise ServiceUnavailable("The job changed concurrently; try again")

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
        results = job.results or []
        if not results:
            raise BusinessError("Job has no results yet." if not st.is_terminal(int(job.status)) else "Job has no results.")
        match = [item for position, item in enumerate(results) if int(item.get("index", position)) == index]
        if not match:
            raise ValidationError.field("index", f"no result with index {index}; this job has {len(results)}")
        return self._objects.presigned_download(match[0]["key"], match[0].get("filename", "result"))

    def status_objects(self, page: JobPage, with_urls: bool) -> tuple[list[dict[str, Any]], Cursor | None]:
        """The page's status objects within MAX_ANSWER_BYTES of JSON, and where the answer continues
        (compute.job_status.status_page); URLs only when `with_urls` (an authenticated owner)."""
        return status_page(page, self._objects if with_urls else None)
