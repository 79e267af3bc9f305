"""Auth tokens: HS256 JWTs that stand in for a signature until they expire or are revoked.

The secret is the operator's JWT secret, never the provider's private key, so leaking tokens'
verification material cannot leak the key that signs provider fees.
"""
from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable

import jwt
from pynamodb.exceptions import PynamoDBException

from chalicelib.auth.signatures import is_address, to_checksum_address
from chalicelib.errors import BusinessError, InvalidSignature, ServiceUnavailable, ValidationError
from chalicelib.models import RevokedToken

ALGORITHM = "HS256"


class TokenService:
    def __init__(
        self,
        secret: str,
        max_lifetime: int,
        revoked: type[RevokedToken] = RevokedToken,
        clock: Callable[[], float] = time.time,
    ):
        self._secret = secret
        self._max_lifetime = max_lifetime
        self._revoked = revoked
        self._clock = clock

    def check_expiration(self, expiration: object) -> int:
        """The expiration as Unix seconds if it is in the future and within the maximum lifetime."""
        now = int(self._clock())
        exp = _parse_expiration(expiration)
        if exp <= now:
            raise ValidationError.field("expiration", "expiration must be a Unix timestamp in the future")
        if exp > now + self._max_lifetime:
            raise ValidationError.field(
                "expiration", f"expiration may be at most {self._max_lifetime} seconds from now"
            )
        return exp

    def create(self, address: str, expiration: int) -> str:
        """A token for `address` until `expiration` (checked with `check_expiration` first)."""
        claims = {
            "address": to_checksum_address(address),
            "exp": self.check_expiration(expiration),
            "iat": int(self._clock()),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str, address: str) -> dict[str, Any]:
        """The token's claims if it is valid, unrevoked and belongs to `address`."""
        claims = self._decode(token, lambda message: InvalidSignature(message))
        if claims["address"] != to_checksum_address(address):
            raise InvalidSignature("Token does not belong to this address.")
        if self._is_revoked(claims["jti"]):
            raise InvalidSignature("Token is deleted.")
        return claims

    def revocable_claims(self, token: str, address: str) -> dict[str, Any]:
        """The claims of a token `address` may revoke: its own, still valid (no side effect)."""
        claims = self._decode(token, BusinessError)
        if claims["address"] != to_checksum_address(address):
            raise BusinessError("Token is invalid.")
        if self._is_revoked(claims["jti"]):
            raise BusinessError("Token is deleted.")
        return claims

    def revoke(self, claims: dict[str, Any]) -> None:
        """Deny the token from now on; the record expires with the token itself."""
        record = self._revoked(claims["jti"], address=claims["address"], expires_at=datetime.fromtimestamp(claims["exp"], tz=timezone.utc))
        try:
            record.save(condition=self._revoked.jti.does_not_exist())
        except PynamoDBException as exc:
            if getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException":
                raise BusinessError("Token is deleted.") from None
            raise ServiceUnavailable("Token store is unavailable, try again later") from exc

    def _decode(self, token: str, error: Callable[[str], Exception]) -> dict[str, Any]:
        if not isinstance(token, str) or not token or len(token) > 4096:
            raise error("Token is invalid.")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["exp", "iat", "jti", "address"]},
                leeway=0,
            )
        except jwt.ExpiredSignatureError:
            raise error("Token is expired.") from None
        except jwt.PyJWTError:
            raise error("Token is invalid.") from None
        if not is_address(claims.get("address")) or not isinstance(claims.get("jti"), str):
            raise error("Token is invalid.")
        return claims

    def _is_revoked(self, jti: str) -> bool:
        try:
            self._revoked.get(jti)
            return True
        except self._revoked.DoesNotExist:
            return False
        except PynamoDBException as exc:
            raise ServiceUnavailable("Token store is unavailable, try again later") from exc


def _parse_expiration(raw: object) -> int:
    if isinstance(raw, bool):
        raise ValidationError.field("expiration", "expiration must be a Unix timestamp in seconds")
    try:
        value = float(str(raw))
    except ValueError:
        raise ValidationError.field("expiration", "expiration must be a Unix timestamp in seconds") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValidationError.field("expiration", "expiration must be a Unix timestamp in seconds")
    return int(value)
