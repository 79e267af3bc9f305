"""ECIES with the provider's key, byte-compatible with the original Ocean Provider.

Publishers encrypt their service `files` (and optionally the whole DDO) for the provider with
eciespy's defaults (secp256k1, uncompressed ephemeral key, AES-256-GCM, 16-byte nonce); the
ciphertext travels as 0x-prefixed hex. Decrypted plaintext holds data URLs: it never goes into a
log line or an exception message here, and callers keep it that way.
"""
from __future__ import annotations

import re
from functools import lru_cache

_HEX = re.compile(r"^(0x)?([0-9a-fA-F]{2})*$")


class DecryptionError(Exception):
    """The ciphertext is malformed or was not encrypted for this key (the message says no more)."""


@lru_cache(maxsize=4)
def public_key_of(private_key_hex: str) -> str:
    """The uncompressed SEC1 public key (0x04 || x || y) of a 0x-hex private key."""
    from coincurve import PrivateKey

    key = PrivateKey(bytes.fromhex(private_key_hex.removeprefix("0x")))
    return "0x" + key.public_key.format(compressed=False).hex()


def encrypt(public_key_hex: str, data: bytes) -> str:
    """Encrypt `data` for `public_key_hex` (33/65-byte SEC1 or 64-byte x||y); returns 0x-hex."""
    import ecies

    key = public_key_hex.removeprefix("0x")
    if len(key) == 128:  # raw x||y as eth-keys prints it
        key = "04" + key
    return "0x" + ecies.encrypt(key, data).hex()


def decrypt(private_key_hex: str, ciphertext: bytes | str) -> bytes:
    """Decrypt eciespy ciphertext (bytes or hex, 0x optional); DecryptionError if it is not ours."""
    import ecies

    if isinstance(ciphertext, str):
        if not _HEX.match(ciphertext):
            raise DecryptionError("ciphertext is not hex")
        ciphertext = bytes.fromhex(ciphertext.removeprefix("0x"))
    try:
        return ecies.decrypt(private_key_hex.removeprefix("0x"), ciphertext)
    except Exception:  # eciespy raises ValueError, TypeError or coincurve errors; none is useful
        raise DecryptionError("ciphertext cannot be decrypted with the provider key") from None


def encrypt_for_key(private_key_hex: str, data: bytes) -> str:
    """Encrypt `data` for the holder of `private_key_hex` (what POST /encrypt does)."""
    return encrypt(public_key_of(private_key_hex), data)
