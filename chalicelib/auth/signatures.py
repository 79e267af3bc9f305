"""EIP-191 signature recovery with coincurve and pycryptodome's keccak.

eth_account would do the same but costs about a second of import on a cold Lambda; this path
imports in milliseconds and recovers in about 0.1 ms.
"""
from __future__ import annotations

import re

from Crypto.Hash import keccak as _keccak
from coincurve import PrivateKey, PublicKey

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_SIGNATURE = re.compile(r"^(0x)?[0-9a-fA-F]{130}$")
_EIP191_PREFIX = b"\x19Ethereum Signed Message:\n32"


def keccak256(data: bytes) -> bytes:
    return _keccak.new(digest_bits=256, data=data).digest()


def is_address(value: object) -> bool:
    return isinstance(value, str) and bool(_ADDRESS.match(value))


def is_signature(value: object) -> bool:
    """Whether `value` is 65 bytes of hex (r, s, v), 0x-prefixed or not."""
    return isinstance(value, str) and bool(_SIGNATURE.match(value))


def to_checksum_address(address: str) -> str:
    """EIP-55 checksum; written here because eth_utils costs ~0.2 s of cold import."""
    if not is_address(address):
        raise ValueError("not a 20-byte hex address")
    lower = address[2:].lower()
    digest = keccak256(lower.encode()).hex()
    return "0x" + "".join(c.upper() if int(h, 16) >= 8 else c for c, h in zip(lower, digest))


def signed_digest(message: str) -> bytes:
    """What ocean.py signs: personal_sign over the 32 raw bytes of keccak(utf8(message))."""
    return keccak256(_EIP191_PREFIX + keccak256(message.encode("utf-8")))


def recover_address(message: str, signature: str) -> str | None:
    """The checksummed signer of `message`, or None if the signature is malformed or invalid."""
    if not isinstance(signature, str) or not _SIGNATURE.match(signature):
        return None
    raw = bytes.fromhex(signature[2:] if signature.startswith("0x") else signature)
    v = raw[64]
    if v >= 27:
        v -= 27
    if v not in (0, 1):
        return None
    try:
        public = PublicKey.from_signature_and_message(raw[:64] + bytes([v]), signed_digest(message), hasher=None)
    except Exception:  # coincurve raises plain Exception/ValueError for points off the curve
        return None
    return to_checksum_address("0x" + keccak256(public.format(compressed=False)[1:])[-20:].hex())


def address_of_key(private_key_hex: str) -> str:
    """The checksummed address of a 0x-hex private key."""
    key = PrivateKey(bytes.fromhex(private_key_hex.removeprefix("0x")))
    return to_checksum_address("0x" + keccak256(key.public_key.format(compressed=False)[1:])[-20:].hex())
