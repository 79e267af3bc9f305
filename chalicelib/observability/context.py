"""The invocation being served (a request, an event, a scheduled run) and what it reports: the
fields of its log line and the metrics it recorded, written together when it ends.

A contextvar holds it, so the threads of the local server keep their requests apart as Lambda
containers do. A metric recorded outside any invocation (a CLI, the local dispatcher's thread)
is written at once.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator

from chalicelib.observability.fields import Invocation, Metric, dimension

log = logging.getLogger(__name__)

_current: ContextVar[Invocation | None] = ContextVar("c2d_invocation", default=None)
_served = {"count": 0}


def current() -> Invocation | None:
    return _current.get()


def annotate(**fields: Any) -> None:
    """Add fields to the current invocation's line (None values are left out)."""
    invocation = _current.get()
    if invocation is not None:
        invocation.fields.update({key: value for key, value in fields.items() if value is not None})


def record(name: str, value: float = 1.0, unit: str = "Count", **dimensions: Any) -> None:
    """A metric of the current invocation, written with its line; at once outside any.
    `dimensions` (environment, status, reason, chain...) add a dimension set beside the
    aggregate one (service only) that the alarms read."""
    metric = Metric(name, float(value), unit, {key: dimension(value) for key, value in dimensions.items()})
    invocation = _current.get()
    if invocation is not None:
        invocation.metrics.append(metric)
        return
    try:
        from chalicelib.observability.emit import metrics as write_metrics

        write_metrics([metric])
    except Exception as error:  # noqa: BLE001 - reporting must never break the work it reports
        log.warning("metric %s not written (%s)", name, type(error).__name__)


@contextmanager
def invocation(kind: str, name: str, **fields: Any) -> Iterator[Invocation]:
    """Serve one request or event; its line and metrics are written when it ends, also when it
    raises (outcome "error" and the exception's class, never its message)."""
    served = Invocation(kind, name, fields={key: value for key, value in fields.items() if value is not None})
    served.fields["coldStart"] = _served["count"] == 0
    _served["count"] += 1
    token = _current.set(served)
    try:
        yield served
    except BaseException as error:
        served.fields.setdefault("outcome", "error")
        served.fields.setdefault("error", type(error).__name__)
        raise
    finally:
        _current.reset(token)
        served.fields["durationMs"] = round((time.monotonic() - served.started) * 1000, 1)
        try:
            from chalicelib.observability.emit import invocation as write_invocation

            write_invocation(served)
        except Exception as error:  # noqa: BLE001 - reporting must never break the work it reports
            log.warning("invocation line not written (%s)", type(error).__name__)
