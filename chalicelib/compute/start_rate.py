"""Rates of job starts: at most `limit` starts per fixed window of `window` seconds, counted in
the counters table (models.EnvironmentUsage, keys "rate#<name>#<window start>").

A free tier's slots bound how many free jobs run at once, not who gets them: one throwaway key
could take every slot and take each back the moment it ends (issue 20 observation 4). Rates
bound how fast the tier can be taken, provider-wide (what free compute costs the operator, whatever
the number of keys) and per consumer (so one key cannot hold it).

All of a start's windows are taken in one conditional transaction, so a refusal takes nothing; a
start refused or failed afterwards gives them back. A start that dies in between leaves its
count until the window ends: counters expire with their window (DynamoDB TTL), so nothing needs
healing. Fixed windows let up to twice a limit through around a window's edge.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Sequence

from pynamodb.exceptions import PynamoDBException, TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib.errors import ServiceUnavailable, TooManyRequests
from chalicelib.models import EnvironmentUsage

logger = logging.getLogger(__name__)

UNAVAILABLE = "Job store is unavailable, try again later"
EXPIRY_MARGIN = 3600  # counters outlive their window by this much (TTL deletes within days anyway)


@dataclass(frozen=True)
class Rate:
    """At most `limit` starts per `window` seconds under `name` (0: no limit); `refusal` is the
    429's message, with "{limit}" and "{retry}" (seconds until the window ends) filled in."""

    name: str
    limit: int
    window: int
    refusal: str


@dataclass(frozen=True)
class Taken:
    """The counter keys a start took (to give back if the start does not happen)."""

    keys: tuple[str, ...]


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


class StartRates:
    def __init__(self, model: type[EnvironmentUsage] = EnvironmentUsage, clock: Callable[[], float] = time.time):
        self._model = model
        self._clock = clock

    def take(self, rates: Sequence[Rate]) -> Taken:
        """One start under every rate, or none: TooManyRequests names the first rate full."""
        now = int(self._clock())
        limited = [rate for rate in rates if rate.limit > 0]
        if not limited:
            return Taken(())
        counter = self._model.running
        windows = [(rate, now - now % rate.window) for rate in limited]
        keys = tuple(f"rate#{rate.name}#{start}" for rate, start in windows)
        try:
            with TransactWrite(connection=self._model._get_connection().connection) as transaction:
                for (rate, start), key in zip(windows, keys):
                    transaction.update(self._model(key),
                                       actions=[counter.add(1), self._model.expires_at.set(_at(start + rate.window + EXPIRY_MARGIN))],
                                       condition=counter.does_not_exist() | (counter < rate.limit))
        except TransactWriteError as error:
            reasons = error.cancellation_reasons or []
            for (rate, start), reason in zip(windows, reasons):
                if getattr(reason, "code", None) == "ConditionalCheckFailed":
                    retry = start + rate.window - now
                    raise TooManyRequests(rate.refusal.format(limit=rate.limit, retry=retry), retry) from None
            raise ServiceUnavailable(UNAVAILABLE) from error
        except PynamoDBException as error:
            raise ServiceUnavailable(UNAVAILABLE) from error
        return Taken(keys)

    def give_back(self, taken: Taken) -> None:
        """Undo a take whose start did not happen; a failure here only leaves the count until
        its window ends, so it is logged, not raised (the start's own error is what matters)."""
        for key in taken.keys:
            try:
                self._model(key).update(actions=[self._model.running.add(-1)],
                                        condition=self._model.running > 0)
            except PynamoDBException as error:
                logger.warning("start rate %s not given back: %s", key.rsplit("#", 1)[0], type(error).__name__)
