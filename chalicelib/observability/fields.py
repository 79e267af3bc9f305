"""The shapes an invocation reports (its fields and metrics) and what of them may be written."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

# The only fields a line may carry (an allowlist: nothing else of a request can leak into logs).
LOGGED_FIELDS = frozenset({
    "route", "method", "status", "outcome", "jobId", "consumer", "environment", "function", "source", "action",
    "jobStatus", "error", "reason", "durationMs", "requestId", "protocol", "payment", "coldStart", "report",
})
_MAX_TEXT = 160
_SLUG = re.compile(r"[A-Za-z0-9_.:/#@ -]{1,160}")
_DIMENSION = re.compile(r"[A-Za-z0-9_.:#-]{1,100}")


@dataclass
class Metric:
    name: str
    value: float
    unit: str
    dimensions: dict[str, str]


@dataclass
class Invocation:
    kind: str  # request | event | schedule | invoke
    name: str  # the route or the function
    started: float = field(default_factory=time.monotonic)
    fields: dict[str, Any] = field(default_factory=dict)
    metrics: list[Metric] = field(default_factory=list)


def dimension(value: Any) -> str:
    """A metric dimension value: short and of a fixed alphabet, else "other" (a dimension value
    from a request could otherwise make a metric per attacker string)."""
    text = str(value)
    return text if _DIMENSION.fullmatch(text) else "other"


def safe_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """The allowed fields, each a number, a bool or a short text."""
    safe: dict[str, Any] = {}
    for key, value in fields.items():
        if key not in LOGGED_FIELDS:
            continue
        if isinstance(value, (bool, int, float)) or value is None:
            safe[key] = value
        elif isinstance(value, dict) and key == "report":
            safe[key] = {str(k)[:40]: v for k, v in value.items() if isinstance(v, (int, float, bool))}
        else:
            text = str(value)[:_MAX_TEXT]
            safe[key] = text if _SLUG.fullmatch(text) else "(unprintable)"
    return safe
