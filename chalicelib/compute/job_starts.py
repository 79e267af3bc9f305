"""Starting a job, and finishing a start that was left half made (`JobStarts`; `JobService.start`
is its entry).

Starting is one DynamoDB transaction (take an environment slot, mark every order used, create
the job record with what its dispatch needs, and a gate's own items: an escrow payment and the
payer's reservation), then the inputs manifest to S3, then the gate (an escrow lock mined), then
one SubmitJob (`compute.job_dispatch`: conditional on the job still being at 1). If anything
after the transaction is refused or fails for good, the start is undone in one more transaction
(slot back, orders released, job ended with a failure status), so a failed start never consumes
an order nor leaves a job without a terminal state.

Starts are idempotent per order: the same owner starting with the same orders again gets the job
those orders made, finished if it was left half made (a Lambda killed mid-start, a store that
stalled, a lock not mined within the request), never `order_already_used`. A job left at 1 is
finished, or undone, by the reconciler (`finish_stored`).
"""
from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

from pynamodb.exceptions import PynamoDBException, TransactWriteError

from chalicelib import budget
from chalicelib.budget import Deadline
from chalicelib.compute import status as st
from chalicelib.compute.container_rules import AlgorithmContainer
from chalicelib.compute.job_options import JobOptions
from chalicelib.compute.dispatch import Dispatcher
from chalicelib.compute.environments import Environment
from chalicelib.compute.job_dispatch import DispatchSpec, StartDispatch, start_fingerprint
from chalicelib.compute.job_placement import attempt_seconds
from chalicelib.compute.job_reservations import (
    DISPATCH_FAILED,
    UNAVAILABLE,
    GateContended,
    JobReservations,
    Order,
    OrderAlreadyUsed,
    Slot,
    unique_orders,
)
from chalicelib.compute.plan import ComputePlan
from chalicelib.compute.registry_auth import FIELD as REGISTRY_AUTH_FIELD
from chalicelib.compute.registry_auth import JobRegistrySecrets
from chalicelib.compute.provenance import input_services, provenance
from chalicelib.errors import BusinessError, ProviderError, ServiceUnavailable, ValidationError
from chalicelib.job_key import new_job_key
from chalicelib.models import JobRecord, owner_document
from chalicelib.results import JobObjects

if TYPE_CHECKING:
    from chalicelib.owner.audit import AuditLog
    from chalicelib.owner.release import ReleasePolicy

log = logging.getLogger(__name__)

RESERVE_ATTEMPTS = 8  # a start reads again when a concurrent start of its orders or its payer won
UNFINISHED = "The start could not be finished now; send the same start again to finish it"
LOST = "the start never stored what its dispatch needs"


class ResumeGate(Protocol):
    """The gate of a recorded start (its escrow payment), for a retry or the reconciler.

    `resume(job, wait, send)`: True to dispatch now, False to leave the job at 1 (its lock not
    mined yet), or raises with a `job_reason` when the start can never finish (its lock failed,
    or, with `send` False, was never sent): the start is then undone. `cancel(job, reason)`
    gives back what the gate holds when the start fails or is undone."""

    def resume(self, job: JobRecord, wait: float, send: bool) -> bool: ...

    def cancel(self, job: JobRecord, reason: str) -> None: ...


class DispatchGate(ResumeGate, Protocol):
    """What must hold between a start's reservation and its dispatch (an escrow lock mined).

    `check()` runs before the reservation (reads; raises to refuse: nothing is written);
    `add_to(transaction, job)` puts the gate's items in the start's transaction and says how many
    puts and updates it added (a failed condition of theirs makes the start read again);
    `before_dispatch(job)` runs after the manifest: True to dispatch now, False to leave the job
    at 1 for a retry or the reconciler, or raises (with `job_reason`: the start is undone).
    `seconds_needed`: its time on top of the start's."""

    seconds_needed: float

    def check(self) -> None: ...

    def add_to(self, transaction: Any, job: JobRecord) -> tuple[int, int]: ...

    def before_dispatch(self, job: JobRecord) -> bool: ...


class StartLost(BusinessError):
    """A recorded start that cannot be finished from its record (no dispatch spec or manifest)."""

    def __init__(self) -> None:
        super().__init__("This start was interrupted before it stored its inputs and is now ended; start again")
        self.job_reason = LOST



class JobStarts:
    """Starts jobs and finishes half-made starts; the JobService's start side."""

    def __init__(self, objects: JobObjects, dispatcher: Callable[[], Dispatcher], reservations: JobReservations,
                 jobs: type[JobRecord], environments: Callable[[], Mapping[str, Environment]], *,
                 clock: Callable[[], float] = time.time, new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
                 record_retention: int = 30 * 86400,
                 resume_gate: Callable[[JobRecord], "ResumeGate | None"] | None = None,
                 audit: "AuditLog | None" = None, releases: "ReleasePolicy | None" = None,
                 registry_secrets: JobRegistrySecrets | None = None) -> None:
        self._objects = objects
        self._registry_secrets = registry_secrets
        self._reservations = reservations
        self._jobs = jobs
        self._dispatch = StartDispatch(jobs, dispatcher, environments, clock)
        self._clock = clock
        self._new_id = new_id
        self._record_retention = record_retention
        self._resume_gate = resume_gate
        self._audit = audit
        self._releases = releases

    def start(self, plan: ComputePlan, owner: str, orders: Sequence[Order], timeout: int | None = None,
              slots: Sequence[Slot] = (), *, deadline: Deadline | None = None,
              gate: DispatchGate | None = None, options: JobOptions = JobOptions()) -> JobRecord:
        """Reserve and record, write the manifest, [gate], dispatch; undo everything but the
        record when the start is refused or fails for good. `slots`: further counters the job
        holds (free compute starts with no order but these). `gate`: what must hold before the
        dispatch (an escrow lock, payments.paid_start). The same owner with the same orders
        again: the job those orders made (finished now if it was left half made). `options`:
        what the record keeps beside the inputs (metadata, viewers; compute.job_options).

        Nothing is reserved unless `deadline` leaves START_RESERVE_SECONDS: a Lambda killed
        between the reservation and SubmitJob leaves a job at 1 that the consumer's retry or
        the reconciler (compute.reconcile) finishes or undoes."""
        if deadline is not None:
            deadline.require(budget.START_RESERVE_SECONDS + (gate.seconds_needed if gate else 0))
        AlgorithmContainer.from_metadata(plan.algorithm.container)  # refused: nothing exists yet
        key = start_fingerprint(plan)
        if options.registry_login is not None and self._registry_secrets is None:
            raise ValidationError.field(REGISTRY_AUTH_FIELD, "not supported: this compute backend pulls no image")
        job_id, secret = self._new_id(), ""  # one id for every attempt: its secret is made once
        try:
            for _ in range(RESERVE_ATTEMPTS):
                existing = self._reservations.same_start(owner, orders)
                if existing is not None:
                    self._delete_secret(secret)  # that job has its own
                    return self._resume(existing, plan if existing.start_key == key else None, deadline)
                if gate is not None:
                    gate.check()
                if options.registry_login is not None and not secret and self._registry_secrets is not None:
                    secret = self._registry_secrets.create(job_id, options.registry_login)  # before the record
                job = self._new_record(plan, owner, orders, key, timeout, slots, options, job_id, secret)
                extra = self._extra_items(job, gate)
                try:
                    self._reservations.reserve(job, plan.environment, orders, slots, extra)
                except (GateContended, OrderAlreadyUsed):
                    continue  # a concurrent start of these orders, or the payer's account moved: read again
                secret = ""  # the job's now: its end deletes it
                return self._first_dispatch(job, plan, gate, deadline)
            raise ServiceUnavailable("Too many concurrent starts for these orders or this payer; try again")
        finally:
            self._delete_secret(secret)  # no job holds it (refused, failed before the record)

    def _delete_secret(self, secret: str) -> None:
        """Delete a registry login secret no job needs (the reconciler sweeps one left behind)."""
        if secret and self._registry_secrets is not None:
            self._registry_secrets.delete(secret)

    def _extra_items(self, job: JobRecord, gate: DispatchGate | None) -> Any:
        """What the start's transaction writes besides the slot, the orders and the job: the
        gate's items, then the job's entries in its publishers' audit logs (unconditional puts,
        counted after the gate's: a job exists exactly when its datasets' logs list it)."""
        entries = self._audit.entries(job) if self._audit is not None else []
        if gate is None and not entries:
            return None

        def add(transaction: Any) -> tuple[int, int]:
            puts, updates = gate.add_to(transaction, job) if gate is not None else (0, 0)
            for entry in entries:
                transaction.save(entry)
            return puts + len(entries), updates

        return add

    def _first_dispatch(self, job: JobRecord, plan: ComputePlan, gate: DispatchGate | None,
                        deadline: Deadline | None) -> JobRecord:
        try:
            manifest_uri = self._objects.write_manifest(job.job_id, self._manifest(job, plan), job.runner_key)
        except Exception as error:
            return self._give_up(job, error, gate)
        if gate is not None:
            try:
                if not gate.before_dispatch(job):
                    return job  # its lock is on its way: the same start again or the reconciler dispatches
            except Exception as error:
                if getattr(error, "job_reason", None):
                    return self._give_up(job, error, gate)
                # the lock may be on its way: the job stays at 1, the same start again finishes it
                if isinstance(error, ProviderError) and error.status_code < 500:
                    raise
                raise ServiceUnavailable(UNFINISHED) from error
        return self._submit(job, manifest_uri, gate)

    def same_start(self, plan: ComputePlan, owner: str, orders: Sequence[Order],
                   deadline: Deadline | None = None) -> JobRecord | None:
        """The same start again, before its orders are verified again (their fees may have
        expired since): the job they made, finished now if left half made; None when these
        orders made no job of `owner`'s with exactly these orders (the start goes on, and its
        checks refuse what they must, as for any start)."""
        try:
            existing = self._reservations.same_start(owner, orders)
        except OrderAlreadyUsed:
            return None
        if existing is None:
            return None
        return self._resume(existing, plan if existing.start_key == start_fingerprint(plan) else None, deadline)

    def _resume(self, job: JobRecord, plan: ComputePlan | None, deadline: Deadline | None) -> JobRecord:
        """The same start again: the job it made, finished now if it was left at 1 with no Batch
        job (its manifest written again from `plan` when the request is the same)."""
        if job.batch_job_id or int(job.status) != st.WARMING_UP:
            return job
        wait = 0.0 if deadline is None else max(0.0, deadline.remaining() - budget.START_RESERVE_SECONDS)
        return self._finish(job, plan, self._clock(), wait, take_over=False, send=True)[0]

    def finish_stored(self, job: JobRecord, now: float | None = None) -> str:
        """The reconciler's, for a job at 1 with no Batch job of its name: dispatched from its
        record if it can be ("dispatched"), left while its lock is being mined ("waiting"), or
        undone ("abandoned"); "busy" when it moved or another dispatcher holds it.
        PynamoDBException / ServiceUnavailable when a store failed (try again later)."""
        try:
            return self._finish(job, None, self._clock() if now is None else now, 0.0, take_over=True, send=False)[1]
        except ProviderError as error:
            if getattr(error, "job_reason", None):
                return "abandoned"
            raise

    def _finish(self, job: JobRecord, plan: ComputePlan | None, now: float, wait: float, *, take_over: bool,
                send: bool) -> tuple[JobRecord, str]:
        gate = self._resume_gate(job) if self._resume_gate is not None else None
        try:
            if plan is not None:
                manifest_uri = self._objects.write_manifest(job.job_id, self._manifest(job, plan), job.runner_key)
            else:
                stored = self._objects.stored_manifest_uri(job.job_id) if DispatchSpec.of_record(job) else None
                if stored is None or not job.runner_key:
                    raise StartLost()
                manifest_uri = stored
            if gate is not None and not gate.resume(job, wait, send):
                return job, "waiting"
        except Exception as error:
            if getattr(error, "job_reason", None):
                return self._give_up(job, error, gate), "busy"  # (raises when it undid the start)
            if isinstance(error, ProviderError):
                raise
            raise ServiceUnavailable(UNFINISHED) from error
        self._submit(job, manifest_uri, gate, now=now, take_over=take_over)
        return job, ("dispatched" if job.batch_job_id else "busy")

    def _submit(self, job: JobRecord, manifest_uri: str, gate: ResumeGate | None, *, now: float | None = None,
                take_over: bool = False) -> JobRecord:
        """SubmitJob under the lease (not if the job was stopped or is being dispatched by
        another); a dispatcher error undoes the start."""
        try:
            self._dispatch.submit(job, manifest_uri, now=now, take_over=take_over)
        except Exception as error:
            return self._give_up(job, error, gate)
        return job

    def _give_up(self, job: JobRecord, error: Exception, gate: ResumeGate | None) -> JobRecord:
        """Undo the start (if still at 1 with no Batch job), release what the gate holds, and
        raise: a refusal as it is, anything else a 503. A job that moved on meanwhile (a stop,
        a dispatch by another) is answered as it is now."""
        reason = getattr(error, "job_reason", None) or DISPATCH_FAILED
        outcome = self._undo(job, error, reason)
        if outcome == "moved":
            job.refresh(consistent_read=True)
            return job
        if outcome == "undone" and gate is not None:
            gate.cancel(job, reason)
        if isinstance(error, ProviderError) and (error.status_code < 500 or isinstance(error, ServiceUnavailable)):
            raise error
        if isinstance(error, PynamoDBException):
            raise ServiceUnavailable(UNAVAILABLE) from error
        raise ServiceUnavailable(DISPATCH_FAILED) from error


    def _new_record(self, plan: ComputePlan, owner: str, orders: Sequence[Order], key: str, timeout: int | None,
                    slots: Sequence[Slot], options: JobOptions, job_id: str, registry_secret: str) -> JobRecord:
        now = int(self._clock())
        environment = plan.environment
        main = plan.datasets[0]
        return self._jobs(
            job_id,
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
            orders=[order.key for order in unique_orders(orders)],
            usage_keys=[slot.key for slot in slots] or None,
            updated_at=now,
            active_environment=environment.id,
            owner_document=owner_document(owner, main.did),
            metadata=options.metadata,
            viewers=list(options.viewers) or None,
            dispatch_spec=DispatchSpec.of_plan(plan, timeout, registry_secret).record(),
            runner_key=new_job_key(),  # the job's own secret (chalicelib.job_key): sealed manifest, signed events
            max_seconds=attempt_seconds(environment, timeout),
            start_key=key,
            provenance=provenance(plan),  # what the receipt and the publishers' audit say of the start
            release=self._releases.held(input_services(plan)) if self._releases is not None else None,
            # the latest a job can end, then its results' storage, then the operator's retention
            expires_at=datetime.fromtimestamp(
                now + environment.max_job_duration + environment.storage_expiry + self._record_retention, timezone.utc),
        )

    def _undo(self, job: JobRecord, cause: Exception, reason: str = DISPATCH_FAILED) -> str:
        """End the start with 31, its orders and slots back, if it is still at 1 with no Batch
        job: "undone"; "moved" if it went on; "failed" if the store failed (the reconciler
        undoes it later)."""
        log.warning("job %s: start failed (%s); releasing its orders and slot", job.job_id, type(cause).__name__)
        try:
            self._reservations.release(job, job.environment, list(dict.fromkeys(job.orders or [])),
                                       self._jobs.batch_job_id.does_not_exist(),
                                       slot_keys=list(job.usage_keys or []), reason=reason)
        except TransactWriteError as error:
            if any(getattr(r, "code", None) == "ConditionalCheckFailed" for r in error.cancellation_reasons or []):
                return "moved"
            log.error("job %s: could not undo its start; orders %s stay reserved", job.job_id, job.orders)
            return "failed"
        except PynamoDBException:
            log.error("job %s: could not undo its start; orders %s stay reserved", job.job_id, job.orders)
            return "failed"
        self._delete_manifest(job)
        return "undone"

    def abandon(self, job: JobRecord) -> bool:
        """Undo a start that never reached Batch, if the job is still at 1 with no Batch job:
        slot back, orders released, ended 31, manifest deleted; what its gate holds released.
        False if it moved meanwhile; PynamoDBException if the store failed (try again later)."""
        try:
            self._reservations.release(job, job.environment, list(dict.fromkeys(job.orders or [])),
                                       self._jobs.batch_job_id.does_not_exist(), slot_keys=list(job.usage_keys or []),
                                       reason=LOST)
        except TransactWriteError as error:
            if any(getattr(reason, "code", None) == "ConditionalCheckFailed" for reason in error.cancellation_reasons or []):
                return False
            raise
        log.warning("job %s: start abandoned before dispatch; orders %s and its slot given back", job.job_id, job.orders)
        self._delete_manifest(job)
        gate = self._resume_gate(job) if self._resume_gate is not None else None
        if gate is not None:
            gate.cancel(job, LOST)
        return True


    def _delete_manifest(self, job: JobRecord) -> None:
        """What an undone start leaves: its manifest, and its registry login secret if any."""
        try:
            self._objects.delete_job(job.job_id)
        except ServiceUnavailable:
            log.error("job %s: could not delete its manifest", job.job_id)
        spec = DispatchSpec.of_record(job)
        self._delete_secret(spec.registry_secret if spec else "")


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
