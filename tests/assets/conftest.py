"""Fixtures of the assets tests: the provider key, encrypt through the route, a resolver on anvil."""
from __future__ import annotations

import os

import pytest

from asset_helpers import Clock


@pytest.fixture
def provider_key() -> str:
    return os.environ["PROVIDER_PRIVATE_KEY"]


@pytest.fixture
def route_encrypt(client):
    """devstack's `Encrypt` that calls POST /api/services/encrypt as ocean.py does."""

    def encrypt(data: bytes) -> str:
        response = client.http.post(
            "/api/services/encrypt?chainId=8996", body=data, headers={"Content-Type": "application/octet-stream"}
        )
        assert response.status_code == 201, response.body
        return response.body.decode("ascii")

    return encrypt


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def resolver(chain, aws, clock, provider_key):
    """An AssetResolver reading the test chain, caching in moto, with a clock the test moves."""
    from chalicelib.assets.onchain import MetadataReader
    from chalicelib.assets.resolver import AssetResolver
    from chalicelib.chain.web3access import Chains

    return AssetResolver(
        chain_ids=[chain.chain_id],
        reader=MetadataReader(Chains({chain.chain_id: chain.rpc_url}, timeout=5)),
        metadata=None,
        private_key=lambda: provider_key,
        clock=clock,
        max_age=60,
    )
