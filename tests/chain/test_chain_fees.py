"""Provider fees quoted with coincurve match web3/eth_account's and what the contract checks."""
from __future__ import annotations

from decimal import Decimal

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from web3 import Web3

from chalicelib.chain.fees import ProviderFees, fee_message_hash, provider_data_json
from chalicelib.errors import ConfigurationError
from devstack.orders import sign_provider_fee
from chain_helpers import environment

KEY = "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6"  # anvil dev key #9
ADDRESS = Account.from_key(KEY).address
OCEAN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
DATATOKEN = "0xa513E6E4b8f2a923D98304ec87F64353C4D5C853"
NOW = 1_700_000_000


def _quote(env, minutes: float = 10, fees: ProviderFees | None = None) -> dict:
    return (fees or ProviderFees(KEY, ADDRESS)).quote(
        chain_id=8996, environment=env, datatoken=DATATOKEN, service_id="svc-1",
        valid_until=NOW + int(60 * minutes), now=NOW,
    )  # fmt: skip


def test_quote_equals_devstack_and_web3_signature() -> None:
    env = environment(price_min=1.5, fee_tokens={8996: OCEAN})
    quote = _quote(env)
    data = bytes.fromhex(quote["providerData"][2:])
    reference = sign_provider_fee(
        KEY, data=data, fee_token=OCEAN, valid_until=NOW + 600, fee_amount=15 * 10**18, fee_address=ADDRESS
    )
    assert quote == {**reference, "providerFeeAmount": str(15 * 10**18)}
    assert quote["v"] in (27, 28)


def test_message_hash_is_solidity_keccak() -> None:
    data = provider_data_json("env", NOW, DATATOKEN, "x")
    expected = Web3.solidity_keccak(
        ["bytes", "address", "address", "uint256", "uint256"], [data, ADDRESS, OCEAN, 123, 2**255]
    )
    assert fee_message_hash(data, ADDRESS.lower(), OCEAN, 123, 2**255) == bytes(expected)


def test_signature_recovers_to_the_provider_with_eth_account() -> None:
    quote = _quote(environment())
    digest = Web3.solidity_keccak(
        ["bytes", "address", "address", "uint256", "uint256"],
        [bytes.fromhex(quote["providerData"][2:]), quote["providerFeeAddress"], quote["providerFeeToken"],
         int(quote["providerFeeAmount"]), quote["validUntil"]],
    )  # fmt: skip
    signer = Account.recover_message(encode_defunct(primitive=digest), vrs=(quote["v"], quote["r"], quote["s"]))
    assert signer == ADDRESS


def test_provider_data_names_environment_datatoken_and_service() -> None:
    import json

    quote = _quote(environment("ocean-c2d-gpu"))
    assert json.loads(bytes.fromhex(quote["providerData"][2:])) == {
        "environment": "ocean-c2d-gpu", "timestamp": NOW, "dt": DATATOKEN, "id": "svc-1"
    }  # fmt: skip
    assert quote["providerFeeToken"] == "0x0000000000000000000000000000000000000000"
    assert quote["providerFeeAmount"] == "0"


@pytest.mark.parametrize(
    ("price_min", "seconds", "decimals", "expected"),
    [
        (1, 600, 18, 10 * 10**18),
        (0.5, 90, 18, 75 * 10**16),
        (2.5, 60, 6, 2_500_000),
        (1, 1, 18, -(-(10**18) // 60)),  # 1/60 of a token, rounded up to a whole unit
        (1, 0, 18, 0),
        (1, -60, 18, 0),  # validUntil in the past
        (0, 600, 18, 0),
    ],
)
def test_amount_is_price_per_minute_times_minutes(price_min, seconds, decimals, expected) -> None:
    fees = ProviderFees(KEY, ADDRESS, decimals=lambda chain_id, token: decimals)
    env = environment(price_min=price_min, fee_tokens={8996: OCEAN})
    assert fees.amount(chain_id=8996, environment=env, valid_until=NOW + seconds, now=NOW) == expected


def test_free_environment_and_chain_without_fee_token_cost_nothing() -> None:
    fees = ProviderFees(KEY, ADDRESS)
    paid_elsewhere = environment(price_min=3, fee_tokens={1: OCEAN})
    free = environment(price_min=3, fee_tokens={8996: OCEAN}, free=True)
    for env in (paid_elsewhere, free):
        assert fees.amount(chain_id=8996, environment=env, valid_until=NOW + 3600, now=NOW) == 0
    paid = environment(price_min=3, fee_tokens={8996: OCEAN})
    assert fees.amount(chain_id=8996, environment=paid, valid_until=NOW + 3600, now=NOW) == int(Decimal(180) * 10**18)


def test_provider_address_must_belong_to_the_key() -> None:
    with pytest.raises(ConfigurationError):
        ProviderFees(KEY, OCEAN)
