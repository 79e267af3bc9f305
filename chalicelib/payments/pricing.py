"""What a job costs in escrow: prices per resource per minute, by environment, chain and token.

The prices are the Ocean Node view's `fees` of an environment (what `computeEnvironments` shows
and ocean.js reads), so a consumer is charged exactly what it was shown:

    fees: {"<chainId>": [{"feeToken": "0x…", "prices": [{"id": "cpu", "price": 0.5}, …]}, …]}

`price` is in **whole tokens per unit of the resource per minute** (as Ocean Node's configuration
and our v4 `priceMin`); every amount this module returns is in the token's **smallest unit**
(an integer: what the Escrow contract takes). Ocean Node's docs/compute-pricing.md calls prices
smallest units while its code multiplies whole tokens; we keep whole-token prices in the view and
smallest units in every amount (`payment.amount`, locks, claims).

    cost per minute = Σ over requested resources of price × amount × 10^decimals   (exact Decimal)
    charge(seconds) = ⌈cost per minute × ⌈seconds / 60⌉⌉
    lock amount     = charge(maxJobDuration)
    claim amount    = charge(clamp(run time, minJobDuration, maxJobDuration))   ≤ lock amount

A resource the price list does not name costs nothing (Ocean Node's behaviour).

An environment's prices (`environment_prices`) are the configuration's `prices` per resource, or
its v4 `priceMin` spread over its CPUs; a free environment's are all 0. Both protocol edges show
them (Ocean Node's `fees`) and the escrow quote charges them, so they are decided here, once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any, Iterable, Mapping

from chalicelib.compute.environments import Environment, job_size
from chalicelib.errors import BusinessError, ConfigurationError, ValidationError


@dataclass(frozen=True)
class PriceList:
    """One fee token's prices on one chain, whole tokens per unit per minute, by resource id."""

    chain_id: int
    token: str
    prices: Mapping[str, Decimal]

    def cost_per_minute(self, resources: Iterable[Mapping[str, Any]], decimals: int) -> Decimal:
        """Smallest units per minute for `resources` ([{id, amount}], as the job gets them)."""
        total = Decimal(0)
        for resource in resources:
            price = self.prices.get(str(resource["id"]), Decimal(0))
            total += price * _amount(resource.get("amount"))
        return total * (Decimal(10) ** decimals)


def environment_prices(environment: Environment) -> list[dict[str, Any]]:
    """`[{id, price}]`: whole tokens per unit of each resource per minute on `environment`."""
    if environment.free:
        return [{"id": resource, "price": 0} for resource in job_size(environment)]
    if environment.resource_prices:
        return [{"id": resource, "price": price} for resource, price in environment.resource_prices.items()]
    per_cpu = environment.price_min / max(1, environment.n_cpu)
    return [{"id": "cpu", "price": per_cpu}, *({"id": r, "price": 0} for r in job_size(environment) if r != "cpu")]


def environment_fees(environment: Environment, chain_id: int) -> dict[str, Any]:
    """One chain's entry of Ocean Node's `fees`: the environment's fee token there and its prices."""
    return {"feeToken": environment.fee_token(chain_id), "prices": environment_prices(environment)}


def price_list(fees: Mapping[Any, Any], chain_id: int, token: str) -> PriceList:
    """The prices of `token` on `chain_id` from an environment's `fees`; a 400 when the
    environment does not take that token there (the consumer chose it)."""
    for entry in fees.get(str(chain_id)) or fees.get(chain_id) or ():
        if str(entry.get("feeToken", "")).lower() == token.lower():
            prices = {}
            for item in entry.get("prices") or ():
                price = _decimal(item.get("price"), f"price of {item.get('id')!r}")
                if price < 0:
                    raise ConfigurationError(f"the price of {item.get('id')!r} on chain {chain_id} is negative")
                prices[str(item["id"])] = price
            return PriceList(chain_id, entry["feeToken"], prices)
    raise BusinessError(f"this environment takes no payment in token {token} on chain {chain_id}")


def minutes(seconds: float) -> int:
    """Whole minutes started: what Ocean Node bills (⌈seconds / 60⌉)."""
    return max(0, math.ceil(seconds / 60))


def charge(cost_per_minute: Decimal, seconds: float) -> int:
    """The smallest-unit amount for `seconds` of the job (rounded up, never below the exact cost)."""
    return int((cost_per_minute * minutes(seconds)).to_integral_value(ROUND_CEILING))


def billed_seconds(run_seconds: float, min_job_duration: int, max_job_duration: int) -> int:
    """The run time clamped to [minJobDuration, maxJobDuration]."""
    return int(min(max(math.ceil(run_seconds), min_job_duration), max_job_duration))


def _decimal(value: Any, what: str) -> Decimal:
    if isinstance(value, bool):
        raise ConfigurationError(f"{what} must be a number")
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ConfigurationError(f"{what} must be a number") from None
    if not number.is_finite():
        raise ConfigurationError(f"{what} must be a finite number")
    return number


def _amount(value: Any) -> Decimal:
    """A requested resource amount: the consumer's input, so a 400 when it is not a number ≥ 0."""
    try:
        amount = _decimal(value, "resource amount")
    except ConfigurationError:
        raise ValidationError.field("resources", "every amount must be a number") from None
    if amount < 0:
        raise ValidationError.field("resources", "amounts cannot be negative")
    return amount
