"""What one API request reports: its line (route, method, status, outcome, job, consumer,
environment) and its metrics: every request counts in Requests (and ServerErrors, ClientErrors:
the 5xx alarm's rate); a compute start counts in JobsStarted by protocol and payment, or in
StartsRefused by reason, per environment.

The fields come from the validated parameters and the answer, never from the raw request: a
request whose parameters do not validate is logged with its route and status only.
"""
from __future__ import annotations

import re
from typing import Any

from chalicelib.observability.context import annotate, record
from chalicelib.observability.fields import Invocation

START_ENDPOINTS = frozenset({"computeStart", "freeCompute"})
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_REASON = re.compile(r"[a-z][a-z0-9_]{0,39}")
# The reason a refused start counts under when the error names none (low cardinality on purpose).
_REASONS_BY_ERROR = (("InvalidSignature", "signature"), ("Unauthorized", "token"), ("ValidationError", "validation"),
                     ("NotFound", "not_found"), ("PayloadTooLarge", "too_large"), ("ConfigurationError", "configuration"),
                     ("ServiceUnavailable", "unavailable"), ("BusinessError", "refused"))


def parameters(params: Any) -> None:
    """The job, consumer and environment a validated request names, for its line."""
    job_id = getattr(params, "jobId", None)
    consumer = next((value for value in (getattr(params, name, None) for name in ("consumerAddress", "address", "userAddress"))
                     if isinstance(value, str) and _ADDRESS.fullmatch(value)), None)
    annotate(jobId=job_id if isinstance(job_id, str) and _JOB_ID.fullmatch(job_id) else None, consumer=consumer,
             environment=_environment_of(params))


def _environment_of(params: Any) -> str | None:
    environment = getattr(params, "environment", None)
    if environment is None:
        compute = getattr(params, "compute", None)
        environment = getattr(compute, "env", None)
    return environment if isinstance(environment, str) else None


def refused(error: Exception) -> None:
    """A request answered with an error: its class and a reason of a fixed alphabet."""
    annotate(error=type(error).__name__, reason=reason(error))


def reason(error: Exception) -> str:
    explicit = getattr(error, "reason", None)  # PaymentRefused, reservation refusals
    if isinstance(explicit, str) and _REASON.fullmatch(explicit):
        return explicit
    codes = getattr(error, "error", None)  # BusinessError({"dataset": "no_raw_algo_allowed"})
    if isinstance(codes, dict):
        for code in codes.values():
            if isinstance(code, str) and _REASON.fullmatch(code):
                return code
    names = {cls.__name__ for cls in type(error).__mro__}
    return next((slug for name, slug in _REASONS_BY_ERROR if name in names), "error")


def answered(served: Invocation, endpoint: str, path: str, status: int, result: Any) -> None:
    """Outcome, job and metrics once the answer is known."""
    outcome = "ok" if status < 400 else "client_error" if status < 500 else "server_error"
    annotate(status=status, outcome=outcome)
    if isinstance(result, list) and result and isinstance(result[0], dict):
        first = result[0]
        annotate(jobId=first.get("jobId") if isinstance(first.get("jobId"), str) else None,
                 environment=first.get("environment") if isinstance(first.get("environment"), str) else None)
    record("Requests")
    if status >= 500:
        record("ServerErrors")
    elif status >= 400:
        record("ClientErrors")
    if endpoint not in START_ENDPOINTS:
        return
    environment = known_environment(served.fields.get("environment"))
    protocol = "node" if path.startswith("/node/") else "v4"
    if status < 400:
        payment = served.fields.get("payment") or ("free" if endpoint == "freeCompute" else "paid")
        annotate(protocol=protocol, payment=payment)
        record("JobsStarted", environment=environment, protocol=protocol, payment=payment)
    else:
        record("StartsRefused", environment=environment, reason=served.fields.get("reason") or "error")


def known_environment(environment: Any) -> str:
    """A configured environment's id, else "unknown": a dimension never takes a caller's text."""
    if not isinstance(environment, str):
        return "unknown"
    try:
        from chalicelib.compute.environments import environments

        return environment if environment in environments() else "unknown"
    except Exception:  # noqa: BLE001 - a broken configuration is reported elsewhere
        return "unknown"
