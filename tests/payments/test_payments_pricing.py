"""Escrow pricing: Σ price × amount × ⌈duration / 60⌉ in the token's smallest unit."""
from __future__ import annotations

from decimal import Decimal

import pytest

from chalicelib.errors import BusinessError, ValidationError
from chalicelib.payments import pricing

TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
FEES = {"8996": [{"feeToken": TOKEN, "prices": [{"id": "cpu", "price": 0.5}, {"id": "ram", "price": "0.1"}]}]}


def test_cost_per_minute_is_exact_in_the_smallest_unit() -> None:
    prices = pricing.price_list(FEES, 8996, TOKEN.lower())
    cost = prices.cost_per_minute([{"id": "cpu", "amount": 2}, {"id": "ram", "amount": 4}, {"id": "disk", "amount": 9}], 18)
    assert cost == Decimal("1.4e18")  # disk has no price: free
    assert pricing.charge(cost, 600) == 14 * 10**18
    assert pricing.charge(cost, 601) == 154 * 10**17  # a started minute counts
    assert pricing.charge(Decimal("0.5"), 60) == 1  # rounded up, never below the exact cost


def test_billed_time_is_clamped_to_the_environment_limits() -> None:
    assert pricing.billed_seconds(10, 60, 600) == 60
    assert pricing.billed_seconds(125.2, 60, 600) == 126
    assert pricing.billed_seconds(5000, 60, 600) == 600
    assert pricing.minutes(126) == 3


def test_a_token_or_chain_the_environment_does_not_take_is_a_400() -> None:
    with pytest.raises(BusinessError, match="takes no payment"):
        pricing.price_list(FEES, 8996, "0x" + "11" * 20)
    with pytest.raises(BusinessError):
        pricing.price_list(FEES, 1, TOKEN)


def test_a_hostile_resource_amount_is_a_400() -> None:
    prices = pricing.price_list(FEES, 8996, TOKEN)
    for amount in ("nan", "-1", None, True, "abc", "inf"):
        with pytest.raises(ValidationError):
            prices.cost_per_minute([{"id": "cpu", "amount": amount}], 18)
