"""The time budget of a request, and every network limit sized to it.

API Gateway abandons a request after 29 s (the API function's timeout is the same), so every
request must answer within REQUEST_BUDGET_SECONDS whatever hangs. Each kind of dependency call
is bounded on its own, so one that accepts the connection and never answers costs at most:

    DynamoDB (PynamoDB)   2 attempts x (1 s connect + 2 s read) + <= 1 s backoff  =  7 s
    other AWS (boto3)     2 attempts x (2 s connect + 3 s read) + <= 1 s backoff  = 11 s
    chain RPC             one attempt of RPC_TIMEOUT (5 s; web3 retries nothing)   =  5 s

and one hung call of each kind still fits in the budget (7 + 11 + 5 < 25). The first call to a
hung dependency fails the request with a 503, so a request never waits on it twice.

A compute start makes many calls, so it also checks the time left before it reserves anything
(Deadline.require): the reservation, the manifest, SubmitJob and, if one of them times out, the
undo must fit in what remains (START_RESERVE_SECONDS: one AWS call timing out completely, plus
the undo). A Lambda killed mid-start anyway is healed by the reconciler (compute.reconcile).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from functools import wraps
from typing import Any, Callable, Iterator, TypeVar

from chalicelib.errors import ServiceUnavailable

REQUEST_BUDGET_SECONDS = 25.0

DYNAMODB_CONNECT_SECONDS = 1.0
DYNAMODB_READ_SECONDS = 2.0
DYNAMODB_RETRIES = 1  # PynamoDB's max_retry_attempts: attempts after the first

AWS_CONNECT_SECONDS = 2.0
AWS_READ_SECONDS = 3.0
AWS_ATTEMPTS = 2  # botocore's total_max_attempts: the first attempt included

RPC_TIMEOUT_SECONDS = 5.0  # the default of the RPC_TIMEOUT setting

BACKOFF_SECONDS = 1.0  # botocore's standard mode waits at most 2^0 s before the first retry

TOO_LATE = "Not enough time left to start the job safely; try again"
OUT_OF_TIME = "The request ran out of time; try again"
MIN_CALL_SECONDS = 0.2  # below this a call cannot succeed: answer now instead


def worst_dynamodb_call() -> float:
    return (DYNAMODB_RETRIES + 1) * (DYNAMODB_CONNECT_SECONDS + DYNAMODB_READ_SECONDS) + BACKOFF_SECONDS


def worst_aws_call() -> float:
    return AWS_ATTEMPTS * (AWS_CONNECT_SECONDS + AWS_READ_SECONDS) + BACKOFF_SECONDS


# What a start needs after its checks: one AWS call timing out completely, then the undo.
START_RESERVE_SECONDS = worst_aws_call() + 1.0


class Deadline:
    """When the current invocation must have answered: the Lambda's own clock when there is one,
    never later than the request budget (locally there is no Lambda clock, only the budget)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._ends = clock() + seconds

    @classmethod
    def for_invocation(cls, context: object | None, budget: float = REQUEST_BUDGET_SECONDS) -> "Deadline":
        """From a Lambda context (`app.lambda_context`, None outside Lambda): the sooner of its
        remaining time and `budget` from now."""
        seconds = budget
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if callable(remaining):
            try:
                seconds = min(seconds, float(remaining()) / 1000)
            except (TypeError, ValueError):
                pass
        return cls(seconds)

    def remaining(self) -> float:
        return self._ends - self._clock()

    def require(self, seconds: float) -> None:
        """ServiceUnavailable (503) unless at least `seconds` are left."""
        if self.remaining() < seconds:
            raise ServiceUnavailable(TOO_LATE)


_current: ContextVar[Deadline | None] = ContextVar("deadline", default=None)


@contextmanager
def within(deadline: Deadline) -> Iterator[Deadline]:
    """Make `deadline` the one `call_timeout` honours while the block runs (this request's)."""
    token = _current.set(deadline)
    try:
        yield deadline
    finally:
        _current.reset(token)


Answer = TypeVar("Answer")


def with_deadline(handler: Callable[[Any, Deadline], Answer]) -> Callable[..., Answer]:
    """A route handler `handler(call, deadline)` that runs within its request's deadline: the
    Lambda's remaining time (`app.lambda_context`, None locally), at most the budget. The
    route calls it as `handler(call, app.lambda_context)`."""

    @wraps(handler)
    def run(call: Any, lambda_context: object | None = None) -> Answer:
        with within(Deadline.for_invocation(lambda_context)) as deadline:
            return handler(call, deadline)

    return run


def call_timeout(limit: float) -> float:
    """The timeout of one call: `limit`, or less if the current request's deadline is nearer;
    ServiceUnavailable if no useful time is left. A slow dependency that answers just in time,
    call after call, thus cannot hold a request past its budget either."""
    deadline = _current.get()
    if deadline is None:
        return limit
    left = deadline.remaining()
    if left < MIN_CALL_SECONDS:
        raise ServiceUnavailable(OUT_OF_TIME)
    return min(limit, left)
