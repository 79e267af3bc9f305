"""Build the escrow payments service from settings (what a `services` accessor calls once per
container):

    @lru_cache(maxsize=1)
    def escrow_payments() -> "EscrowPayments":
        from chalicelib.payments.setup import build_payments
        return build_payments(settings(), chains())

Settings of its own, read from the environment (so chalicelib.config stays as it is):

- ESCROW_CONTRACTS: JSON {"<chainId>": "<Escrow address>"}; a chain without one takes no escrow
  payment (quote() answers 400). `make run` sets it to the dev chain's Escrow.
- ESCROW_QUEUE_WAIT (900) and ESCROW_CLAIM_MARGIN (900): seconds added to maxJobDuration for the
  lock's lifetime (minLockSeconds): time in the Batch queue, time to claim after the end.
- TX_STUCK_AFTER (45): seconds after its last broadcast before a transaction is replaced.
- ESCROW_LOCK_FAILURES (3) and ESCROW_FAILURE_WINDOW (3600): a payer with that many locks failed
  on chain within that many seconds is refused with 429 (payments.escrow_accounts); 0 failures
  turns the limit off.
- TRANSACTIONS_TABLE, CHAIN_ACCOUNTS_TABLE, ESCROW_PAYMENTS_TABLE: see payments.models.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Mapping

from chalicelib.config import chain_addresses
from chalicelib.errors import ConfigurationError
from chalicelib.payments import models

if TYPE_CHECKING:
    from chalicelib.chain.web3access import Chains
    from chalicelib.config import Settings
    from chalicelib.payments.service import EscrowPayments


def escrow_addresses(env: Mapping[str, str] | None = None) -> dict[int, str]:
    return chain_addresses(os.environ if env is None else env, "ESCROW_CONTRACTS")


def _whole(env: Mapping[str, str], name: str, default: str, unit: str = "") -> int:
    try:
        value = int(env.get(name, default))
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number{unit}") from None
    if value < 0:
        raise ConfigurationError(f"{name} cannot be negative")
    return value


def _seconds(env: Mapping[str, str], name: str, default: str) -> int:
    return _whole(env, name, default, " of seconds")


def build_payments(settings: "Settings", chains: "Chains", env: Mapping[str, str] | None = None) -> "EscrowPayments":
    from chalicelib.chain.transactions import TransactionSender
    from chalicelib.payments.escrow import EscrowContract
    from chalicelib.payments.service import EscrowPayments

    env = os.environ if env is None else env
    models.bind(settings.region, env)
    sender = TransactionSender(chains, settings.provider_private_key(),
                               stuck_after=_seconds(env, "TX_STUCK_AFTER", "45"))
    escrow = EscrowContract(chains, escrow_addresses(env))
    return EscrowPayments(escrow, sender, chains.token_decimals, queue_wait=_seconds(env, "ESCROW_QUEUE_WAIT", "900"),
                          claim_margin=_seconds(env, "ESCROW_CLAIM_MARGIN", "900"),
                          max_failures=_whole(env, "ESCROW_LOCK_FAILURES", "3"),
                          failure_window=_seconds(env, "ESCROW_FAILURE_WINDOW", "3600"))
