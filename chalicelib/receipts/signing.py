"""The provider's EIP-712 signature of a receipt, and what checks it (eth-account: imported by
the routes that sign, about half a second on a cold container, never by `import app`)."""
from __future__ import annotations

from typing import Any, Mapping

from chalicelib.receipts.canonical import typed_data

SCHEME = "EIP-712"


def sign(receipt: Mapping[str, Any], private_key: str) -> dict[str, Any]:
    """The signed receipt: {"receipt", "eip712" (the typed data signed), "signature"}."""
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    data = typed_data(receipt)
    signed = Account.sign_message(encode_typed_data(full_message=data), private_key)
    return {"receipt": dict(receipt), "scheme": SCHEME, "eip712": data, "signature": "0x" + bytes(signed.signature).hex()}


def signer(signed: Mapping[str, Any]) -> str | None:
    """Who signed the receipt as it stands (the typed data rebuilt from the receipt, never the
    copy it carries), or None for a signature that recovers nobody."""
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    try:
        message = encode_typed_data(full_message=typed_data(signed["receipt"]))
        return str(Account.recover_message(message, signature=str(signed["signature"])))
    except Exception:  # noqa: BLE001 - malformed receipt or signature: nobody signed it
        return None
