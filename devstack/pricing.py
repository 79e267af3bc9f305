"""Prices for datatokens, the way a publisher sets them on Ocean: a Dispenser (free datatokens)
and a FixedRateExchange (datatokens for a base token at a fixed rate), both minting on demand.

Ocean's clients get datatokens only through these: ocean.js's `orderAsset` (and so Ocean's CLI
and Ocean Market) buys from the asset's first fixed-rate exchange, else takes from its
dispenser, else refuses ("Pricing schema not supported"). Without them only the publisher, who
may mint, could hand datatokens out.
"""
from __future__ import annotations

from eth_account.signers.local import LocalAccount
from web3 import Web3

from devstack.contracts import OCEAN_UNIT, ZERO_ADDRESS, OceanContracts, contract, decode_events, send

MAX_DISPENSED = 100 * OCEAN_UNIT  # per request, and the most a wallet may hold from the dispenser


def create_dispenser(w3: Web3, publisher: LocalAccount, contracts: OceanContracts, datatoken: str) -> str:
    """ERC20Template.createDispenser with minting: anyone may take up to MAX_DISPENSED; the tx hash."""
    call = contract(w3, "ERC20Template", datatoken).functions.createDispenser(
        contracts.Dispenser, MAX_DISPENSED, MAX_DISPENSED, True, ZERO_ADDRESS)
    return send(w3, publisher, call)["transactionHash"].to_0x_hex()


def create_fixed_rate(w3: Web3, publisher: LocalAccount, contracts: OceanContracts, datatoken: str,
                      rate: int = OCEAN_UNIT, base_token: str | None = None) -> str:
    """ERC20Template.createFixedRate in `base_token` (OCEAN by default) at `rate` (base token
    units per datatoken, 18 decimals), minting on purchase, no market fee; the exchange id."""
    base = Web3.to_checksum_address(base_token or contracts.OceanToken)
    call = contract(w3, "ERC20Template", datatoken).functions.createFixedRate(
        contracts.FixedPrice,
        [base, publisher.address, ZERO_ADDRESS, ZERO_ADDRESS],  # base token, owner, market fee collector, swapper
        [18, 18, rate, 0, 1],  # base decimals, datatoken decimals, rate, market fee, with mint
    )
    receipt = send(w3, publisher, call)
    [created] = decode_events(w3, receipt, "FixedRateExchange", "ExchangeCreated", contracts.FixedPrice)
    return "0x" + bytes(created["args"]["exchangeId"]).hex()


__all__ = ["MAX_DISPENSED", "create_dispenser", "create_fixed_rate"]
