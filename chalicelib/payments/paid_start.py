"""The escrow side of a paid compute start (Ocean Node's pay-per-minute): which starts pay through
escrow, what they lock (initializeCompute's `payment`), and the lock a start takes before its job
reaches Batch. Both protocol edges reach escrow only through here and `payments.settlement`.

A paid start (`payment{chainId, token}` on a chain with an Escrow, in a token the environment
is priced in) goes: validate and verify the orders (the v4 path); check the payer (429 after
failed locks, its authorization and funds beside its locks still pending, the provider's gas:
nothing is written on a refusal); reserve (slot, orders, job record at 1, the payment and the
payer's reservation, one transaction); write the manifest; send the lock and wait for it to be
mined; dispatch. The lock is the JobService's `DispatchGate`, so the start path is v4's with one
hook:

- lock refused or reverted -> the start is undone (job 31 with the reason, slot and orders back,
  the reservation given back), 400; nothing is claimed. A reverted lock cost the provider gas
  and counts as one of the payer's failed locks (`payments.escrow_accounts`: 429 after a few);
- lock not mined within the request's time (`MAX_LOCK_WAIT`) -> the job stays at 1, bound to its
  lock; the answer is the job (200). The same start again (same owner, same orders) waits for
  that lock and dispatches, and the reconciler dispatches it once mined (`StoredLock.resume`:
  everything the dispatch needs is in the job record and the manifest), or, if the lock failed
  or is still not mined after ESCROW_QUEUE_WAIT, undoes the start and cancels the lock;
- the start fails for good after the lock (SubmitJob refused) -> the lock is cancelled.

The claim when the job ends is `payments.settlement`.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Optional

from chalicelib import budget
from chalicelib.compute.environments import MIN_JOB_SECONDS, Environment, fill_resources
from chalicelib.errors import BusinessError
from chalicelib.models import JobRecord
from chalicelib.observability.context import annotate, record
from chalicelib.observability.requests import known_environment
from chalicelib.payments.pricing import environment_fees

if TYPE_CHECKING:
    from chalicelib.payments.quotes import PaymentQuote
    from chalicelib.payments.service import EscrowPayments

log = logging.getLogger(__name__)

LOCK_SECONDS = 5.0  # what a start needs for the lock beyond its own reserve: checks, record, send
MAX_LOCK_WAIT = 10.0  # the longest a start waits for its lock to be mined (within what the request has left)


class LockFailed(BusinessError):
    """The escrow lock was refused, reverted, never sent or never mined: the start cannot finish
    (400); the job ends 31 with `job_reason`."""

    def __init__(self, message: str):
        super().__init__(message)
        self.job_reason = f"escrow lock failed: {message}"[:255]


def escrow_chain(chain_id: Optional[int]) -> bool:
    """Whether `chain_id` takes escrow payments here (ESCROW_CONTRACTS names its Escrow)."""
    from chalicelib.payments.setup import escrow_addresses

    return chain_id is not None and int(chain_id) in escrow_addresses()


def wants_escrow(environment: Environment, chain_id: Optional[int], token: Optional[str]) -> bool:
    """A request's `payment{chainId, token}` is paid through escrow: the chain has an Escrow and
    the environment is not free there. A token the environment is not priced in is a 400 later
    (payments.pricing), not a silent v4 start."""
    return bool(token) and not environment.free and escrow_chain(chain_id) and int(chain_id) in environment.chain_ids


def refuse_unpaid(environment: Environment, payment: Any, chain_id: Any) -> None:
    """At Ocean Node's protocol, on a chain with an Escrow the compute is paid through it only
    (the orders' providerFee carries no compute price there): a paid start without `payment`
    on such a chain would run unpaid, so it is refused (400) before anything is reserved."""
    chain = (payment.chainId if payment is not None else None) or chain_id
    candidates = [int(chain)] if chain is not None else list(environment.chain_ids)
    escrowed = [c for c in candidates if c in environment.chain_ids and escrow_chain(c)]
    if escrowed and not environment.free:
        raise BusinessError(
            f"On chain {escrowed[0]} this provider is paid for compute through the escrow: send "
            "payment {chainId, token} with the start (initializeCompute with it answers the amount)")


def quote(payments: "EscrowPayments", environment: Environment, chain_id: int, token: str,
          requested: Any, max_job_duration: Optional[int]) -> "PaymentQuote":
    """What a job of `max_job_duration` s (capped by the environment) on the resources it gets
    will lock, at the prices the environment's v2 view shows."""
    seconds = min(max_job_duration or environment.max_job_duration, environment.max_job_duration)
    fees = {str(chain_id): [environment_fees(environment, chain_id)]}
    return payments.quote(chain_id=chain_id, token=token, fees=fees, resources=fill_resources(environment, requested),
                          max_job_duration=max(MIN_JOB_SECONDS, seconds), min_job_duration=MIN_JOB_SECONDS)


def escrow_lock(payments: Callable[[], "EscrowPayments"], environment: Environment, payment: Any,
                chain_id: Optional[int], max_job_duration: Optional[int], requested: Any, consumer: str,
                deadline: budget.Deadline) -> "EscrowLock | None":
    """The gate of a computeStart whose `payment` goes through escrow, else None (v4 orders only).
    ocean.js sends chainId and maxJobDuration both at the top and in `payment`. `payments` is
    called only for an escrow start, so other starts never build the payments stack."""
    if payment is None:
        return None
    chain_id = payment.chainId or chain_id
    if not wants_escrow(environment, chain_id, payment.token):
        return None
    service = payments()
    annotate(payment="escrow")
    seconds = max_job_duration or payment.maxJobDuration
    return EscrowLock(service, consumer, quote(service, environment, int(chain_id), payment.token, requested, seconds),
                      deadline)


def stored_lock(payments: "EscrowPayments", job: JobRecord) -> "StoredLock | None":
    """The gate of a recorded start (the JobService's `resume_gate`): its payment, if it has one."""
    return StoredLock(payments) if payments.get(job.job_id) is not None else None


class StoredLock:
    """The lock of a recorded paid start, for the same start again or the reconciler."""

    def __init__(self, payments: "EscrowPayments"):
        self._payments = payments

    def resume(self, job: JobRecord, wait: float, send: bool) -> bool:
        """True once the lock is mined; False while it is on its way; LockFailed when it failed,
        was settled, was never sent (`send` False: only the consumer's own start sends it), or
        is still not mined ESCROW_QUEUE_WAIT after the start (its lifetime counts from mining)."""
        from chalicelib.payments.quotes import PaymentRefused

        payments = self._payments
        payment = payments.get(job.job_id)
        if payment is None:
            raise LockFailed("the start has no escrow payment")
        if payment.status == "reserved":
            if not send:
                raise LockFailed("the start never sent its lock")
            try:
                payments.send_lock(job.job_id)
            except PaymentRefused as refused:
                raise LockFailed(str(refused)) from None
        payment = payments.confirm_lock(job.job_id, timeout=wait)
        if payment.status == "locked":
            record("EscrowLocks", environment=known_environment(job.environment))
            return True
        if payment.status == "locking":
            waited = payments.clock() - float(payment.created_at)
            if waited > payments.queue_wait:
                raise LockFailed(f"not mined within {payments.queue_wait} s")
            return False
        raise LockFailed(payment.reason or f"the payment is {payment.status}")

    def cancel(self, job: JobRecord, reason: str) -> None:
        """Release the lock (now, or as soon as it is mined); the reconciler retries a failure."""
        try:
            self._payments.cancel(job.job_id, reason)
        except KeyError:
            return  # nothing was recorded: nothing to release
        except Exception as error:  # noqa: BLE001 - the start's own error is what the consumer must see
            log.error("job %s: escrow cancel failed (%s); the reconciler will settle it", job.job_id,
                      type(error).__name__)


class EscrowLock(StoredLock):
    """The `DispatchGate` of a paid start: the consumer's lock, reserved with the job, mined
    before the dispatch."""

    seconds_needed = LOCK_SECONDS

    def __init__(self, payments: "EscrowPayments", payer: str, quote: "PaymentQuote", deadline: budget.Deadline):
        super().__init__(payments)
        self._payer = payer
        self._quote = quote
        self._deadline = deadline
        self._reservation: Any = None

    @property
    def max_job_duration(self) -> int:
        """The job's time limit: what the lock pays for at most."""
        return self._quote.max_job_duration

    def check(self) -> None:
        """Before anything is reserved: the payer's recent failed locks (429), its authorization
        and funds beside its locks still pending (400s), the provider's gas for the lock and its
        claim (503). Reads what the reservation's condition needs."""
        from chalicelib.payments.service import CLAIM_GAS, LOCK_GAS

        self._payments.throttle(self._quote.chain_id, self._payer)
        self._reservation = self._payments.reservation(self._quote, self._payer)
        self._payments.sender.ensure_can_pay(self._quote.chain_id, LOCK_GAS + CLAIM_GAS)

    def add_to(self, transaction: Any, job: JobRecord) -> tuple[int, int]:
        """The payment (reserved) and the payer's reservation, in the start's transaction."""
        return self._payments.add_to(transaction, self._payments.record(job.job_id, self._payer, self._quote),
                                     self._reservation)

    def before_dispatch(self, job: JobRecord) -> bool:
        """Send the lock, wait for it within what the request has left: True once mined, False
        while on its way (the job stays at 1), LockFailed when it was refused or reverted.
        Another failure propagates: the lock may be on its way, the same start again finishes."""
        wait = max(0.0, min(MAX_LOCK_WAIT, self._deadline.remaining() - budget.START_RESERVE_SECONDS))
        return self.resume(job, wait, send=True)
