"""A payer's escrow as this provider's starts see it: the locks reserved and not yet mined, and the
locks that failed on chain lately. Both keep the provider from paying gas for nothing.

**Reservations.** The chain counts a lock once it is mined. Six starts that check the same funds at
once all see them free and all send a lock, and every lock beyond the funds reverts on chain at
the provider's expense. So a start reserves its lock in DynamoDB before anything is sent: the
payer's `EscrowAccount` (`escrow:<chain>:<payer>:<token>`) holds `pending` (amount) and
`pendingCount` (locks) of the reservations not yet mined, and one conditional write, in the very
transaction that records the job and its payment, adds the new lock if

    pending      <= room.amount - amount   (room: min(available funds, authorized amount left))
    pendingCount <= room.count - 1         (room: the authorization's locks left)
    released     == what was read before the chain was read

`released` counts reservations given back. A reservation is given back (once: the payment's
`reserved` attribute is removed in the same transaction) when its lock is mined, fails, or will
never be sent; from then on the chain counts it, or nothing does. Reading the account *before*
the chain and requiring `released` unchanged closes the one gap: a lock mined and given back
between our chain read and our write would otherwise be counted by neither. A lock mined and
not yet given back would be counted twice: before refusing, a start moves the payments of
`pendingJobs` forward (`settle_pending`: a mined lock gives its reservation back) and reads
again, a few times with short pauses (a concurrent start may hold the job whose lock was just
mined, and gives its reservation back a moment later). Funds the payer withdraws or another payee locks between our read and our lock are not
ours to reserve: that lock reverts (below).

**Failed locks.** A lock that reverts on chain (the payer withdrew or was locked by another
payee after our checks, observation 1c of issue 20) cost the provider its gas. The payer's
`escrow:<chain>:<payer>` item keeps when its locks failed; with `max_failures` of them within
`failure_window` seconds its starts are refused with 429 (Retry-After) before anything is read
from the chain or written. Settings `ESCROW_LOCK_FAILURES` (3) and `ESCROW_FAILURE_WINDOW`
(3600 s): the provider pays at most that many reverted locks (~31k gas each) per payer per window.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from pynamodb.transactions import TransactWrite

from chalicelib.errors import ServiceUnavailable, TooManyRequests
from chalicelib.payments.escrow import EscrowContract
from chalicelib.payments.models import EscrowAccount, EscrowPayment
from chalicelib.payments.quotes import PaymentQuote, Pending, Room, check_escrow

logger = logging.getLogger(__name__)

MAX_FAILURES = 3
FAILURE_WINDOW = 3600  # s
ROOM_REASONS = ("insufficient_funds", "lock_count_exceeded", "lock_amount_exceeded")
MAX_SETTLED = 20  # pending payments a start moves forward before it refuses
# Reads of the account and the chain a start makes before it refuses for want of room, and the
# pause (s, growing) between them: at most 0.25 + 0.5 + 0.75 s of a request's 25.
ROOM_ATTEMPTS = 4
ROOM_PAUSE = 0.25


def reservation_key(chain_id: int, payer: str, token: str) -> str:
    return f"escrow:{int(chain_id)}:{payer.lower()}:{token.lower()}"


def failures_key(chain_id: int, payer: str) -> str:
    return f"escrow:{int(chain_id)}:{payer.lower()}"


class ReservationContended(Exception):
    """The reservation's condition failed: another start reserved or a lock was given back since
    it was read. Read the account and the chain again (a start retries a few times)."""


@dataclass(frozen=True)
class Reservation:
    """One lock to reserve: the account, the amount, the `released` version read before the
    chain, and the room the chain showed."""

    key: str
    amount: int
    released: int | None
    room: Room

    def condition(self) -> Any:
        account = EscrowAccount
        version = account.released.does_not_exist() if self.released is None else account.released == self.released
        amount = account.pending.does_not_exist() | (account.pending <= self.room.amount - self.amount)
        count = account.pending_count.does_not_exist() | (account.pending_count <= self.room.count - 1)
        return version & amount & count

    def actions(self, job_id: str, now: float) -> list[Any]:
        return [EscrowAccount.pending.add(self.amount), EscrowAccount.pending_count.add(1),
                EscrowAccount.pending_jobs.add({job_id}), EscrowAccount.updated_at.set(int(now))]


class EscrowAccounts:
    """Reservations and failed locks of the payers of one provider (`payee`)."""

    def __init__(self, escrow: EscrowContract, payee: str, *, clock: Callable[[], float] = time.time,
                 max_failures: int = MAX_FAILURES, failure_window: int = FAILURE_WINDOW,
                 settle_pending: Callable[[list[str]], None] = lambda job_ids: None) -> None:
        """`settle_pending(job_ids)` moves those jobs' payments one step forward (their locks
        mined give their reservations back): what a start does before it refuses."""
        self._escrow = escrow
        self._payee = payee
        self._clock = clock
        self.settle_pending = settle_pending
        self.max_failures = max_failures
        self.failure_window = failure_window

    # ---- failed locks ----------------------------------------------------------------------

    def throttle(self, chain_id: int, payer: str) -> None:
        """TooManyRequests (429) while `max_failures` of the payer's locks failed within the window."""
        if self.max_failures <= 0:
            return
        now = self._clock()
        recent = sorted(t for t in self._failures(chain_id, payer) if t > now - self.failure_window)
        if len(recent) >= self.max_failures:
            wait = recent[len(recent) - self.max_failures] + self.failure_window - now
            raise TooManyRequests(f"escrow: {len(recent)} locks of this consumer failed on chain in the last "
                                  f"{self.failure_window} s (funds withdrawn or locked elsewhere after the "
                                  f"checks); try again in {int(wait) + 1} s", int(wait) + 1)

    def _failures(self, chain_id: int, payer: str) -> list[float]:
        try:
            return [float(t) for t in EscrowAccount.get(failures_key(chain_id, payer), consistent_read=True).failures or []]
        except EscrowAccount.DoesNotExist:
            return []

    # ---- reservations ----------------------------------------------------------------------

    def reservation(self, quote: PaymentQuote, payer: str) -> Reservation:
        """Read the payer's account, then the chain: the reservation to write, or PaymentRefused
        (400) when the lock does not fit beside the ones already pending."""
        from chalicelib.payments.quotes import PaymentRefused

        key = reservation_key(quote.chain_id, payer, quote.token)
        for attempt in range(ROOM_ATTEMPTS):
            try:
                account = EscrowAccount.get(key, consistent_read=True)
                pending = Pending(int(account.pending or 0), int(account.pending_count or 0))
                released = None if account.released is None else int(account.released)
                pending_jobs = sorted(account.pending_jobs or ())
            except EscrowAccount.DoesNotExist:
                pending, released, pending_jobs = Pending(), None, []
            try:
                room = check_escrow(self._escrow, self._payee, quote, payer, pending)
            except PaymentRefused as refused:
                if attempt == ROOM_ATTEMPTS - 1 or not pending_jobs or refused.reason not in ROOM_REASONS:
                    raise
                if attempt:
                    # a concurrent start holds the job its lock was mined for and gives its
                    # reservation back in a moment: until then the lock is counted twice
                    time.sleep(ROOM_PAUSE * attempt)
                else:
                    self.settle_pending(pending_jobs[:MAX_SETTLED])  # locks mined meanwhile are counted once
                continue
            return Reservation(key, quote.amount, released, room)
        raise AssertionError("unreachable")

    def add_to(self, transaction: TransactWrite, reservation: Reservation, job_id: str) -> None:
        """The reservation's conditional update, inside the caller's transaction."""
        transaction.update(EscrowAccount(reservation.key), actions=reservation.actions(job_id, self._clock()),
                           condition=reservation.condition())

    def reserve(self, payment: EscrowPayment, reservation: Reservation) -> bool:
        """The payment record and its reservation in one transaction (a lock outside a job's start);
        False when the payment exists already. ReservationContended when the account moved."""
        from pynamodb.exceptions import TransactWriteError

        try:
            with TransactWrite(connection=EscrowPayment._get_connection().connection) as transaction:
                transaction.save(payment, condition=EscrowPayment.job_id.does_not_exist())
                self.add_to(transaction, reservation, payment.job_id)
        except TransactWriteError as error:
            failed = _failed(error)
            if failed[:1] == [True]:
                return False
            if len(failed) == 2 and failed[1]:
                raise ReservationContended() from None
            raise ServiceUnavailable("the payments store did not answer; try again") from None
        return True

    def release(self, payment: EscrowPayment, *, failed: bool = False, actions: Sequence[Any] = (),
                condition: Any = None) -> bool:
        """Give the payment's reservation back (once), with `actions` on the payment under
        `condition` in the same transaction (its status move), and with `failed` count a failed
        lock of its payer. False when it was given back already or `condition` failed."""
        from pynamodb.exceptions import TransactWriteError

        if payment.reserved is None:
            return False
        now = self._clock()
        account = EscrowAccount(reservation_key(payment.chain_id, payment.payer, payment.token))
        held = EscrowPayment.reserved == payment.reserved
        try:
            with TransactWrite(connection=EscrowPayment._get_connection().connection) as transaction:
                transaction.update(payment, actions=[*actions, EscrowPayment.reserved.remove()],
                                   condition=held if condition is None else held & condition)
                transaction.update(account, actions=[
                    EscrowAccount.pending.add(-int(payment.reserved)), EscrowAccount.pending_count.add(-1),
                    EscrowAccount.pending_jobs.delete({payment.job_id}), EscrowAccount.released.add(1),
                    EscrowAccount.updated_at.set(int(now))])
                if failed:
                    failures = EscrowAccount.failures
                    transaction.update(EscrowAccount(failures_key(payment.chain_id, payment.payer)), actions=[
                        failures.set((failures | []).append([int(now)])), EscrowAccount.updated_at.set(int(now))])
        except TransactWriteError as error:
            if _failed(error)[:1] == [True]:
                payment.reserved = None
                return False
            raise
        payment.reserved = None
        if failed:
            self._trim(payment.chain_id, payment.payer)
            logger.warning("payment of job %s: a lock of %s failed on chain", payment.job_id, payment.payer)
        return True

    def _trim(self, chain_id: int, payer: str) -> None:
        """Keep the failures list short: only those still within the window (best effort)."""
        from pynamodb.exceptions import PynamoDBException
        from pynamodb.expressions.condition import size

        key = failures_key(chain_id, payer)
        try:
            item = EscrowAccount.get(key, consistent_read=True)
            kept = [int(t) for t in item.failures or [] if float(t) > self._clock() - self.failure_window]
            if len(kept) < len(item.failures or []):
                item.update(actions=[EscrowAccount.failures.set(kept)],
                            condition=size(EscrowAccount.failures) == len(item.failures or []))
        except PynamoDBException:
            pass  # a concurrent failure appended one: the next trim keeps the list short


def _failed(error: Any) -> list[bool]:
    """Which items of a cancelled transaction failed their condition, in DynamoDB's order."""
    return [getattr(reason, "code", None) == "ConditionalCheckFailed" for reason in error.cancellation_reasons or []]
