"""Tokens and orders on a dev chain, as Ocean consumers place them: datatokens minted and OCEAN
sent to a consumer, a provider fee signed by the provider (the contract checks that signature even
for a zero fee), ERC20Template.startOrder (fees approved first) and reuseOrder. Publishing the
assets being ordered is `devstack.publish`.
"""

from __future__ import annotations

import json
import time
from typing import Any

from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from web3 import Web3

from devstack.contracts import CALL_GAS, OCEAN_UNIT, ZERO_ADDRESS, as_account, contract, hex_to_bytes, send


def mint_datatokens(
    w3: Web3, minter: LocalAccount | str, datatoken: str, to: str, amount: int = OCEAN_UNIT
) -> str:
    """Mint `amount` (wei; 1 token = 10**18, what one order costs) to `to`; returns tx hash."""
    call = contract(w3, "ERC20Template", datatoken).functions.mint(to, amount)
    return send(w3, minter, call)["transactionHash"].to_0x_hex()


def transfer_ocean(
    w3: Web3, sender: LocalAccount | str, ocean_token: str, to: str, amount: int
) -> str:
    """Transfer OCEAN (wei) so a consumer can pay fees; returns tx hash."""
    call = contract(w3, "OceanToken", ocean_token).functions.transfer(to, amount)
    return send(w3, sender, call)["transactionHash"].to_0x_hex()


def provider_data(environment: str, datatoken: str, service_id: str) -> dict[str, Any]:
    """The providerData object the provider signs into a compute provider fee."""
    now = int(time.time())
    return {"environment": environment, "timestamp": now, "dt": datatoken, "id": service_id}


def sign_provider_fee(
    provider: LocalAccount | str,
    *,
    data: dict[str, Any] | bytes,
    fee_token: str,
    valid_until: int,
    fee_amount: int = 0,
    fee_address: str | None = None,
) -> dict[str, Any]:
    """Build and sign a providerFee as initializeCompute returns it (for tests and tooling).

    Signature: EIP-191 personal_sign over solidityKeccak(bytes providerData, address
    feeAddress, address feeToken, uint256 amount, uint256 validUntil); the contract's
    ecrecover must yield providerFeeAddress, which defaults to the signer.
    """
    acct = as_account(provider)
    raw = data if isinstance(data, bytes) else json.dumps(data, separators=(",", ":")).encode()
    address = Web3.to_checksum_address(fee_address or acct.address)
    token = Web3.to_checksum_address(fee_token)
    digest = Web3.solidity_keccak(
        ["bytes", "address", "address", "uint256", "uint256"],
        [raw, address, token, fee_amount, valid_until],
    )
    sig = acct.sign_message(encode_defunct(primitive=digest))
    return {
        "providerFeeAddress": address,
        "providerFeeToken": token,
        "providerFeeAmount": fee_amount,
        "providerData": "0x" + raw.hex(),
        "v": sig.v,
        "r": "0x" + sig.r.to_bytes(32, "big").hex(),
        "s": "0x" + sig.s.to_bytes(32, "big").hex(),
        "validUntil": valid_until,
    }


def _provider_fee_tuple(fee: dict[str, Any]) -> tuple[Any, ...]:
    """providerFee struct in ABI order; accepts ints or numeric strings and v in {0,1,27,28}."""
    v = int(fee["v"])
    return (
        Web3.to_checksum_address(fee["providerFeeAddress"]),
        Web3.to_checksum_address(fee["providerFeeToken"]),
        int(fee["providerFeeAmount"]),
        v + 27 if v < 27 else v,
        hex_to_bytes(fee["r"]).rjust(32, b"\0"),
        hex_to_bytes(fee["s"]).rjust(32, b"\0"),
        int(fee["validUntil"]),
        hex_to_bytes(fee["providerData"]),
    )


def _approve_fees(
    w3: Web3, payer: LocalAccount, datatoken: str, fees: list[tuple[str, str, int]]
) -> None:
    """Approve each (fee address, token, amount) the datatoken will pull from the payer.

    The contract skips a fee whose amount, token or address is zero, so those need nothing.
    """
    totals: dict[str, int] = {}
    for address, token, amount in fees:
        if amount > 0 and int(token, 16) and int(address, 16):
            totals[token] = totals.get(token, 0) + amount
    for token, amount in totals.items():
        call = contract(w3, "OceanToken", token).functions.approve(datatoken, amount)
        send(w3, payer, call, gas=CALL_GAS)


def start_order(
    w3: Web3,
    consumer_key: LocalAccount | str,
    datatoken: str,
    service_index: int,
    provider_fee: dict[str, Any],
    consumer: str | None = None,
    consume_market_fee: tuple[str, str, int] = (ZERO_ADDRESS, ZERO_ADDRESS, 0),
) -> str:
    """ERC20Template.startOrder paid by `consumer_key` (it must hold 1 datatoken).

    Approves the provider fee, the consume market fee and the datatoken's publish market
    fee first when they are non-zero. `consumer` (default: the payer) is who may use the
    order. Returns the transaction hash (the transferTxId of compute requests).
    """
    payer = as_account(consumer_key)
    dt = contract(w3, "ERC20Template", datatoken)
    pfee = _provider_fee_tuple(provider_fee)
    publish_fee = dt.functions.getPublishingMarketFee().call()
    _approve_fees(
        w3, payer, dt.address,
        [(pfee[0], pfee[1], pfee[2]), consume_market_fee, tuple(publish_fee)],
    )  # fmt: skip
    call = dt.functions.startOrder(
        Web3.to_checksum_address(consumer or payer.address),
        service_index,
        pfee,
        (
            Web3.to_checksum_address(consume_market_fee[0]),
            Web3.to_checksum_address(consume_market_fee[1]),
            int(consume_market_fee[2]),
        ),
    )
    return send(w3, payer, call)["transactionHash"].to_0x_hex()


def reuse_order(
    w3: Web3,
    payer_key: LocalAccount | str,
    datatoken: str,
    order_tx_id: str,
    provider_fee: dict[str, Any],
) -> str:
    """ERC20Template.reuseOrder: pay a new provider fee for an existing order (no datatoken)."""
    payer = as_account(payer_key)
    dt = contract(w3, "ERC20Template", datatoken)
    pfee = _provider_fee_tuple(provider_fee)
    _approve_fees(w3, payer, dt.address, [(pfee[0], pfee[1], pfee[2])])
    call = dt.functions.reuseOrder(hex_to_bytes(order_tx_id), pfee)
    return send(w3, payer, call)["transactionHash"].to_0x_hex()
