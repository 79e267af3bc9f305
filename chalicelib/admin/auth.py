"""Who may use the console: the addresses of ADMIN_ADDRESSES, proven per request.

A request is signed by its `address` (`address + nonce + command`), or carries an admin session
token (`Authorization`) created by a signed sign-in; either way chalicelib.http checks the proof
and spends the nonce first, as for every signed route (AdminSigned.session_authenticator), and
only then is the address compared with the operator's list (a refused caller has spent its
nonce: a signature is good once, whatever the answer).

Session tokens are the provider's auth tokens (chalicelib.auth.tokens: HS256, expiry, revocation
by jti) signed with a key derived from the JWT secret for this one use (HMAC-SHA256 of a fixed
label), so a consumer's token is never accepted here and a session is never a consumer's token.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Mapping

from chalicelib import services
from chalicelib.auth.authenticator import Authenticator, bearer_token
from chalicelib.auth.signatures import is_address, to_checksum_address
from chalicelib.errors import ConfigurationError, Forbidden

if TYPE_CHECKING:
    from chalicelib.auth.tokens import TokenService
    from chalicelib.http import Call

SESSION_LABEL = b"ocean-c2d operator console session v1"
DEFAULT_SESSION_SECONDS = 3600


def admin_addresses(env: Mapping[str, str] | None = None) -> frozenset[str]:
    """ADMIN_ADDRESSES: addresses separated by commas or spaces, or a JSON list; checksummed."""
    env = os.environ if env is None else env
    raw = (env.get("ADMIN_ADDRESSES") or "").strip()
    if not raw:
        return frozenset()
    try:
        items = json.loads(raw) if raw.startswith("[") else raw.replace(",", " ").split()
    except ValueError:
        raise ConfigurationError("ADMIN_ADDRESSES must be addresses separated by commas, or a JSON list") from None
    if not all(is_address(item) for item in items):
        raise ConfigurationError("ADMIN_ADDRESSES must hold 0x-prefixed 20-byte addresses only")
    return frozenset(to_checksum_address(item) for item in items)


def session_seconds(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    try:
        seconds = int(env.get("ADMIN_SESSION_SECONDS") or DEFAULT_SESSION_SECONDS)
    except ValueError:
        raise ConfigurationError("ADMIN_SESSION_SECONDS must be a whole number of seconds") from None
    if not 60 <= seconds <= 86400:
        raise ConfigurationError("ADMIN_SESSION_SECONDS must be between 60 and 86400")
    return seconds


@lru_cache(maxsize=1)
def sessions() -> "TokenService":
    from chalicelib.auth.tokens import TokenService

    current = services.settings()
    key = hmac.new(current.jwt_secret().encode(), SESSION_LABEL, hashlib.sha256).hexdigest()
    return TokenService(key, session_seconds())


@lru_cache(maxsize=1)
def session_authenticator() -> Authenticator:
    """Checks admin sessions, with the nonces every signed route spends (services.authenticate_request)."""
    return Authenticator(services.nonce_store(), sessions)


def authorize(call: "Call") -> str:
    """The operator making this call: chalicelib.http proved the caller (signature or session) and
    spent its nonce before the route ran; 403 for an address that is not an operator's."""
    caller = call.caller
    if caller is None or caller not in admin_addresses():
        raise Forbidden("This address is not an operator of this provider (ADMIN_ADDRESSES)")
    return caller


def sign_in(call: "Call") -> dict[str, Any]:
    """A session token for the operator who signed this sign-in (a signature only, SignInRequest)."""
    operator = authorize(call)
    expires = int(time.time()) + session_seconds()
    return {"address": operator, "token": sessions().create(operator, expires), "expiresAt": expires}


def sign_out(call: "Call") -> dict[str, Any]:
    """Revoke the session the call carries (it is proven first)."""
    operator = authorize(call)
    token = bearer_token(call.header("Authorization"))
    if token:
        sessions().revoke(sessions().verify(token, operator))
    return {"success": True}


def reset() -> None:
    sessions.cache_clear()
    session_authenticator.cache_clear()
