"""Nonces: each signed request must carry a nonce strictly above the last one its signer used.

Consumption is a single DynamoDB conditional update, so two concurrent requests with the same
nonce cannot both pass (the original Provider checks, acts, then stores, and so runs replays).

A message whose text before the nonce ends with a digit can be split elsewhere: v4's result
signs `consumer + jobId + index + nonce`, and `...0` + `1700` is also `...` + `01700`, or a
status `...` + `71700` for a message `...7` + `1700`. Moving digits into the nonce makes it
greater, so the stored nonce cannot refuse such a replay: the message itself is recorded
(models.UsedMessage) in the same transaction as the nonce, and refused when seen again.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from pynamodb.exceptions import PynamoDBConnectionError, PynamoDBException, TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite

from chalicelib.errors import InvalidSignature, ServiceUnavailable, ValidationError
from chalicelib.models import NonceRecord, UsedMessage

UNAVAILABLE = "Nonce store is unavailable, try again later"

# DynamoDB numbers carry 38 significant digits; ms and ns timestamps fit easily. ASCII digits
# only, matched against the whole text (fullmatch: with `$`, "7\n" would pass).
_NONCE = re.compile(r"[0-9]{1,38}")


def is_nonce(raw: object) -> bool:
    """Whether `raw` is a nonce as a client sends it: ASCII decimal text or a whole number."""
    return not isinstance(raw, bool) and isinstance(raw, (str, int)) and bool(_NONCE.fullmatch(str(raw)))


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

    def __init__(self, model: type[NonceRecord] = NonceRecord, used: type[UsedMessage] = UsedMessage):
        self._model = model
        self._used = used

    def current(self, address: str) -> int:
        try:
            record = self._model.get(address, consistent_read=True)
        except self._model.DoesNotExist:
            return 0
        except PynamoDBConnectionError as exc:
            raise ServiceUnavailable(UNAVAILABLE) from exc
        return int(record.nonce)

    def consume(self, address: str, nonce: int, message: "MessageUse | None" = None) -> None:
        """Record `nonce` as used if it is above the stored one; refuse it otherwise. With
        `message`, in the same transaction, also record the message or check it was never
        recorded (see MessageUse), and refuse one seen before whatever its nonce."""
        if message is not None:
            return self._consume_with_message(address, nonce, message)
        record = self._model(address)
        try:
            record.update(actions=[self._model.nonce.set(nonce)], condition=self._above(nonce))
        except UpdateError as exc:
            if _is_conditional_failure(exc):
                raise _stale(nonce) from None
            raise ServiceUnavailable(UNAVAILABLE) from exc
        except PynamoDBConnectionError as exc:
            raise ServiceUnavailable(UNAVAILABLE) from exc
        return None

    def _consume_with_message(self, address: str, nonce: int, message: "MessageUse") -> None:
        used = self._used
        item = used("signed:0x" + message.digest.hex())
        try:
            with TransactWrite(connection=self._model._get_connection().connection) as transaction:
                transaction.update(self._model(address), actions=[self._model.nonce.set(nonce)],
                                   condition=self._above(nonce))
                if message.record:
                    transaction.update(item, actions=[used.signer.set(address), used.nonce.set(nonce)],
                                       condition=used.key.does_not_exist())
                else:
                    transaction.condition_check(used, item.key, condition=used.key.does_not_exist())
        except TransactWriteError as exc:
            reasons = exc.cancellation_reasons or []
            failed = {index for index, reason in enumerate(reasons) if getattr(reason, "code", None) == "ConditionalCheckFailed"}
            nonce_at = _nonce_update_position(message, len(reasons))
            if nonce_at in failed:
                raise _stale(nonce) from None
            if failed:
                raise InvalidSignature("Invalid nonce: this signed message was already used (with another nonce)",
                                       field="nonce") from None
            raise ServiceUnavailable(UNAVAILABLE) from exc
        except PynamoDBException as exc:
            raise ServiceUnavailable(UNAVAILABLE) from exc

    def _above(self, nonce: int):  # type: ignore[no-untyped-def]
        return self._model.nonce.does_not_exist() | (self._model.nonce < nonce)


@dataclass(frozen=True)
class MessageUse:
    """A signed message to record with its nonce (`record`: its nonce could be read elsewhere
    in it), or to check was never recorded (its nonce could be a recorded one's, split
    elsewhere). `digest`: keccak256 of the message."""

    digest: bytes
    record: bool


def _nonce_update_position(message: MessageUse, reasons: int) -> int:
    """Where the nonce's update is among a transaction's cancellation reasons: PynamoDB sends
    condition checks before updates, updates in the order given."""
    return 1 if not message.record and reasons == 2 else 0


def _stale(nonce: int) -> InvalidSignature:
    return InvalidSignature(
        f"Invalid nonce: {nonce} is not above the last nonce used by this address; "
        "get it from /api/services/nonce and sign with a greater one",
        field="nonce",
    )


def _is_conditional_failure(exc: UpdateError) -> bool:
    return getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException"
