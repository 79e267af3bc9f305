"""A job's escrow payment from quote to claim: the API the Ocean Node routes call.

    quote = payments.quote(chain_id=…, token=…, fees=env_view["fees"], resources=[{id, amount}],
                           max_job_duration=…, min_job_duration=…)        # initializeCompute
    quote.public()  ->  {escrowAddress, payee, chainId, token, amount, minLockSeconds}
    payments.lock(job_id=…, payer=consumer, quote=quote)   # reserve, record and send in one call, or:
    payments.throttle(chain_id, payer)                      # computeStart: 429 after failed locks
    reservation = payments.reservation(quote, payer)        #   the payer's room (400s), read
    payments.add_to(transaction, payments.record(job_id, payer, quote), reservation)  # with the job
    payments.send_lock(job_id)                              #   after the job's manifest
    payments.confirm_lock(job_id, timeout=…)   # "locked": dispatch; "lock_failed": end the job 31
    payments.cancel(job_id, reason)            # the start failed after the lock / the job never ran
    payments.claim(job_id, run_seconds)        # the job ended: bill what it ran
    payments.settle(job_id, run_seconds|None)  # the terminal event: claim, or cancel if it never ran
    payments.heal()                            # the reconciler: finish every open payment

Every step is idempotent and resumable: the payment record (`EscrowPayment`, one per job) moves
forward only by conditional writes (`payments.progress`: the state machine, reserved → locking →
locked → claiming/cancelling → claimed/cancelled), and its transactions go through the `TransactionSender`
under the purposes `lock:<jobId>`, `claim:<jobId>`, `cancel:<jobId>`, so a replayed start cannot
lock twice and a Lambda that dies anywhere leaves a state `heal()` finishes. `claim()`/`cancel()`
may come before the lock is mined (a start failing at once): the settlement is then sent as soon
as the lock is.

What a job locks and the consumer's checks before a lock (400s, `PaymentRefused.reason` says
which) are `payments.quotes`; the reservation of locks not yet mined and the 429 after failed
locks are `payments.escrow_accounts`. A provider that could not pay the gas of the lock and its
claim gets a 503 before anything is written.
"""
from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import Any, Callable, Iterable, Mapping, Sequence

from chalicelib.chain.transactions import TransactionSender
from chalicelib.payments import pricing
from chalicelib.errors import ServiceUnavailable
from chalicelib.payments.escrow import EscrowContract, lock_id
from chalicelib.payments.escrow_accounts import (
    FAILURE_WINDOW, MAX_FAILURES, EscrowAccounts, Reservation, ReservationContended,
)  # fmt: skip
from chalicelib.payments.models import EscrowPayment, store_errors
from chalicelib.payments.progress import ESCROW_GAS_HEADROOM, OPEN_STATUSES, PaymentProgress
from chalicelib.payments.quotes import PaymentQuote, check_escrow, quote_payment

logger = logging.getLogger(__name__)

# What the provider's key must be able to pay before a lock (payments.progress.ESCROW_GAS_HEADROOM).
LOCK_GAS = 300_000 + ESCROW_GAS_HEADROOM  # createLock: ~270k on anvil with no other lock
CLAIM_GAS = 200_000 + ESCROW_GAS_HEADROOM  # claimLockAndWithdraw: ~160k
RESERVE_ATTEMPTS = 8  # a reservation reads again after a concurrent one of the same payer won


class EscrowPayments:
    """Quotes, checks, locks and settles jobs' escrow payments; see the module docstring.

    `decimals(chain_id, token)` reads a token's decimals (e.g. `Chains.token_decimals`);
    `queue_wait` + `claim_margin` are added to maxJobDuration for the lock's lifetime
    (minLockSeconds): time in the Batch queue, then time to claim after the job ended.
    """

    def __init__(self, escrow: EscrowContract, sender: TransactionSender, decimals: Callable[[int, str], int], *,
                 queue_wait: int = 900, claim_margin: int = 900, clock: Callable[[], float] = time.time,
                 max_failures: int = MAX_FAILURES, failure_window: int = FAILURE_WINDOW):
        self.escrow = escrow
        self.sender = sender
        self.accounts = EscrowAccounts(escrow, sender.address, clock=clock, max_failures=max_failures,
                                       failure_window=failure_window, settle_pending=self._progress_all)
        self._steps = PaymentProgress(escrow, sender, self.accounts, clock)
        self._decimals = decimals
        self.queue_wait = queue_wait
        self.claim_margin = claim_margin
        self._clock = clock

    @property
    def payee(self) -> str:
        return self.sender.address

    def clock(self) -> float:
        return self._clock()

    # ---- before the job ------------------------------------------------------------------

    def quote(self, *, chain_id: int, token: str, fees: Mapping[Any, Any], resources: Sequence[Mapping[str, Any]],
              max_job_duration: int, min_job_duration: int = 60) -> PaymentQuote:
        """The payment a job of `max_job_duration` seconds on `resources` must lock (payments.quotes)."""
        return quote_payment(self.escrow, self.payee, self._decimals, chain_id=chain_id, token=token, fees=fees,
                             resources=resources, max_job_duration=max_job_duration,
                             min_job_duration=min_job_duration, lock_margin=self.queue_wait + self.claim_margin)

    def check(self, quote: PaymentQuote, payer: str) -> None:
        """The consumer's authorization and funds allow this lock, or PaymentRefused (400)."""
        check_escrow(self.escrow, self.payee, quote, payer)

    @store_errors
    def throttle(self, chain_id: int, payer: str) -> None:
        """TooManyRequests (429) while too many of the payer's locks failed lately."""
        self.accounts.throttle(chain_id, payer)

    @store_errors
    def reservation(self, quote: PaymentQuote, payer: str) -> Reservation:
        """The payer's account, then the chain: the lock's reservation, or PaymentRefused (400)
        when it does not fit beside the payer's locks still pending."""
        return self.accounts.reservation(quote, payer)

    def record(self, job_id: str, payer: str, quote: PaymentQuote) -> EscrowPayment:
        """The job's payment as it is first written: reserved, nothing sent, held by its job."""
        now = self._clock()
        return EscrowPayment(
            job_id, chain_id=quote.chain_id, escrow=quote.escrow_address, token=quote.token, payer=payer,
            payee=self.payee, lock_id=str(lock_id(job_id)), amount=str(quote.amount),
            cost_per_minute=str(quote.cost_per_minute), expiry=quote.min_lock_seconds,
            min_job_duration=quote.min_job_duration, max_job_duration=quote.max_job_duration, status="reserved",
            created_at=now, updated_at=now, held=quote.chain_id, reserved=quote.amount,
        )  # fmt: skip

    def add_to(self, transaction: Any, payment: EscrowPayment, reservation: Reservation) -> tuple[int, int]:
        """The payment (new) and its reservation in the caller's transaction: (puts, updates)."""
        transaction.save(payment, condition=EscrowPayment.job_id.does_not_exist())
        self.accounts.add_to(transaction, reservation, payment.job_id)
        return 1, 1

    @store_errors
    def lock(self, *, job_id: str, payer: str, quote: PaymentQuote) -> EscrowPayment:
        """Check, reserve, record and send the job's lock; returns the payment (status `locking`,
        or whatever an earlier call for this job reached: a replayed start never locks twice)."""
        existing = self.get(job_id)
        if existing is not None:
            return self._steps.send_lock(existing) if existing.status == "reserved" else existing
        self.throttle(quote.chain_id, payer)
        for _ in range(RESERVE_ATTEMPTS):
            reservation = self.reservation(quote, payer)
            self.sender.ensure_can_pay(quote.chain_id, LOCK_GAS + CLAIM_GAS)
            payment = self.record(job_id, payer, quote)
            try:
                if not self.accounts.reserve(payment, reservation):
                    return self.lock(job_id=job_id, payer=payer, quote=quote)  # recorded meanwhile
            except ReservationContended:
                continue
            return self._steps.send_lock(payment)
        raise ServiceUnavailable("too many concurrent locks of this payer; try again")

    @store_errors
    def send_lock(self, job_id: str) -> EscrowPayment:
        """Send the lock of a reserved payment (nothing if it was sent or settled already)."""
        payment = self._require(job_id)
        return self._steps.send_lock(payment) if payment.status == "reserved" else payment

    @store_errors
    def confirm_lock(self, job_id: str, timeout: float = 0) -> EscrowPayment:
        """Wait up to `timeout` s for the lock: `locked` (dispatch the job), `lock_failed` (end it
        with `reason`), or still `locking` (the reconciler's heal() goes on)."""
        return self.wait(job_id, timeout, until=lambda p: p.status != "locking")

    # ---- after the job -------------------------------------------------------------------

    @store_errors
    def claim(self, job_id: str, run_seconds: float) -> EscrowPayment:
        """Bill the job's run time clamped to [minJobDuration, maxJobDuration]; the rest returns
        to the consumer. Idempotent: a second call returns the payment as it is."""
        payment = self._require(job_id)
        if payment.status == "reserved":
            return self.cancel(job_id, "the job ran without its lock")  # never: dispatch needs the lock mined
        billed = pricing.billed_seconds(run_seconds, int(payment.min_job_duration), int(payment.max_job_duration))
        amount = min(pricing.charge(Decimal(payment.cost_per_minute), billed), int(payment.amount))
        payment = self._steps.move(payment, ("locking", "locked"), "claiming", claimed=str(amount), billed_seconds=billed,
                             open=payment.chain_id, held=None)
        return self._steps.progress(payment)

    @store_errors
    def cancel(self, job_id: str, reason: str) -> EscrowPayment:
        """Release the whole lock (the start failed after locking, or the job never ran)."""
        payment = self._require(job_id)
        if payment.status == "reserved":  # nothing was sent: nothing to release on chain
            payment = self._steps.release(payment, ("reserved",), "cancelled", claimed="0", billed_seconds=0,
                                          reason=reason, open=None, held=None)
            if payment.status not in ("locking", "locked"):
                return payment  # (a start that sent its lock meanwhile: released below, once mined)
        payment = self._steps.move(payment, ("locking", "locked"), "cancelling", claimed="0", billed_seconds=0,
                             reason=reason, open=payment.chain_id, held=None)
        return self._steps.progress(payment)

    @store_errors
    def settle(self, job_id: str, run_seconds: float | None) -> EscrowPayment | None:
        """For the terminal event: claim what ran, cancel a job that never ran; None for a job
        without escrow payment."""
        if self.get(job_id) is None:
            return None
        if not run_seconds or run_seconds <= 0:
            return self.cancel(job_id, "the job never ran")
        return self.claim(job_id, run_seconds)

    @store_errors
    def wait(self, job_id: str, timeout: float, poll: float = 0.25,
             until: Callable[[EscrowPayment], bool] | None = None) -> EscrowPayment:
        """Progress the payment until `until(payment)` (default: no longer open) or `timeout`."""
        done = until or (lambda p: p.status not in OPEN_STATUSES)
        deadline = time.monotonic() + timeout
        payment = self._steps.progress(self._require(job_id))
        while not done(payment) and time.monotonic() < deadline:
            time.sleep(poll)
            payment = self._steps.progress(payment)
        return payment

    @store_errors
    def heal(self, chain_ids: Iterable[int]) -> list[EscrowPayment]:
        """Finish every open payment (locks to confirm, settlements to send or confirm), and every
        open transaction of the provider, on each chain. For the reconciler."""
        chain_ids = list(chain_ids)
        self.sender.heal(chain_ids)
        touched = []
        for chain_id in chain_ids:
            for payment in list(EscrowPayment.open_payments.query(chain_id)):
                try:
                    touched.append(self._steps.progress(self._steps.reload(payment)))
                except Exception:  # noqa: BLE001 - one payment must not stop the others
                    logger.exception("payment of job %s could not progress", payment.job_id)
        return touched

    @store_errors
    def held(self, chain_id: int) -> list[EscrowPayment]:
        """Payments their job holds (reserved, locking, locked) and not yet being settled, oldest
        first: the reconciler settles those whose job ended (its terminal hook was lost); a job
        still waiting at 1 is finished or undone by the reconciler's own pass over jobs."""
        return list(EscrowPayment.held_payments.query(chain_id))

    @store_errors
    def view(self, job_id: str) -> dict[str, Any] | None:
        """The job's payment for its status: amounts, and each transaction's hash, nonce and
        outcome (None for a job without escrow payment)."""
        payment = self.get(job_id)
        if payment is None:
            return None

        def transaction(kind: str) -> dict[str, Any] | None:
            tx = self.sender.find(payment.chain_id, f"{kind}:{job_id}")
            if tx is None:
                return None
            return {"hash": tx.tx_hash, "nonce": int(tx.nonce), "status": tx.status, "attempts": len(tx.attempts)}

        return {
            "status": payment.status, "chainId": int(payment.chain_id), "escrowAddress": payment.escrow,
            "token": payment.token, "payer": payment.payer, "payee": payment.payee, "amount": payment.amount,
            "claimed": payment.claimed, "billedSeconds": payment.billed_seconds, "reason": payment.reason,
            "lock": transaction("lock"), "claim": transaction("claim"), "cancel": transaction("cancel"),
        }  # fmt: skip

    def gas_balances(self, chain_ids: Iterable[int]) -> dict[str, str | None]:
        """The provider's native balance (wei, decimal string) per chain, None where the node
        does not answer: for the environments' v2 view or the root document."""
        from chalicelib.errors import ServiceUnavailable

        balances: dict[str, str | None] = {}
        for chain_id in chain_ids:
            try:
                balances[str(chain_id)] = str(self.sender.balance(chain_id))
            except ServiceUnavailable:
                balances[str(chain_id)] = None
        return balances

    @store_errors
    def get(self, job_id: str) -> EscrowPayment | None:
        try:
            return EscrowPayment.get(job_id, consistent_read=True)
        except EscrowPayment.DoesNotExist:
            return None

    def _progress_all(self, job_ids: list[str]) -> None:
        """One step forward for each of these jobs' payments (best effort: a start's help)."""
        for job_id in job_ids:
            try:
                payment = self.get(job_id)
                if payment is not None:
                    self._steps.progress(payment)
            except Exception:  # noqa: BLE001 - helping others must not fail this start
                logger.warning("payment of job %s could not progress", job_id)

    def _require(self, job_id: str) -> EscrowPayment:
        payment = self.get(job_id)
        if payment is None:
            raise KeyError(f"job {job_id} has no escrow payment")
        return payment
