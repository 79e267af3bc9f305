"""A job's escrow payment from quote to claim: the API the Ocean Node routes call.

    quote = payments.quote(chain_id=…, token=…, fees=env_view["fees"], resources=[{id, amount}],
                           max_job_duration=…, min_job_duration=…)        # initializeCompute
    quote.public()  ->  {escrowAddress, payee, chainId, token, amount, minLockSeconds}
    payments.lock(job_id=…, payer=consumer, quote=quote)                  # computeStart
    payments.confirm_lock(job_id, timeout=…)   # "locked": dispatch; "lock_failed": end the job 31
    payments.cancel(job_id, reason)            # the start failed after the lock / the job never ran
    payments.claim(job_id, run_seconds)        # the job ended: bill what it ran
    payments.settle(job_id, run_seconds|None)  # the terminal event: claim, or cancel if it never ran
    payments.heal()                            # the reconciler: finish every open payment

Every step is idempotent and resumable: the payment record (`EscrowPayment`, one per job) moves
forward only by conditional writes, and its transactions go through the `TransactionSender` under
the purposes `lock:<jobId>`, `claim:<jobId>`, `cancel:<jobId>`, so a replayed start cannot lock
twice and a Lambda that dies anywhere leaves a state `heal()` finishes:

    locking ──(Lock mined)──> locked ──claim()──> claiming ──(Claimed)──> claimed
       │                         └──cancel()──> cancelling ──(Claimed 0 / Canceled)──> cancelled
       └──(reverted, dropped, refused)──> lock_failed

`claim()`/`cancel()` may come before the lock is mined (a start failing at once): the settlement
is then sent as soon as the lock is. A cancel is a claim of 0 (the contract has no payee cancel of
a live lock, see `payments.escrow`); a claim reaching the chain after the lock's expiry is turned
into a cancel by the contract, and recorded as `cancelled` with that reason.

The consumer's checks before a lock are 400s (`PaymentRefused.reason` says which): not
authorized, insufficient funds, lock amount / seconds / count exceeded. A provider that could not
pay the gas of the lock and its claim gets a 503 before anything is written.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Iterable, Mapping, Sequence

from chalicelib.chain.transaction_ledger import FINAL
from chalicelib.chain.transactions import TransactionRejected, TransactionSender
from chalicelib.errors import BusinessError
from chalicelib.payments import pricing
from chalicelib.payments.escrow import EscrowContract, lock_id
from chalicelib.payments.models import EscrowPayment, store_errors

logger = logging.getLogger(__name__)

OPEN_STATUSES = ("locking", "claiming", "cancelling")
FINAL_STATUSES = ("lock_failed", "claimed", "cancelled", "settle_failed")
PAYMENT_STATUSES = OPEN_STATUSES + ("locked",) + FINAL_STATUSES

# Escrow scans the payee's live locks on every createLock and claim (~4.2k gas per lock), so the
# cost grows with locks mined between the estimate and our transaction: ESCROW_GAS_HEADROOM on
# top of the estimate covers ~50 of them. Unused gas is not paid; the balance check counts it.
ESCROW_GAS_HEADROOM = 200_000
LOCK_GAS = 300_000 + ESCROW_GAS_HEADROOM  # createLock: ~270k on anvil with no other lock
CLAIM_GAS = 200_000 + ESCROW_GAS_HEADROOM  # claimLockAndWithdraw: ~160k
NO_LOCK_GRACE = 120  # seconds a settlement waits for a lock transaction that was never recorded


class PaymentRefused(BusinessError):
    """The consumer's escrow does not allow this lock (400); `reason` is a stable code."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class PaymentQuote:
    """What a job will lock: initializeCompute's `payment`, plus what the claim needs."""

    escrow_address: str
    payee: str
    chain_id: int
    token: str
    amount: int  # smallest unit
    min_lock_seconds: int
    cost_per_minute: Decimal  # smallest units per minute, exact
    max_job_duration: int
    min_job_duration: int

    def public(self) -> dict[str, Any]:
        """Ocean Node's `payment` object (amount as a decimal string of the smallest unit)."""
        return {"escrowAddress": self.escrow_address, "payee": self.payee, "chainId": self.chain_id,
                "token": self.token, "amount": str(self.amount), "minLockSeconds": self.min_lock_seconds}


class EscrowPayments:
    """Quotes, checks, locks and settles jobs' escrow payments; see the module docstring.

    `decimals(chain_id, token)` reads a token's decimals (e.g. `Chains.token_decimals`);
    `queue_wait` + `claim_margin` are added to maxJobDuration for the lock's lifetime
    (minLockSeconds): time in the Batch queue, then time to claim after the job ended.
    """

    def __init__(self, escrow: EscrowContract, sender: TransactionSender, decimals: Callable[[int, str], int], *,
                 queue_wait: int = 900, claim_margin: int = 900, clock: Callable[[], float] = time.time):
        self.escrow = escrow
        self.sender = sender
        self._decimals = decimals
        self.queue_wait = queue_wait
        self.claim_margin = claim_margin
        self._clock = clock

    @property
    def payee(self) -> str:
        return self.sender.address

    # ---- before the job ------------------------------------------------------------------

    def quote(self, *, chain_id: int, token: str, fees: Mapping[Any, Any], resources: Sequence[Mapping[str, Any]],
              max_job_duration: int, min_job_duration: int = 60) -> PaymentQuote:
        """The payment a job of `max_job_duration` seconds on `resources` must lock."""
        prices = pricing.price_list(fees, chain_id, token)
        cost = prices.cost_per_minute(resources, self._decimals(chain_id, prices.token))
        amount = pricing.charge(cost, max_job_duration)
        if amount <= 0:
            raise BusinessError("this environment is free on that chain: no escrow payment is needed")
        return PaymentQuote(
            escrow_address=self.escrow.address(chain_id), payee=self.payee, chain_id=chain_id, token=prices.token,
            amount=amount, min_lock_seconds=int(max_job_duration) + self.queue_wait + self.claim_margin,
            cost_per_minute=cost, max_job_duration=int(max_job_duration), min_job_duration=int(min_job_duration),
        )  # fmt: skip

    def check(self, quote: PaymentQuote, payer: str) -> None:
        """The consumer's authorization and funds allow this lock, or PaymentRefused (400)."""
        if payer.lower() == self.payee.lower():
            raise PaymentRefused("payer_is_payee", "the provider cannot be its own consumer")
        auth = self.escrow.authorization(quote.chain_id, quote.token, payer, self.payee)
        if auth is None:
            raise PaymentRefused("not_authorized", f"escrow: the consumer has not authorized this provider "
                                                   f"({self.payee}) to lock {quote.token}")
        if auth.max_lock_seconds < quote.min_lock_seconds:
            raise PaymentRefused("lock_seconds_exceeded", f"escrow: the lock needs {quote.min_lock_seconds} s but "
                                                          f"the authorization allows {auth.max_lock_seconds} s")
        if auth.current_locks >= auth.max_lock_counts:
            raise PaymentRefused("lock_count_exceeded", f"escrow: the authorization allows {auth.max_lock_counts} "
                                                        f"locks and {auth.current_locks} are held")
        if auth.current_locked_amount + quote.amount > auth.max_locked_amount:
            raise PaymentRefused("lock_amount_exceeded", f"escrow: locking {quote.amount} would exceed the "
                                                         f"authorized {auth.max_locked_amount}")
        funds = self.escrow.funds(quote.chain_id, payer, quote.token)
        if funds.available < quote.amount:
            raise PaymentRefused("insufficient_funds", f"escrow: insufficient funds: {funds.available} available, "
                                                       f"{quote.amount} needed")

    @store_errors
    def lock(self, *, job_id: str, payer: str, quote: PaymentQuote) -> EscrowPayment:
        """Check, record and send the job's lock; returns the payment (status `locking`, or
        whatever an earlier call for this job reached: a replayed start never locks twice)."""
        existing = self.get(job_id)
        if existing is not None:
            return existing
        self.check(quote, payer)
        self.sender.ensure_can_pay(quote.chain_id, LOCK_GAS + CLAIM_GAS)
        now = self._clock()
        payment = EscrowPayment(
            job_id, chain_id=quote.chain_id, escrow=quote.escrow_address, token=quote.token, payer=payer,
            payee=self.payee, lock_id=str(lock_id(job_id)), amount=str(quote.amount),
            cost_per_minute=str(quote.cost_per_minute), expiry=quote.min_lock_seconds,
            min_job_duration=quote.min_job_duration, max_job_duration=quote.max_job_duration, status="locking",
            created_at=now, updated_at=now, open=quote.chain_id,
        )  # fmt: skip
        from pynamodb.exceptions import PutError

        try:
            payment.save(condition=EscrowPayment.job_id.does_not_exist())
        except PutError as error:
            if getattr(error, "cause_response_code", None) == "ConditionalCheckFailedException":
                return self._reload(payment)
            raise
        return self._send_lock(payment)

    def _send_lock(self, payment: EscrowPayment) -> EscrowPayment:
        data = self.escrow.create_lock_data(payment.chain_id, int(payment.lock_id), payment.token, payment.payer,
                                            int(payment.amount), int(payment.expiry))
        try:
            tx = self.sender.submit(payment.chain_id, f"lock:{payment.job_id}", payment.escrow, data,
                                    extra_gas=ESCROW_GAS_HEADROOM)
        except TransactionRejected as refused:
            self._move(payment, ("locking",), "lock_failed", open=None, reason=f"lock refused: {refused.reason}")
            raise PaymentRefused("lock_refused", f"escrow refused the lock: {refused.reason}") from None
        return self._move(payment, ("locking", "claiming", "cancelling"), None, lock_tx=tx.tx_hash)

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
        billed = pricing.billed_seconds(run_seconds, int(payment.min_job_duration), int(payment.max_job_duration))
        amount = min(pricing.charge(Decimal(payment.cost_per_minute), billed), int(payment.amount))
        payment = self._move(payment, ("locking", "locked"), "claiming", claimed=str(amount), billed_seconds=billed,
                             open=payment.chain_id, held=None)
        return self._progress(payment)

    @store_errors
    def cancel(self, job_id: str, reason: str) -> EscrowPayment:
        """Release the whole lock (the start failed after locking, or the job never ran)."""
        payment = self._require(job_id)
        payment = self._move(payment, ("locking", "locked"), "cancelling", claimed="0", billed_seconds=0,
                             reason=reason, open=payment.chain_id, held=None)
        return self._progress(payment)

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
        payment = self._progress(self._require(job_id))
        while not done(payment) and time.monotonic() < deadline:
            time.sleep(poll)
            payment = self._progress(payment)
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
                    touched.append(self._progress(self._reload(payment)))
                except Exception:  # noqa: BLE001 - one payment must not stop the others
                    logger.exception("payment of job %s could not progress", payment.job_id)
        return touched

    @store_errors
    def held(self, chain_id: int) -> list[EscrowPayment]:
        """Payments locked and not yet being settled, oldest first: the reconciler settles those
        whose job ended (its terminal event was lost) and dispatches those whose job is still
        waiting at status 1 (the request that confirmed the lock died before dispatching)."""
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

    # ---- the state machine ---------------------------------------------------------------

    def _progress(self, payment: EscrowPayment) -> EscrowPayment:
        """One step forward from wherever the payment is (what heal() repeats)."""
        if payment.status not in OPEN_STATUSES:
            return payment
        lock_tx = self.sender.find(payment.chain_id, f"lock:{payment.job_id}")
        if lock_tx is None:
            if payment.status == "locking":  # the Lambda died between the record and the send
                try:
                    return self._send_lock(payment)
                except PaymentRefused:
                    return self._reload(payment)  # recorded as lock_failed
            if self._clock() - float(payment.created_at) > NO_LOCK_GRACE:
                return self._move(payment, OPEN_STATUSES, "cancelled", open=None,
                                  reason=(payment.reason or "") + " (nothing was locked)")
            return payment
        if lock_tx.status not in FINAL:
            lock_tx = self.sender.refresh(lock_tx)
            if lock_tx.status not in FINAL:
                return payment
        if lock_tx.status != "mined" or not self._lock_event(payment, lock_tx.mined_hash):
            return self._move(payment, OPEN_STATUSES, "lock_failed", open=None,
                              reason=f"lock {lock_tx.status}: {lock_tx.error or 'no Lock event'}")
        if payment.status == "locking":
            return self._move(payment, ("locking",), "locked", open=None, held=payment.chain_id)
        return self._settle(payment)

    def _settle(self, payment: EscrowPayment) -> EscrowPayment:
        kind = "claim" if payment.status == "claiming" else "cancel"
        purpose = f"{kind}:{payment.job_id}"
        tx = self.sender.find(payment.chain_id, purpose)
        if tx is None or tx.status == "dropped":
            proof = f"{payment.job_id}:{int(payment.billed_seconds or 0)}s".encode()
            data = self.escrow.claim_data(payment.chain_id, int(payment.lock_id), payment.token, payment.payer,
                                          int(payment.claimed or 0), proof)
            try:
                tx = self.sender.submit(payment.chain_id, purpose, payment.escrow, data,
                                        extra_gas=ESCROW_GAS_HEADROOM)
            except TransactionRejected as refused:
                if self.escrow.lock(payment.chain_id, payment.payee, payment.payer, payment.token,
                                    int(payment.lock_id)) is None and kind == "cancel":
                    # expired and released by anyone's cancelExpiredLock: the funds are back
                    return self._move(payment, (payment.status,), "cancelled", open=None, claimed="0",
                                      reason=f"{payment.reason}; the lock was already released")
                return self._move(payment, (payment.status,), "settle_failed", open=None,
                                  reason=f"{kind} refused: {refused.reason}")
            payment = self._move(payment, (payment.status,), None, settle_tx=tx.tx_hash)
        if tx.status not in FINAL:
            tx = self.sender.refresh(tx)
            if tx.status not in FINAL:
                return payment
        if tx.status != "mined":
            return payment if tx.status == "dropped" else self._move(
                payment, (payment.status,), "settle_failed", open=None, reason=f"{kind} {tx.status}")
        events = self.escrow.events(payment.chain_id, tx.mined_hash)
        job = int(payment.lock_id)
        claimed = [e for e in events["Claimed"] if int(e["jobId"]) == job]
        if claimed:
            amount = int(claimed[0]["amount"])
            status = "claimed" if kind == "claim" else "cancelled"
            return self._move(payment, (payment.status,), status, open=None, claimed=str(amount), settle_tx=tx.mined_hash)
        if any(int(e["jobId"]) == job for e in events["Canceled"]):
            return self._move(payment, (payment.status,), "cancelled", open=None, claimed="0", settle_tx=tx.mined_hash,
                              reason="the lock had expired: the contract cancelled it")
        return self._move(payment, (payment.status,), "settle_failed", open=None, reason=f"{kind} emitted no event")

    def _lock_event(self, payment: EscrowPayment, tx_hash: str | None) -> bool:
        if not tx_hash:
            return False
        for event in self.escrow.events(payment.chain_id, tx_hash)["Lock"]:
            if (int(event["jobId"]) == int(payment.lock_id) and event["payer"].lower() == payment.payer.lower()
                    and event["payee"].lower() == payment.payee.lower() and int(event["amount"]) == int(payment.amount)):
                return True
        return False

    def _move(self, payment: EscrowPayment, from_statuses: Sequence[str], to: str | None, **fields: Any) -> EscrowPayment:
        """Conditionally update the payment (status among `from_statuses`); on a lost race, the
        payment as the winner left it."""
        from pynamodb.exceptions import UpdateError

        now = self._clock()
        actions = [EscrowPayment.updated_at.set(now)]
        if to is not None:
            actions.append(EscrowPayment.status.set(to))
        for name, value in fields.items():
            attribute = getattr(EscrowPayment, name)
            actions.append(attribute.remove() if value is None else attribute.set(value))
        try:
            payment.update(actions=actions, condition=EscrowPayment.status.is_in(*from_statuses))
        except UpdateError as error:
            if getattr(error, "cause_response_code", None) != "ConditionalCheckFailedException":
                raise
            return self._reload(payment)
        if to is not None:
            logger.info("payment of job %s: %s", payment.job_id, to)
        return payment

    def _reload(self, payment: EscrowPayment) -> EscrowPayment:
        return EscrowPayment.get(payment.job_id, consistent_read=True)

    def _require(self, job_id: str) -> EscrowPayment:
        payment = self.get(job_id)
        if payment is None:
            raise KeyError(f"job {job_id} has no escrow payment")
        return payment
