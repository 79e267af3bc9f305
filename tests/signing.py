"""How real clients sign: eth_account, as ocean.py does (test-side only, never imported by the app)."""
from __future__ import annotations

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak

# anvil's development keys: public knowledge, only for tests.
CONSUMER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
OTHER_KEY = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"


def sign(private_key: str, message: str, wallet_v: bool = False) -> str:
    """ocean.py's signature (v in {0,1}) or, with wallet_v, a wallet's (v in {27,28})."""
    signed = Account.sign_message(encode_defunct(primitive=keccak(text=message)), private_key)
    raw = bytearray(signed.signature)
    raw[64] = raw[64] + 27 if raw[64] < 27 and wallet_v else (raw[64] - 27 if raw[64] >= 27 and not wallet_v else raw[64])
    return "0x" + bytes(raw).hex()


def address(private_key: str) -> str:
    return Account.from_key(private_key).address
