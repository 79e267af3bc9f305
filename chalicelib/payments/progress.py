"""A job's escrow payment moves forward one step at a time, whoever takes the step: the start
that locks, the terminal hook that claims, the reconciler's heal(). Each step reads where the
payment is and what its transactions did on chain, and moves the record by a conditional write,
so concurrent or repeated steps never double a lock or a claim:

    reserved ──send_lock()──> locking ──(Lock mined)──> locked ──claim()──> claiming ──(Claimed)──> claimed
       │                         │                         └──cancel()──> cancelling ──(Claimed 0 / Canceled)──> cancelled
       └──cancel()──> cancelled  └──(reverted, dropped, refused)──> lock_failed

`reserved`: recorded with its job, its amount reserved in the payer's account
(`payments.escrow_accounts`), nothing sent. Only a start (or the same start again) sends its
lock; heal() never does. The reservation is given back, once, by the step that learns the lock
is mined, failed or will never be sent (a lock that reverted after costing gas also counts as
one of its payer's failed locks). A settlement asked for before the lock is mined is sent as
soon as it is. A cancel is a claim of 0 (the contract has no payee cancel of a live lock, see
`payments.escrow`); a claim reaching the chain after the lock's expiry is turned into a cancel by
the contract, and recorded as `cancelled` with that reason.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence

from chalicelib.chain.transaction_ledger import FINAL
from chalicelib.chain.transactions import TransactionRejected, TransactionSender
from chalicelib.payments.escrow import EscrowContract
from chalicelib.payments.escrow_accounts import EscrowAccounts
from chalicelib.observability.context import record
from chalicelib.payments.models import EscrowPayment
from chalicelib.payments.quotes import PaymentRefused

logger = logging.getLogger(__name__)

OPEN_STATUSES = ("locking", "claiming", "cancelling")
FINAL_STATUSES = ("lock_failed", "claimed", "cancelled", "settle_failed")
PAYMENT_STATUSES = ("reserved",) + OPEN_STATUSES + ("locked",) + FINAL_STATUSES

# Escrow scans the payee's live locks on every createLock and claim (~4.2k gas per lock), so the
# cost grows with locks mined between the estimate and our transaction: ESCROW_GAS_HEADROOM on
# top of the estimate covers ~50 of them. Unused gas is not paid; the balance check counts it.
ESCROW_GAS_HEADROOM = 200_000
NO_LOCK_GRACE = 120  # seconds a settlement waits for a lock transaction that was never recorded


class PaymentProgress:
    """The steps of the payment state machine over the escrow contract and the provider's sender."""

    def __init__(self, escrow: EscrowContract, sender: TransactionSender, accounts: EscrowAccounts,
                 clock: Callable[[], float] = time.time):
        self.escrow = escrow
        self.sender = sender
        self.accounts = accounts
        self._clock = clock

    def send_lock(self, payment: EscrowPayment) -> EscrowPayment:
        """Send the recorded lock (once per job: the sender's purpose `lock:<jobId>`); a lock the
        node refuses ends the payment `lock_failed` and is a PaymentRefused."""
        if payment.status == "reserved":
            payment = self.move(payment, ("reserved",), "locking", open=payment.chain_id)
            if payment.status != "locking":
                return payment  # cancelled meanwhile (its job stopped): nothing is sent
        data = self.escrow.create_lock_data(payment.chain_id, int(payment.lock_id), payment.token, payment.payer,
                                            int(payment.amount), int(payment.expiry))
        try:
            tx = self.sender.submit(payment.chain_id, f"lock:{payment.job_id}", payment.escrow, data,
                                    extra_gas=ESCROW_GAS_HEADROOM)
        except TransactionRejected as refused:
            self.release(payment, ("locking",), "lock_failed", open=None, held=None,
                         reason=f"lock refused: {refused.reason}")
            raise PaymentRefused("lock_refused", f"escrow refused the lock: {refused.reason}") from None
        return self.move(payment, ("locking", "claiming", "cancelling"), None, lock_tx=tx.tx_hash)

    def progress(self, payment: EscrowPayment) -> EscrowPayment:
        """One step forward from wherever the payment is (what heal() repeats)."""
        if payment.status not in OPEN_STATUSES:
            return payment
        lock_tx = self.sender.find(payment.chain_id, f"lock:{payment.job_id}")
        if lock_tx is None:
            if payment.status == "locking":  # the Lambda died between the record and the send
                try:
                    return self.send_lock(payment)
                except PaymentRefused:
                    return self.reload(payment)  # recorded as lock_failed
            if self._clock() - float(payment.created_at) > NO_LOCK_GRACE:
                return self.release(payment, OPEN_STATUSES, "cancelled", open=None, held=None,
                                    reason=(payment.reason or "") + " (nothing was locked)")
            return payment
        if lock_tx.status not in FINAL:
            lock_tx = self.sender.refresh(lock_tx)
            if lock_tx.status not in FINAL:
                return payment
        if lock_tx.status != "mined" or not self._lock_event(payment, lock_tx.mined_hash):
            # reverted, or mined without our Lock: the provider paid its gas (dropped: it did not)
            return self.release(payment, OPEN_STATUSES, "lock_failed", failed=lock_tx.status != "dropped",
                                open=None, held=None, reason=_lock_failure(lock_tx.status, lock_tx.error))
        if payment.reserved is not None:
            payment = self.release(payment, OPEN_STATUSES, None)  # the chain counts the lock now
        if payment.status == "locking":
            return self.move(payment, ("locking",), "locked", open=None, held=payment.chain_id)
        return self._settle(payment)

    def release(self, payment: EscrowPayment, from_statuses: Sequence[str], to: str | None, *, failed: bool = False,
                **fields: Any) -> EscrowPayment:
        """`move()`, giving the payment's reservation back in the same transaction if it still
        holds one (`failed`: its lock cost gas and failed, one more failure of its payer)."""
        if payment.reserved is None:
            return self.move(payment, from_statuses, to, **fields)
        actions, condition = self._change(from_statuses, to, fields)
        if not self.accounts.release(payment, failed=failed, actions=actions, condition=condition):
            return self.reload(payment)
        if to is not None:
            logger.info("payment of job %s: %s", payment.job_id, to)
        return self.reload(payment)

    def _settle(self, payment: EscrowPayment) -> EscrowPayment:
        """Send (or resend, if dropped) the claim or cancel of a mined lock, then record what the
        chain's Claimed / Canceled events say was paid."""
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
                    return self.move(payment, (payment.status,), "cancelled", open=None, claimed="0",
                                      reason=f"{payment.reason}; the lock was already released")
                return self.move(payment, (payment.status,), "settle_failed", open=None,
                                  reason=f"{kind} refused: {refused.reason}")
            payment = self.move(payment, (payment.status,), None, settle_tx=tx.tx_hash)
        if tx.status not in FINAL:
            tx = self.sender.refresh(tx)
            if tx.status not in FINAL:
                return payment
        if tx.status != "mined":
            return payment if tx.status == "dropped" else self.move(
                payment, (payment.status,), "settle_failed", open=None, reason=f"{kind} {tx.status}")
        events = self.escrow.events(payment.chain_id, tx.mined_hash)
        job = int(payment.lock_id)
        claimed = [e for e in events["Claimed"] if int(e["jobId"]) == job]
        if claimed:
            amount = int(claimed[0]["amount"])
            status = "claimed" if kind == "claim" else "cancelled"
            return self.move(payment, (payment.status,), status, open=None, claimed=str(amount), settle_tx=tx.mined_hash)
        if any(int(e["jobId"]) == job for e in events["Canceled"]):
            return self.move(payment, (payment.status,), "cancelled", open=None, claimed="0", settle_tx=tx.mined_hash,
                              reason="the lock had expired: the contract cancelled it")
        return self.move(payment, (payment.status,), "settle_failed", open=None, reason=f"{kind} emitted no event")

    def _lock_event(self, payment: EscrowPayment, tx_hash: str | None) -> bool:
        """Whether the mined transaction locked exactly this payment (job, payer, payee, amount)."""
        if not tx_hash:
            return False
        for event in self.escrow.events(payment.chain_id, tx_hash)["Lock"]:
            if (int(event["jobId"]) == int(payment.lock_id) and event["payer"].lower() == payment.payer.lower()
                    and event["payee"].lower() == payment.payee.lower() and int(event["amount"]) == int(payment.amount)):
                return True
        return False

    def move(self, payment: EscrowPayment, from_statuses: Sequence[str], to: str | None, **fields: Any) -> EscrowPayment:
        """Conditionally update the payment (status among `from_statuses`); on a lost race, the
        payment as the winner left it."""
        from pynamodb.exceptions import UpdateError

        actions, condition = self._change(from_statuses, to, fields)
        try:
            payment.update(actions=actions, condition=condition)
        except UpdateError as error:
            if getattr(error, "cause_response_code", None) != "ConditionalCheckFailedException":
                raise
            return self.reload(payment)
        if to is not None:
            logger.info("payment of job %s: %s", payment.job_id, to)
            failure = {"settle_failed": "EscrowClaimFailures", "lock_failed": "EscrowLockFailures"}.get(to)
            if failure:  # the failed-claims alarm reads EscrowClaimFailures
                record(failure, chain=str(int(payment.chain_id)))
        return payment

    def _change(self, from_statuses: Sequence[str], to: str | None, fields: dict[str, Any]) -> tuple[list[Any], Any]:
        actions = [EscrowPayment.updated_at.set(self._clock())]
        if to is not None:
            actions.append(EscrowPayment.status.set(to))
        for name, value in fields.items():
            attribute = getattr(EscrowPayment, name)
            actions.append(attribute.remove() if value is None else attribute.set(value))
        return actions, EscrowPayment.status.is_in(*from_statuses)

    def reload(self, payment: EscrowPayment) -> EscrowPayment:
        """The payment as stored now (after a lost race or another process's step)."""
        return EscrowPayment.get(payment.job_id, consistent_read=True)


def _lock_failure(status: str, error: str | None) -> str:
    """What the consumer reads when its lock failed on chain."""
    if status == "reverted":
        return ("lock reverted on chain: the payer's escrow changed after the checks (funds withdrawn, or "
                "locked by another payee)")
    return f"lock {status}: {error or 'no Lock event'}"
