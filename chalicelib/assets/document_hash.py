"""Which `metaDataHash` a DDO set on chain may carry, and the hash this provider hands a publisher
for it (Ocean Node's `POST <node>/api/aquarius/assets/ddo/validate`).

Ocean's publishers do not all hash the same bytes:

- ocean.py, devstack and the original Provider: sha256 of the DDO bytes as set (before
  compression and encryption);
- ocean.js (and so Ocean's CLI) with an encrypted DDO: the hash Ocean Node's validate route answered,
  sha256 of `JSON.stringify(ddo)`, which is also what it sent to encrypt;
- ocean.js with a plain DDO: sha256 of the *text* `0x<hex of the DDO bytes>` (crypto-js hashing the
  hexlified string), which Ocean Node's indexer checks the same way (`checkDdoHash`).

So a DDO read from chain is accepted when its metaDataHash is any of these over the very bytes the
event holds; the second is computed over this module's `js_json` of the parsed document, the same
function the validate route hashes, so the two agree whatever whitespace or number spelling the
publisher's JSON had. Each ties the hash to the document's content: none lets another document
pass.
"""
from __future__ import annotations

import hashlib
import json
import math
from decimal import Decimal
from typing import Any

from chalicelib.http import within_depth


def js_json(value: Any) -> str:
    """JSON text as JavaScript's JSON.stringify writes a parsed document: no spaces, keys in
    their order, non-ASCII as is, numbers in ECMAScript's shortest form (1.0 is "1", 1e-7 is
    "1e-7", 1e21 is "1e+21"). Callers bound the depth (the parser's input was checked)."""
    if isinstance(value, dict):
        return "{" + ",".join(_string(str(key)) + ":" + js_json(item) for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(js_json(item) for item in value) + "]"
    if isinstance(value, str):
        return _string(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _ecmascript_number(value)
    raise ValueError(f"not a JSON value: {type(value).__name__}")


def _string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _ecmascript_number(number: float) -> str:
    """ECMAScript Number::toString(10) from the shortest round-trip digits Python finds too."""
    if not math.isfinite(number):
        raise ValueError("not a JSON number")
    if number == 0:
        return "0"
    sign = "-" if number < 0 else ""
    _, digits_tuple, exponent = Decimal(repr(abs(number))).normalize().as_tuple()
    digits = "".join(str(d) for d in digits_tuple)
    k = len(digits)
    n = exponent + k  # the value is 0.<digits> * 10**n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * (-n) + digits
    else:
        mantissa = digits[0] + ("." + digits[1:] if k > 1 else "")
        text = f"{mantissa}e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"
    return sign + text


def validation_hash(ddo: dict[str, Any]) -> str:
    """What the validate route answers and the publisher sets as metaDataHash: 0x + sha256 hex of
    `js_json(ddo)` (Ocean Node's `create256Hash(JSON.stringify(ddo))`)."""
    return "0x" + hashlib.sha256(js_json(ddo).encode("utf-8")).hexdigest()


def matches(plain: bytes, metadata_hash: bytes, encrypted_or_compressed: bool) -> bool:
    """Whether `metadata_hash` (from the event) is one of the hashes above of `plain`."""
    if hashlib.sha256(plain).digest() == metadata_hash:
        return True
    if not encrypted_or_compressed and hashlib.sha256(("0x" + plain.hex()).encode("ascii")).digest() == metadata_hash:
        return True
    try:
        if not within_depth(plain):
            return False
        document = json.loads(plain)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    if not isinstance(document, dict):
        return False
    try:
        return bytes.fromhex(validation_hash(document)[2:]) == metadata_hash
    except ValueError:  # e.g. a lone surrogate, which no publisher's stringify would write
        return False


__all__ = ["js_json", "matches", "validation_hash"]
