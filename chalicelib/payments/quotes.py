"""What a job will lock in escrow, and whether the consumer's escrow allows it.

The quote is initializeCompute's `payment` (Ocean Node's shape) plus what the claim needs later
(the exact cost per minute, the durations the run time is clamped to). The consumer's checks
before a lock are 400s (`PaymentRefused.reason` says which): not authorized, insufficient funds,
lock amount / seconds / count exceeded, or the provider asked to pay itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Mapping, Sequence

from chalicelib.errors import BusinessError
from chalicelib.payments import pricing
from chalicelib.payments.escrow import EscrowContract


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


def quote_payment(escrow: EscrowContract, payee: str, decimals: Callable[[int, str], int], *, chain_id: int,
                  token: str, fees: Mapping[Any, Any], resources: Sequence[Mapping[str, Any]], max_job_duration: int,
                  min_job_duration: int, lock_margin: int) -> PaymentQuote:
    """The payment a job of `max_job_duration` seconds on `resources` must lock; the lock lives
    `lock_margin` seconds longer (time in the queue, then time to claim)."""
    prices = pricing.price_list(fees, chain_id, token)
    cost = prices.cost_per_minute(resources, decimals(chain_id, prices.token))
    amount = pricing.charge(cost, max_job_duration)
    if amount <= 0:
        raise BusinessError("this environment is free on that chain: no escrow payment is needed")
    return PaymentQuote(
        escrow_address=escrow.address(chain_id), payee=payee, chain_id=chain_id, token=prices.token,
        amount=amount, min_lock_seconds=int(max_job_duration) + lock_margin,
        cost_per_minute=cost, max_job_duration=int(max_job_duration), min_job_duration=int(min_job_duration),
    )  # fmt: skip


@dataclass(frozen=True)
class Pending:
    """This provider's locks of a payer reserved and not yet mined: the chain does not count them."""

    amount: int = 0
    count: int = 0


@dataclass(frozen=True)
class Room:
    """What the payer's escrow allows this provider to lock beyond what the chain counts: the
    smaller of its available funds and its authorization's amount left, and the locks left."""

    amount: int
    count: int


def check_escrow(escrow: EscrowContract, payee: str, quote: PaymentQuote, payer: str,
                 pending: Pending = Pending()) -> Room:
    """The consumer's authorization and funds allow this lock on top of `pending`, or
    PaymentRefused (400); the room the chain shows, for the reservation's condition."""
    if payer.lower() == payee.lower():
        raise PaymentRefused("payer_is_payee", "the provider cannot be its own consumer")
    auth = escrow.authorization(quote.chain_id, quote.token, payer, payee)
    if auth is None:
        raise PaymentRefused("not_authorized", f"escrow: the consumer has not authorized this provider "
                                               f"({payee}) to lock {quote.token}")
    held = f" ({pending.count} more pending for starts in progress)" if pending.count else ""
    if auth.max_lock_seconds < quote.min_lock_seconds:
        raise PaymentRefused("lock_seconds_exceeded", f"escrow: the lock needs {quote.min_lock_seconds} s but "
                                                      f"the authorization allows {auth.max_lock_seconds} s")
    if auth.current_locks + pending.count >= auth.max_lock_counts:
        raise PaymentRefused("lock_count_exceeded", f"escrow: the authorization allows {auth.max_lock_counts} "
                                                    f"locks and {auth.current_locks} are held{held}")
    if auth.current_locked_amount + pending.amount + quote.amount > auth.max_locked_amount:
        raise PaymentRefused("lock_amount_exceeded", f"escrow: locking {quote.amount} would exceed the "
                                                     f"authorized {auth.max_locked_amount}"
                                                     f" ({auth.current_locked_amount} locked{held})")
    funds = escrow.funds(quote.chain_id, payer, quote.token)
    if funds.available < pending.amount + quote.amount:
        reserved = f", {pending.amount} of it reserved for {pending.count} starts in progress" if pending.count else ""
        raise PaymentRefused("insufficient_funds", f"escrow: insufficient funds: {funds.available} available"
                                                   f"{reserved}, {quote.amount} needed")
    return Room(amount=min(funds.available, auth.max_locked_amount - auth.current_locked_amount),
                count=auth.max_lock_counts - auth.current_locks)
