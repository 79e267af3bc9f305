"""Median time of one signature verification (recover + compare), as every signed route pays it."""
from __future__ import annotations

import statistics
import time

REQUESTS = 2000


def run() -> tuple[str, float, str, float]:
    from eth_account import Account
    from eth_account.messages import encode_defunct
    from eth_utils import keccak

    from chalicelib.auth.signatures import recover_address

    account = Account.create()
    cases = []
    for nonce in range(REQUESTS):
        message = f"{account.address}did:op:{nonce:064x}{nonce}"
        signature = Account.sign_message(encode_defunct(primitive=keccak(text=message)), account.key).signature.hex()
        cases.append((message, signature))
    timings = []
    for message, signature in cases:
        start = time.perf_counter()
        ok = recover_address(message, signature) == account.address
        timings.append(time.perf_counter() - start)
        assert ok
    return (f"signature verification, median of {REQUESTS}", statistics.median(timings) * 1e6, "µs", 300)
