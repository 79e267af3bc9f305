"""The escrow side of a paid compute start (Ocean Node's pay-per-minute): which starts pay through
escrow, what they lock (initializeCompute's `payment`), and the lock a start takes before its job
reaches Batch. Both protocol edges reach escrow only through here and `payments.settlement`.

A paid start (`payment{chainId, token}` on a chain with an Escrow, in a token the environment
is priced in) goes: validate and verify the orders (the v4 path), check the consumer's escrow
(authorization, funds, the provider's gas: 400s and 503 before anything is reserved), reserve
(slot, orders, job record at 1), lock, wait for the lock to be mined, then dispatch. The lock is
the JobService's `DispatchGate`, so the start path is v4's with one hook:

- lock refused or reverted -> the start is undone (job 31 with the reason, slot and orders back),
  400; nothing is claimed;
- lock not mined within the request's time -> the lock is cancelled (a claim of 0 once it is
  mined, by the payments' heal) and the start undone, 503 "try again". We chose this over leaving
  the job at 1 for the reconciler to dispatch: the dispatch needs the validated plan (container,
  checksums, inputs), which only the request holds. On automining chains and on chains with
  blocks of a few seconds the lock is mined well within the ~10 s a start leaves for it;
- dispatch fails after the lock -> the lock is cancelled.

The claim when the job ends is `payments.settlement`.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Optional

from chalicelib import budget
from chalicelib.compute.environments import MIN_JOB_SECONDS, Environment, fill_resources
from chalicelib.errors import BusinessError, ServiceUnavailable
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
NOT_MINED = "The escrow lock was not mined in time; it is being released. Try again"


class LockFailed(BusinessError):
    """The escrow lock was refused or reverted (400); the job ends 31 with `job_reason`."""

    def __init__(self, message: str):
        super().__init__(message)
        self.job_reason = f"escrow lock failed: {message}"[:255]


class LockNotMined(ServiceUnavailable):
    def __init__(self) -> None:
        super().__init__(NOT_MINED)
        self.job_reason = "escrow lock not mined in time"


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


class EscrowLock:
    """The `DispatchGate` of a paid start: the consumer's lock, mined before the dispatch."""

    seconds_needed = LOCK_SECONDS

    def __init__(self, payments: "EscrowPayments", payer: str, quote: "PaymentQuote", deadline: budget.Deadline):
        self._payments = payments
        self._payer = payer
        self._quote = quote
        self._deadline = deadline

    @property
    def max_job_duration(self) -> int:
        """The job's time limit: what the lock pays for at most."""
        return self._quote.max_job_duration

    def check(self) -> None:
        """Before anything is reserved: the consumer's authorization and funds (400s) and the
        provider's gas for the lock and its claim (503)."""
        from chalicelib.payments.service import CLAIM_GAS, LOCK_GAS

        self._payments.check(self._quote, self._payer)
        self._payments.sender.ensure_can_pay(self._quote.chain_id, LOCK_GAS + CLAIM_GAS)

    def before_dispatch(self, job: JobRecord) -> None:
        from chalicelib.payments.quotes import PaymentRefused

        try:
            self._payments.lock(job_id=job.job_id, payer=self._payer, quote=self._quote)
            wait = max(0.0, min(MAX_LOCK_WAIT, self._deadline.remaining() - budget.START_RESERVE_SECONDS))
            payment = self._payments.confirm_lock(job.job_id, timeout=wait)
        except PaymentRefused as refused:
            raise LockFailed(str(refused)) from None
        except Exception:
            # e.g. the node or the store failed mid-way: whatever was recorded or sent is released
            # (a lock the sender still broadcasts is cancelled once mined, by heal())
            self.cancel(job, "the start failed while locking")
            raise
        if payment.status == "locked":
            record("EscrowLocks", environment=known_environment(job.environment))
            return
        if payment.status == "lock_failed":
            raise LockFailed(payment.reason or "the lock did not go through")
        self.cancel(job, "escrow lock not mined in time")
        raise LockNotMined()

    def cancel(self, job: JobRecord, reason: str) -> None:
        """Release the lock (now, or as soon as it is mined); the reconciler retries a failure."""
        try:
            self._payments.cancel(job.job_id, reason)
        except KeyError:
            return  # nothing was recorded: nothing to release
        except Exception as error:  # noqa: BLE001 - the start's own error is what the consumer must see
            log.error("job %s: escrow cancel failed (%s); the reconciler will settle it", job.job_id,
                      type(error).__name__)
