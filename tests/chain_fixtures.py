"""pytest plugin: a dev chain (anvil + Ocean v4 contracts) for tests that touch the chain.

Registered by the top-level conftest (`pytest_plugins = ["chain_fixtures"]`).

- `anvil` (session): starts anvil on a free port and deploys the stack once (about 1 s).
  Its provider account is PROVIDER_PRIVATE_KEY when set (as the test settings do), so
  provider fees signed here verify against the provider under test. The port is free, not
  8545: point the provider's chain settings at `anvil.rpc_url`.
- `chain` (function): the same object, with evm_snapshot before and evm_revert after the
  test, so every test starts from the freshly deployed state.

Tests are skipped, not failed, when the anvil binary is absent (run `npm ci`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from devstack.anvil import find_anvil, revert, snapshot
from devstack.devchain import DevChain, start_devchain


@pytest.fixture(scope="session")
def anvil() -> Iterator[DevChain]:
    """Session-wide dev chain: w3, rpc_url, chain_id, contracts, deployer/publisher,
    provider, consumer, other (consumer and other hold 10,000 OCEAN)."""
    try:
        find_anvil()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    chain = start_devchain(provider_key=os.environ.get("PROVIDER_PRIVATE_KEY"))
    try:
        yield chain
    finally:
        chain.stop()


@pytest.fixture
def chain(anvil: DevChain) -> Iterator[DevChain]:
    """The session chain, reverted to its pre-test state after the test."""
    snap = snapshot(anvil.w3)
    try:
        yield anvil
    finally:
        revert(anvil.w3, snap)
