"""Web3 per chain: cached when healthy, 503 quickly when the node is down, silent or on another chain."""
from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from chalicelib.chain.web3access import Chains, UnknownChain
from chalicelib.config import load_settings
from chalicelib.errors import BusinessError, ServiceUnavailable
from devstack.devchain import DevChain
from devstack.processes import free_port
from fakes import black_hole


@pytest.fixture
def silent_node() -> Iterator[str]:
    with black_hole() as url:
        yield url


def test_web3_is_built_once_per_chain(anvil: DevChain) -> None:
    chains = Chains({anvil.chain_id: anvil.rpc_url}, timeout=5)
    w3 = chains(anvil.chain_id)
    assert w3.eth.block_number >= 0
    assert chains.web3(anvil.chain_id) is w3
    assert chains.chain_ids == [anvil.chain_id]


def test_from_settings_uses_chains_and_rpc_timeout(anvil: DevChain) -> None:
    settings = load_settings({"CHAINS": f'{{"{anvil.chain_id}": "{anvil.rpc_url}"}}', "RESULTS_BUCKET": "b", "RPC_TIMEOUT": "2.5"})
    chains = Chains.from_settings(settings)
    assert chains(anvil.chain_id).provider.get_request_kwargs()["timeout"] == 2.5  # type: ignore[attr-defined]


def test_unknown_chain_is_a_business_error(anvil: DevChain) -> None:
    chains = Chains({anvil.chain_id: anvil.rpc_url}, timeout=5)
    with pytest.raises(UnknownChain) as caught:
        chains(137)
    assert isinstance(caught.value, BusinessError) and caught.value.status_code == 400
    assert caught.value.body() == {"error": "chain 137 is not supported by this provider"}


def test_connection_refused_is_503_quickly() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    chains = Chains({8996: url}, timeout=5)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as caught:
        chains(8996)
    assert time.monotonic() - started < 3
    assert caught.value.status_code == 503
    assert caught.value.body() == {"error": "chain 8996 is not reachable"}
    assert "127.0.0.1" not in str(caught.value)  # the RPC URL may carry an API key


def test_silent_node_times_out_with_503(silent_node: str) -> None:
    chains = Chains({8996: silent_node}, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="chain 8996 is not reachable"):
        chains(8996)
    assert time.monotonic() - started < 3


def test_node_of_another_chain_is_503_and_not_cached(anvil: DevChain) -> None:
    chains = Chains({1: anvil.rpc_url}, timeout=5)
    for _ in range(2):  # checked again on the next request, not remembered
        with pytest.raises(ServiceUnavailable) as caught:
            chains(1)
        assert caught.value.body() == {
            "error": f"chain 1 is misconfigured: its RPC node answers for chain {anvil.chain_id}"
        }


def test_token_decimals_read_once(anvil: DevChain) -> None:
    chains = Chains({anvil.chain_id: anvil.rpc_url}, timeout=5)
    assert chains.token_decimals(anvil.chain_id, anvil.contracts.OceanToken) == 18
    chains._web3.clear()  # a cached answer needs no node
    chains._urls.clear()
    assert chains.token_decimals(anvil.chain_id, anvil.contracts.OceanToken.lower()) == 18
