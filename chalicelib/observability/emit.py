"""Writes lines and metrics with AWS Lambda Powertools (imported here, on first use only).

Lines: Powertools' Logger, one JSON object per line on stdout (CloudWatch Logs in Lambda, the
api log under `make run`). Metrics: Powertools' EphemeralMetrics, CloudWatch's embedded metric
format on stdout, which Lambda's log agent turns into metrics at no API call. Each metric is
written with two dimension sets: `service` alone (what the alarms read) and `service` with its
own dimensions (environment, status, reason, chain: what the dashboard shows).

`service` is POWERTOOLS_SERVICE_NAME (`python -m infra configure` sets the stage's resource
prefix, the stack's alarms use the same), the namespace POWERTOOLS_METRICS_NAMESPACE (OceanC2D).
"""
from __future__ import annotations

import logging
import os
import sys
from functools import lru_cache
from typing import TYPE_CHECKING, Iterable

from chalicelib.observability.fields import Invocation, Metric, safe_fields

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger

NAMESPACE = "OceanC2D"


def service_name() -> str:
    return os.environ.get("POWERTOOLS_SERVICE_NAME") or os.environ.get("RESOURCE_PREFIX") or "ocean-c2d"


def namespace() -> str:
    return os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or NAMESPACE


class _Stdout(logging.StreamHandler):
    """stdout as it is when the line is written (tests and the local server replace it)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


@lru_cache(maxsize=1)
def logger() -> "Logger":
    from aws_lambda_powertools import Logger

    built = Logger(service=service_name(), logger_handler=_Stdout(), log_uncaught_exceptions=False)
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        # In Lambda, the code's own log lines (chalicelib's loggers) become JSON lines of the same shape.
        from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

        copy_config_to_registered_loggers(source_logger=built, include={"chalicelib", "app"})
    return built


def invocation(served: Invocation) -> None:
    fields = safe_fields({**served.fields, "function": served.fields.get("function")})
    fields.setdefault("outcome", "ok")
    message = f"{served.kind} {served.name}"
    log = logger()
    if fields["outcome"] in ("error", "server_error"):
        log.error(message, extra=fields)
    else:
        log.info(message, extra=fields)
    metrics(served.metrics)


def metrics(items: Iterable[Metric]) -> None:
    """One EMF line per set of dimensions."""
    groups: dict[tuple[tuple[str, str], ...], list[Metric]] = {}
    for metric in items:
        groups.setdefault(tuple(sorted(metric.dimensions.items())), []).append(metric)
    if not groups:
        return
    from aws_lambda_powertools.metrics import EphemeralMetrics

    for dimensions, group in groups.items():
        emf = EphemeralMetrics(namespace=namespace(), service=service_name())
        if dimensions:
            emf.add_dimensions(service=service_name(), **dict(dimensions))
        for metric in group:
            emf.add_metric(name=metric.name, unit=metric.unit, value=metric.value)
        emf.flush_metrics()
