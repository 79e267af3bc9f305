"""Resolution through an Aquarius-compatible metadata service (a local HTTP server), and the
registered-on-chain path taking precedence over it."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from eth_account import Account

from asset_helpers import FILES, publish
from chalicelib.assets import ecies
from chalicelib.assets.ddo import compute_did
from chalicelib.assets.metadata_service import MetadataService
from chalicelib.assets.resolver import AssetResolver
from chalicelib.errors import BusinessError, ServiceUnavailable

NFT = Account.from_key("0x" + "03" * 32).address
DATATOKEN = Account.from_key("0x" + "04" * 32).address


class Aquarius:
    """A tiny metadata service: GET /api/aquarius/assets/ddo/<did> from a dict; 404 otherwise."""

    def __init__(self):
        self.ddos: dict[str, object] = {}
        self.raw: dict[str, tuple[int, bytes]] = {}
        self.paths: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                owner.paths.append(self.path)
                did = self.path.removeprefix("/api/aquarius/assets/ddo/")
                if did in owner.raw:
                    status, body = owner.raw[did]
                elif self.path.startswith("/api/aquarius/assets/ddo/") and did in owner.ddos:
                    status, body = 200, json.dumps(owner.ddos[did]).encode()
                else:
                    status, body = 404, json.dumps({"error": f"Asset DID {did} not found in Elasticsearch."}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def aquarius():
    server = Aquarius()
    yield server
    server.close()


def aquarius_ddo(provider_key: str, chain_id: int = 8996, nft: str = NFT, state: int = 0) -> dict:
    """A DDO as Aquarius returns it: the published DDO plus the indexer's `nft` and `event`."""
    from devstack.publish import build_ddo

    files = ecies.encrypt_for_key(provider_key, json.dumps(
        {"datatokenAddress": DATATOKEN, "nftAddress": nft, "files": FILES}).encode())
    ddo = build_ddo(nft_address=nft, chain_id=chain_id, datatoken=DATATOKEN, encrypted_files=files,
                    provider_url="http://provider.test", name="from aquarius", service_id="svc")
    ddo["nft"] = {"address": nft, "state": state, "name": "n", "symbol": "s", "owner": nft}
    ddo["event"] = {"tx": "0x" + "00" * 32, "block": 7}
    return ddo


def resolver_for(url: str, provider_key: str, chain_ids=(8996,), timeout: float = 2.0) -> AssetResolver:
    return AssetResolver(chain_ids=chain_ids, reader=None, metadata=MetadataService(url, timeout=timeout),
                         private_key=lambda: provider_key)


def test_resolves_from_the_metadata_service(aws, aquarius, provider_key):
    ddo = aquarius_ddo(provider_key, state=5)
    aquarius.ddos[ddo["id"]] = ddo
    asset = resolver_for(aquarius.url + "/", provider_key).resolve(ddo["id"])
    assert aquarius.paths == [f"/api/aquarius/assets/ddo/{ddo['id']}"]
    assert (asset.did, asset.chain_id, asset.nft_address, asset.state, asset.source) == (
        ddo["id"], 8996, NFT, 5, "metadata")
    assert asset.is_consumable
    service = asset.service("svc")[1]
    assert resolver_for(aquarius.url, provider_key).decrypt_files(asset, service) == FILES


def test_unknown_did_is_400(aws, aquarius, provider_key):
    did = compute_did(NFT, 8996)
    with pytest.raises(BusinessError) as excinfo:
        resolver_for(aquarius.url, provider_key).resolve(did, resource="algorithm")
    assert excinfo.value.body() == {"error": {"algorithm.documentId": "did_not_found"}}
    assert aquarius.paths == [f"/api/aquarius/assets/ddo/{did}"]
    with pytest.raises(BusinessError):
        resolver_for(aquarius.url, provider_key).resolve("did:op:../../admin")
    assert len(aquarius.paths) == 1  # a malformed did never reaches the service


def test_ddo_of_another_chain_or_asset_is_refused(aws, aquarius, provider_key):
    foreign = aquarius_ddo(provider_key, chain_id=137)
    aquarius.ddos[foreign["id"]] = foreign
    with pytest.raises(BusinessError) as excinfo:
        resolver_for(aquarius.url, provider_key).resolve(foreign["id"])
    assert excinfo.value.body() == {"error": {"dataset.documentId": "chain_not_supported"}}

    did = compute_did(DATATOKEN, 8996)  # a did that is not the NFT's
    for impostor in (aquarius_ddo(provider_key), dict(aquarius_ddo(provider_key), id=did)):
        aquarius.ddos[did] = impostor
        with pytest.raises(BusinessError) as excinfo:
            resolver_for(aquarius.url, provider_key).resolve(did)
        assert excinfo.value.body() == {"error": {"dataset.documentId": "asset_malformed"}}


@pytest.mark.parametrize("status,body", [(500, b"{}"), (200, b"<html>"), (200, b"[]"), (503, b"busy")])
def test_service_errors_are_503(aws, aquarius, provider_key, status, body):
    did = compute_did(NFT, 8996)
    aquarius.raw[did] = (status, body)
    with pytest.raises(ServiceUnavailable):
        resolver_for(aquarius.url, provider_key).resolve(did)


def test_service_down_is_503(aws, provider_key):
    server = Aquarius()
    url = server.url
    server.close()
    with pytest.raises(ServiceUnavailable) as excinfo:
        resolver_for(url, provider_key, timeout=1).resolve(compute_did(NFT, 8996))
    assert url not in str(excinfo.value) and excinfo.value.status_code == 503


def test_registered_asset_wins_over_the_metadata_service(chain, aws, aquarius, provider_key, route_encrypt):
    from chalicelib.assets.onchain import MetadataReader
    from chalicelib.chain.web3access import Chains

    published = publish(chain, route_encrypt)
    stale = json.loads(json.dumps(published.ddo))
    stale["metadata"]["name"] = "what the indexer says"
    aquarius.ddos[published.did] = stale
    reader = MetadataReader(Chains({chain.chain_id: chain.rpc_url}, 5))
    resolver = AssetResolver(chain_ids=[chain.chain_id], reader=reader, metadata=MetadataService(aquarius.url),
                             private_key=lambda: provider_key)
    assert resolver.resolve(published.did).metadata["name"] == "what the indexer says"
    resolver.register(chain.chain_id, published.nftAddress, tx_hash=published.metadataTxId)
    assert resolver.resolve(published.did).metadata["name"] == published.ddo["metadata"]["name"]
