"""The receipt's bytes and the EIP-712 typed data the provider signs over them.

Canonical JSON (RFC 8785, JCS) for the documents receipts are: every number is an integer
(times in epoch seconds, amounts as decimal strings, sizes in bytes), so JCS's number rules
reduce to Python's `int` text, object keys are ASCII and sorted, strings are escaped as
`json.dumps(ensure_ascii=False)` does, and there is no whitespace. Anything else (a float, a
non-string key) is refused rather than written two ways.

The typed data (EIP-712) names the job, its provider, its status and the keccak-256 of the
canonical receipt: a wallet shows the first three, and the hash binds every other field, so a
change to any of them is a different message whose signature recovers another address.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from Crypto.Hash import keccak

DOMAIN_NAME = "Ocean C2D compute receipt"
DOMAIN_VERSION = "1"
PRIMARY_TYPE = "ComputeReceipt"
TYPES = {
    "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                     {"name": "chainId", "type": "uint256"}],
    PRIMARY_TYPE: [{"name": "jobId", "type": "string"}, {"name": "provider", "type": "address"},
                   {"name": "status", "type": "uint256"}, {"name": "receiptHash", "type": "bytes32"}],
}


def _check(value: Any, where: str = "receipt") -> None:
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str) or not key.isascii():
                raise ValueError(f"{where}: object keys must be ASCII text")
            _check(item, f"{where}.{key}")
        return
    if isinstance(value, list):
        for position, item in enumerate(value):
            _check(item, f"{where}[{position}]")
        return
    raise ValueError(f"{where}: {type(value).__name__} has no canonical form here (integers and text only)")


def canonical(receipt: Mapping[str, Any]) -> bytes:
    """The receipt's canonical bytes (see the module docstring)."""
    _check(receipt)
    return json.dumps(receipt, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def receipt_hash(receipt: Mapping[str, Any]) -> str:
    return "0x" + keccak.new(digest_bits=256, data=canonical(receipt)).hexdigest()


def typed_data(receipt: Mapping[str, Any]) -> dict[str, Any]:
    """The EIP-712 message of a receipt, built from the receipt alone."""
    return {
        "types": TYPES,
        "primaryType": PRIMARY_TYPE,
        "domain": {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": int(receipt["chainId"])},
        "message": {"jobId": str(receipt["jobId"]), "provider": str(receipt["provider"]),
                    "status": int(receipt["status"]), "receiptHash": receipt_hash(receipt)},
    }
