"""What a job holds while it runs, taken and given back in single DynamoDB transactions: a slot
of its environment (and of any further counter, e.g. a free tier's), every order that paid for it
marked used, and its record.

A start reserves everything at once, so two starts with one order cannot both win, and a full
environment refuses before anything is written; the refusal names which condition failed (an
order already used wins over a full environment: retrying cannot help it). A gate may add its
own items to that transaction (an escrow start: its payment and the payer's reservation), so
nothing of a refused start is written. A start that fails after its reservation gives everything
back in one more transaction that also ends the job with 31, only if the job is still at 1, so
the undo never races a job that went on.

An order already used by a job of the same owner for the same orders is the same start again
(`same_start`): the caller returns or finishes that job instead of refusing it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from pynamodb.exceptions import DoesNotExist, PynamoDBException, TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib.compute import status as st
from chalicelib.compute.environments import Environment
from chalicelib.compute.usage import UsageCounter
from chalicelib.errors import BusinessError, ServiceUnavailable
from chalicelib.models import EnvironmentUsage, JobRecord, OrderUse

UNAVAILABLE = "Job store is unavailable, try again later"
DISPATCH_FAILED = "The job could not be dispatched to the compute backend"


@dataclass(frozen=True)
class Order:
    """One paid input of a job: its resource name (for errors) and its on-chain order tx."""

    resource: str
    chain_id: int
    tx_id: str

    @property
    def key(self) -> str:
        return f"{self.chain_id}:{self.tx_id.lower()}"


@dataclass(frozen=True)
class Slot:
    """A counter a job holds besides its environment's slot (a free tier's, a consumer's free
    jobs): taken under `limit` in the start transaction, refused with `refusal` when full, and
    given back by the write that ends the job (compute.transitions)."""

    key: str
    limit: int
    refusal: str


class OrderAlreadyUsed(BusinessError):
    """An order of the request started another job (another owner's, or other orders')."""

    def __init__(self, order: Order):
        super().__init__({f"{order.resource}.transferTxId": "order_already_used"})
        self.order = order


class GateContended(Exception):
    """A condition of the gate's own items failed (its account moved since it was read): the
    start reads again and retries its reservation."""


# A gate's items in the start's transaction: it adds them and says how many puts and updates.
ExtraItems = Callable[[TransactWrite], tuple[int, int]]


def unique_orders(orders: Sequence[Order]) -> list[Order]:
    """Each order once, by key (chain and lower-case tx): one transaction cannot write an item twice."""
    seen: dict[str, Order] = {}
    for order in orders:
        seen.setdefault(order.key, order)
    return list(seen.values())


def reservation_refusal(error: TransactWriteError, environment: Environment, orders: Sequence[Order],
                        slots: Sequence[Slot] = (), extra: tuple[int, int] = (0, 0)) -> Exception:
    """Which condition refused the start. DynamoDB reports the items in the order PynamoDB sends
    them, puts before updates: each order, the job, the gate's puts; then the environment slot,
    each further slot, the gate's updates. An order already used wins over a full environment:
    retrying cannot help it."""
    failed = [getattr(reason, "code", None) == "ConditionalCheckFailed" for reason in (error.cancellation_reasons or [])]
    puts, updates = len(orders) + 1 + extra[0], 1 + len(slots) + extra[1]
    if len(failed) == puts + updates:
        for order, refused in zip(orders, failed):
            if refused:
                return OrderAlreadyUsed(order)
        if any(failed[len(orders) + 1:puts]) or any(failed[puts + 1 + len(slots):]):
            return GateContended()
        if failed[puts]:
            full = BusinessError(f"Environment {environment.id} is at capacity ({environment.max_jobs} jobs); try again later")
            full.reason = "capacity"  # type: ignore[attr-defined]  # what the StartsRefused metric counts it as
            return full
        for slot, refused in zip(slots, failed[puts + 1:]):
            if refused:
                tier_full = BusinessError(slot.refusal)
                tier_full.reason = "free_tier_full"  # type: ignore[attr-defined]
                return tier_full
    if getattr(error, "cause_response_code", None) in ("TransactionCanceledException", "TransactionConflictException"):
        return ServiceUnavailable("The job could not be recorded because of a concurrent change; try again")
    return ServiceUnavailable(UNAVAILABLE)


class JobReservations:
    """The start's and the undo's transactions over the jobs, orders and counters tables."""

    def __init__(self, usage: UsageCounter, jobs: type[JobRecord] = JobRecord, orders: type[OrderUse] = OrderUse,
                 clock: Callable[[], float] = time.time) -> None:
        self._usage = usage
        self._jobs = jobs
        self._orders = orders
        self._clock = clock

    def order_used(self, chain_id: int, tx_id: str) -> bool:
        """Whether this order already started a job: initializeCompute must then ask for a
        reuseOrder (a new transferTxId) instead of offering the order as is."""
        try:
            self._orders.get(Order("", chain_id, tx_id).key)
        except DoesNotExist:
            return False
        except PynamoDBException as error:
            raise ServiceUnavailable(UNAVAILABLE) from error
        return True

    def same_start(self, owner: str, orders: Sequence[Order]) -> Optional[JobRecord]:
        """The job these orders started, if it is `owner`'s and was started with exactly these
        orders (the same start again: return or finish it); None if no order is used yet;
        OrderAlreadyUsed if one is used otherwise."""
        unique = unique_orders(orders)
        if not unique:
            return None
        try:
            used = {use.order_id: use.job_id for use in self._orders.batch_get([order.key for order in unique])}
            if not used:
                return None
            job_ids = set(used.values())
            if len(job_ids) == 1 and len(used) == len(unique):
                try:
                    job = self._jobs.get(job_ids.pop(), consistent_read=True)
                except DoesNotExist:
                    job = None
                if job is not None and job.owner == owner and set(job.orders or []) == set(used):
                    return job
        except PynamoDBException as error:
            raise ServiceUnavailable(UNAVAILABLE) from error
        raise OrderAlreadyUsed(next(order for order in unique if order.key in used))

    def reserve(self, job: JobRecord, environment: Environment, orders: Sequence[Order], slots: Sequence[Slot] = (),
                extra: ExtraItems | None = None) -> None:
        """One transaction: a slot of the environment (and of each of `slots`), every order
        marked used, the job record, and the gate's `extra` items."""
        unique = unique_orders(orders)
        actions, condition = self._usage.reserve(environment.max_jobs)
        counts = (0, 0)
        try:
            with self._transaction() as transaction:
                transaction.update(EnvironmentUsage(environment.id), actions=actions, condition=condition)
                for slot in slots:
                    slot_actions, slot_condition = self._usage.reserve(slot.limit)
                    transaction.update(EnvironmentUsage(slot.key), actions=slot_actions, condition=slot_condition)
                for order in unique:
                    used = self._orders(order.key, job_id=job.job_id, created_at=job.date_created)
                    transaction.save(used, condition=self._orders.order_id.does_not_exist())
                transaction.save(job, condition=self._jobs.job_id.does_not_exist())
                if extra is not None:
                    counts = extra(transaction)
        except TransactWriteError as error:
            refusal = reservation_refusal(error, environment, unique, slots, counts)
            if getattr(refusal, "reason", None) == "capacity" and self._usage.drained(environment.id):
                refusal = BusinessError(f"Environment {environment.id} is not accepting new jobs (drained by its operator); "
                                        "try another environment or later")
                refusal.reason = "drained"  # type: ignore[attr-defined]
            raise refusal from None
        except PynamoDBException as error:
            raise ServiceUnavailable(UNAVAILABLE) from error

    def release(self, job: JobRecord, environment_id: str, order_keys: Sequence[str],
                condition: Any = None, *, slot_keys: Sequence[str] = (), reason: str = DISPATCH_FAILED) -> None:
        """One transaction: the slot back (the environment's and each of `slot_keys`), the orders
        released, the job ended with 31, if the job is still at 1 (and `condition` holds)."""
        now = int(self._clock())
        guard = self._jobs.status == st.WARMING_UP
        with self._transaction() as transaction:
            transaction.update(EnvironmentUsage(environment_id), actions=[EnvironmentUsage.running.add(-1)])
            for key in slot_keys:
                transaction.update(EnvironmentUsage(key), actions=[EnvironmentUsage.running.add(-1)])
            for key in order_keys:
                transaction.delete(self._orders(key), condition=self._orders.job_id == job.job_id)
            transaction.update(job, actions=[
                self._jobs.status.set(st.DATA_FAILED),
                self._jobs.status_text.set(st.status_text(st.DATA_FAILED)),
                self._jobs.date_finished.set(now),
                self._jobs.updated_at.set(now),
                self._jobs.termination_details.set({"exitCode": None, "reason": reason}),
                self._jobs.active_environment.remove(),
            ], condition=guard if condition is None else guard & condition)

    def _transaction(self) -> TransactWrite:
        return TransactWrite(connection=self._jobs._get_connection().connection)
