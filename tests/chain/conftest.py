"""Fixtures of the chain package's tests (helpers live in chain_helpers.py)."""
from __future__ import annotations

import pytest

from chain_helpers import Provider, environment, key_hex
from chalicelib.chain.fees import ProviderFees
from chalicelib.chain.web3access import Chains
from devstack.devchain import DevChain


@pytest.fixture
def provider(chain: DevChain) -> Provider:
    """Free-environment provider on a dev chain reverted after the test."""
    chains = Chains({chain.chain_id: chain.rpc_url}, timeout=5)
    fees = ProviderFees(key_hex(chain.provider), chain.provider.address)
    return Provider(chain, chains, fees, environment(fee_tokens={chain.chain_id: chain.contracts.OceanToken}))


from escrow_fixtures import atomic_moto, payment_tables  # noqa: E402,F401  (fixtures of the sender's tests)
