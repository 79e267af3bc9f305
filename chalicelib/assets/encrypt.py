"""POST /api/services/encrypt: ECIES-encrypt the request body for this provider.

Publishers call it to encrypt their service `files` (and optionally the whole DDO) so that only
this provider can read them. The contract is the original Provider's, which ocean.py's
DataEncryptor.encrypt and ocean.js's ProviderInstance.encrypt rely on: the body is the raw bytes
(Content-Type application/octet-stream), `chainId` is in the query string, and the answer is 201
with the 0x-hex ciphertext as text/plain. The body usually holds data URLs, so it is never logged.
"""
from __future__ import annotations

import logging
from typing import Collection

from chalice import Response

from chalicelib.assets import ecies
from chalicelib.errors import BusinessError, ValidationError

logger = logging.getLogger(__name__)

MEDIA_TYPE = "application/octet-stream"


def encrypt_body(
    body: bytes, content_type: str | None, chain_id: int | None, served_chains: Collection[int], private_key: str
) -> str:
    """The 0x-hex ciphertext of `body` for `private_key`'s holder, after the original's checks."""
    if _media_type(content_type) != MEDIA_TYPE:
        raise BusinessError(f"Invalid request content type: should be {MEDIA_TYPE}")
    if chain_id is not None and chain_id not in served_chains:
        raise BusinessError(f"Unsupported chain ID {chain_id}")
    if not body:
        raise ValidationError.field("body", "the bytes to encrypt are required")
    ciphertext = ecies.encrypt_for_key(private_key, body)
    logger.info("encrypted %d bytes for chain %s", len(body), chain_id if chain_id is not None else "-")
    return ciphertext


def encrypt_response(body: bytes, content_type: str | None, chain_id: int | None,
                     served_chains: Collection[int], private_key: str) -> Response:
    """The route's answer: 201, text/plain, the ciphertext as the whole body (no JSON)."""
    ciphertext = encrypt_body(body, content_type, chain_id, served_chains, private_key)
    return Response(body=ciphertext, status_code=201, headers={"Content-Type": "text/plain"})


def _media_type(content_type: str | None) -> str:
    """`application/octet-stream; charset=x` -> `application/octet-stream`."""
    return (content_type or "").split(";", 1)[0].strip().lower()
