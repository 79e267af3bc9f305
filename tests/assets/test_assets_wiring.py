"""The container's resolver (services.asset_resolver) from settings, and the register command."""
from __future__ import annotations

import json
import logging

import pytest

from asset_helpers import FILES, SECRET_URL, publish


@pytest.fixture
def provider_on_chain(chain, aws, monkeypatch):
    """The provider's settings pointed at the session anvil; everything rebuilt before and after."""
    from chalicelib import services

    monkeypatch.setenv("CHAINS", json.dumps({str(chain.chain_id): chain.rpc_url}))
    monkeypatch.delenv("METADATA_URL", raising=False)
    services.reset()
    # Build the settings now: chalice's test client swaps os.environ for .chalice/config.json's
    # stage variables (another RESOURCE_PREFIX) during each request, and settings built lazily
    # inside a request would name tables moto does not have.
    services.settings()
    yield chain
    services.reset()  # the next use rebuilds from the environment monkeypatch restores


def test_services_resolver_reads_the_configured_chain(provider_on_chain, route_encrypt, caplog):
    from chalicelib import services
    from chalicelib.assets.register import register_asset

    caplog.set_level(logging.DEBUG)
    chain = provider_on_chain
    published = publish(chain, route_encrypt, flags=3)
    register_asset(chain.chain_id, published.nftAddress, tx_hash=published.metadataTxId)
    resolver = services.asset_resolver()
    asset = resolver.resolve(published.did)
    assert asset.ddo == published.ddo
    assert resolver.decrypt_files(asset, asset.service(published.serviceId)[1]) == FILES
    assert all("s3cr3t" not in r.getMessage() and SECRET_URL not in r.getMessage() for r in caplog.records)


def test_register_command_and_event(provider_on_chain, route_encrypt, capsys):
    from chalicelib.assets.register import handle_event, main

    chain = provider_on_chain
    published = publish(chain, route_encrypt, flags=1)
    capsys.readouterr()  # the encrypt route's own log line
    assert main(["--chain-id", str(chain.chain_id), "--nft", published.nftAddress, "--tx", published.metadataTxId]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {
        "did": published.did, "chainId": chain.chain_id, "nftAddress": published.nftAddress, "state": 0,
        "type": "dataset", "name": "asset", "services": [{"id": published.serviceId, "type": "compute"}],
    }
    assert "files" not in json.dumps(printed)
    assert handle_event({"chainId": chain.chain_id, "nftAddress": published.nftAddress})["did"] == published.did

    assert main(["--remove", published.did]) == 0
    assert main(["--remove", published.did]) == 1
    capsys.readouterr()
    assert main(["--chain-id", "1", "--nft", published.nftAddress]) == 2
    assert "not supported" in capsys.readouterr().err


def test_chain_not_configured_is_refused_by_the_accessor(aws):
    """With the default test settings (no anvil on 8545 needed), an unknown chain never connects."""
    from chalicelib import services
    from chalicelib.errors import BusinessError

    services.reset()
    try:
        with pytest.raises(BusinessError) as excinfo:
            services.asset_resolver().register(137, "0x" + "ab" * 20)
        assert excinfo.value.body() == {"error": "chain 137 is not supported by this provider"}
    finally:
        services.reset()


def test_register_asset_lambda_function(provider_on_chain, route_encrypt, client):
    chain = provider_on_chain
    published = publish(chain, route_encrypt, flags=0)
    response = client.lambda_.invoke("register_asset", {"chainId": chain.chain_id, "nftAddress": published.nftAddress})
    assert response.payload["did"] == published.did and "files" not in json.dumps(response.payload)
