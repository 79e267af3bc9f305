"""Fixtures of the escrow payments' tests: moto for the records, anvil for the Escrow."""
from __future__ import annotations

from escrow_fixtures import atomic_moto, payment_tables  # noqa: F401  (fixtures)
