"""Accessors for the container's long-lived services, each built once on first use.

Routes call these instead of building clients, so a warm Lambda reuses everything and a cold one
builds only what the route it serves needs (the chain stack is never built for `/` or the nonce).
"""
from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from chalicelib import config, models
from chalicelib.auth.authenticator import Authenticator
from chalicelib.auth.nonces import NonceStore
from chalicelib.auth.signatures import address_of_key
from chalicelib.auth.tokens import TokenService

if TYPE_CHECKING:
    from chalicelib.http import Call


@lru_cache(maxsize=1)
def settings() -> config.Settings:
    loaded = config.settings()
    models.bind(loaded)
    return loaded


@lru_cache(maxsize=1)
def provider_address() -> str:
    return address_of_key(settings().provider_private_key())


@lru_cache(maxsize=1)
def nonce_store() -> NonceStore:
    settings()
    return NonceStore()


@lru_cache(maxsize=1)
def token_service() -> TokenService:
    current = settings()
    return TokenService(current.jwt_secret(), current.token_max_lifetime)


@lru_cache(maxsize=1)
def authenticator() -> Authenticator:
    return Authenticator(nonce_store(), token_service)


def reset() -> None:
    """Forget every built service (tests switch settings and AWS backends between cases)."""
    from chalicelib import aws

    for accessor in (settings, provider_address, nonce_store, token_service, authenticator):
        accessor.cache_clear()
    config.settings.cache_clear()
    aws.reset()


def checksum(address: str) -> str:
    from chalicelib.auth.signatures import to_checksum_address

    return to_checksum_address(address)


def authenticate(call: "Call", allow_token: bool = True) -> str:
    """The checksummed caller of a validated signed call, its nonce consumed."""
    params = call.params
    return authenticator().authenticate(
        address=params.signer(),
        nonce=params.nonce,
        signature=params.signature,
        message_prefix=params.message_prefix(),
        auth_token=call.header("AuthToken"),
        allow_token=allow_token,
    )
