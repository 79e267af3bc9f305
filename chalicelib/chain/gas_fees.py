"""What the provider's transactions offer for gas: EIP-1559 fees (or a legacy gas price on chains
whose blocks have no base fee), and how a stuck transaction's fees are raised. A replacement must
outbid its own previous attempt (nodes refuse a same-nonce transaction that does not) and what the
chain asks now, so `bumped` never returns less than one wei more.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from web3 import Web3


@dataclass(frozen=True)
class Fees:
    """EIP-1559 fees (priority None: a legacy gasPrice of `max_fee`)."""

    max_fee: int
    priority_fee: int | None

    def bumped(self, factor: Decimal) -> "Fees":
        def up(value: int) -> int:
            return max(value + 1, int((Decimal(value) * factor).to_integral_value(ROUND_CEILING)))

        return Fees(up(self.max_fee), None if self.priority_fee is None else up(self.priority_fee))

    def at_least(self, other: "Fees") -> "Fees":
        if self.priority_fee is None or other.priority_fee is None:
            return Fees(max(self.max_fee, other.max_fee), None)
        return Fees(max(self.max_fee, other.max_fee), max(self.priority_fee, other.priority_fee))


def network_fees(w3: "Web3") -> Fees:
    """What a new transaction offers: 2 × base fee + the node's suggested tip (EIP-1559), or the
    node's gas price where blocks have no base fee. RPC errors are the caller's to translate."""
    base = w3.eth.get_block("latest").get("baseFeePerGas")
    if base is None:
        return Fees(int(w3.eth.gas_price), None)
    tip = int(w3.eth.max_priority_fee)
    return Fees(2 * int(base) + tip, tip)
