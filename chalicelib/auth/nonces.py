"""Nonces: each signed request must carry a nonce strictly above the last one its signer used.

Consumption is a single DynamoDB conditional update, so two concurrent requests with the same
nonce cannot both pass (the original Provider checks, acts, then stores, and so runs replays).
"""
from __future__ import annotations

import re

from pynamodb.exceptions import PynamoDBConnectionError, UpdateError

from chalicelib.errors import InvalidSignature, ServiceUnavailable, ValidationError
from chalicelib.models import NonceRecord

# DynamoDB numbers carry 38 significant digits; ms and ns timestamps fit easily. ASCII digits
# only, matched against the whole text (fullmatch: with `$`, "7\n" would pass).
_NONCE = re.compile(r"[0-9]{1,38}")


def parse_nonce(raw: object) -> tuple[str, int]:
    """The nonce as the signer wrote it (for the message) and as a number (for ordering)."""
    if isinstance(raw, bool) or raw is None:
        raise ValidationError.field("nonce", "nonce is required and must be a non-negative integer")
    text = str(raw)
    if not _NONCE.fullmatch(text):
        raise ValidationError.field("nonce", "nonce must be a non-negative integer of at most 38 digits")
    return text, int(text)


class NonceStore:
    """Reads and consumes nonces in the nonces table (keys are checksummed addresses)."""

    def __init__(self, model: type[NonceRecord] = NonceRecord):
        self._model = model

    def current(self, address: str) -> int:
        try:
            record = self._model.get(address, consistent_read=True)
        except self._model.DoesNotExist:
            return 0
        except PynamoDBConnectionError as exc:
            raise ServiceUnavailable("Nonce store is unavailable, try again later") from exc
        return int(record.nonce)

    def consume(self, address: str, nonce: int) -> None:
        """Record `nonce` as used if it is above the stored one; refuse it otherwise."""
        record = self._model(address)
        condition = self._model.nonce.does_not_exist() | (self._model.nonce < nonce)
        try:
            record.update(actions=[self._model.nonce.set(nonce)], condition=condition)
        except UpdateError as exc:
            if _is_conditional_failure(exc):
                raise InvalidSignature(
                    f"Invalid nonce: {nonce} is not above the last nonce used by this address; "
                    "get it from /api/services/nonce and sign with a greater one",
                    field="nonce",
                ) from None
            raise ServiceUnavailable("Nonce store is unavailable, try again later") from exc
        except PynamoDBConnectionError as exc:
            raise ServiceUnavailable("Nonce store is unavailable, try again later") from exc


def _is_conditional_failure(exc: UpdateError) -> bool:
    return getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException"
