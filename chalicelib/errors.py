"""Typed errors raised by chalicelib; `app.py` turns each into its response in one place.

The bodies follow the original Ocean Provider's envelopes (DESIGN §3.7) so ocean.py and ocean.js
read our errors the way they read theirs.
"""
from __future__ import annotations

from typing import Any, Mapping


class ProviderError(Exception):
    """Base class: an error with an HTTP status and a JSON body safe to show the caller."""

    status_code = 400

    def body(self) -> dict[str, Any]:
        return {"error": str(self)}

    def headers(self) -> dict[str, str]:
        """Response headers the error answers with besides the body's."""
        return {}


class ValidationError(ProviderError):
    """A request field is missing or malformed."""

    def __init__(self, errors: Mapping[str, list[str] | str]):
        self.errors = {k: ([v] if isinstance(v, str) else list(v)) for k, v in errors.items()}
        super().__init__("; ".join(f"{k}: {', '.join(v)}" for k, v in self.errors.items()))

    @classmethod
    def field(cls, name: str, message: str) -> "ValidationError":
        return cls({name: [message]})

    def body(self) -> dict[str, Any]:
        return {"errors": self.errors, "message": "Validation error", "success": False}


class InvalidSignature(ValidationError):
    """The signature, token or nonce does not authorise the request."""

    def __init__(self, message: str, field: str = "signature"):
        super().__init__({field: [message]})


class BusinessError(ProviderError):
    """A business rule refused the request; `error` is a message or {resource: code}."""

    def __init__(self, error: str | Mapping[str, str]):
        self.error = error if isinstance(error, str) else dict(error)
        super().__init__(error if isinstance(error, str) else str(self.error))

    def body(self) -> dict[str, Any]:
        return {"error": self.error}


class Unauthorized(ProviderError):
    """An `Authorization: <jwt>` token that does not authorise the caller (invalid, expired,
    revoked, or another address's): 401 `{"error": "<message>"}`, as Ocean Node answers."""

    status_code = 401


class Forbidden(ProviderError):
    """A proven caller who may not do this: 403 `{"error": "<message>"}`. An environment's access
    list refuses as Ocean Node answers (`"Access denied"`); an address that is not one of the
    operator's ADMIN_ADDRESSES may not use an admin route."""

    status_code = 403


class NotFound(ProviderError):
    status_code = 404


class MethodNotAllowed(ProviderError):
    status_code = 405


class PayloadTooLarge(ProviderError):
    status_code = 413


class TooManyRequests(ProviderError):
    """The caller must wait `retry_after` seconds (429, with a Retry-After header): a rate limit
    (the free-start rates), or a payer whose escrow locks failed on chain too often lately
    (payments.escrow_accounts)."""

    status_code = 429

    def __init__(self, message: str, retry_after: int):
        self.retry_after = max(1, int(retry_after))
        super().__init__(message)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class ServiceUnavailable(ProviderError):
    """A dependency (DynamoDB, S3, Batch, a chain, the metadata service) did not answer."""

    status_code = 503


class ConfigurationError(ServiceUnavailable):
    """A setting is missing or malformed; the message names it and never holds its value."""
