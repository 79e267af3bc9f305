"""The asset indexer on the real dev chain (anvil, the Ocean contracts) with its cursor in moto:
it registers what points at this provider (either URL, plain or encrypted DDOs), ignores the
rest without a call, follows state changes and DDOs moving away, is idempotent, reads the
blocks of a reorg again, and survives a dead RPC."""
from __future__ import annotations

import json

import pytest

from asset_helpers import set_state
from chalicelib.assets.indexer import REORG_DEPTH, AssetIndexer
from chalicelib.assets.indexed import IndexedMetadataReader
from chalicelib.assets.onchain import MetadataReader
from chalicelib.assets.resolver import AssetResolver
from chalicelib.chain.web3access import Chains
from chalicelib.compute.input_rules import same_endpoint
from chalicelib.models import AssetRecord, IndexerCursor

OURS = "http://provider.test"


class CountingResolver(AssetResolver):
    """The real resolver, counting the registrations the indexer asks for."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.asked: list[str] = []

    def register(self, chain_id, nft_address, **kwargs):
        self.asked.append(nft_address)
        return super().register(chain_id, nft_address, **kwargs)


@pytest.fixture
def indexing(chain, aws, clock, provider_key):
    chains = Chains({chain.chain_id: chain.rpc_url}, timeout=5)
    resolver = CountingResolver(chain_ids=[chain.chain_id], reader=MetadataReader(chains), metadata=None,
                                private_key=lambda: provider_key, clock=clock,
                                indexer=IndexedMetadataReader(chains.web3))

    def make(rpc_url: str = chain.rpc_url, start: int | None = None) -> AssetIndexer:
        web3 = Chains({chain.chain_id: rpc_url}, timeout=2).web3
        start_block = chain.w3.eth.block_number + 1 if start is None else start
        return AssetIndexer(resolver=resolver, web3_for=web3, chain_ids=[chain.chain_id],
                            served=lambda url: any(same_endpoint(url, own) for own in (OURS, OURS + "/node")),
                            private_key=lambda: provider_key, start_blocks={chain.chain_id: start_block}, clock=clock)

    return resolver, make


def _publish(chain, encrypt, endpoint: str, flags: int = 0, name: str = "asset"):
    from devstack.publish import publish_asset
    from asset_helpers import FILES

    return publish_asset(chain.w3, chain.publisher, chain.contracts, name=name, files=FILES, provider_url=endpoint,
                         provider_address=chain.provider.address, encrypt=encrypt, flags=flags)


def test_registers_what_points_here_and_ignores_the_rest_without_a_call(chain, indexing, route_encrypt):
    resolver, make = indexing
    indexer = make()
    at_node = _publish(chain, route_encrypt, OURS + "/node", flags=3, name="encrypted, at /node")
    at_root = _publish(chain, route_encrypt, OURS + "/", name="at the root")
    elsewhere = _publish(chain, route_encrypt, "https://another-provider.example", name="another provider's")
    [run] = indexer.run()
    assert not run.get("error") and run["events"] >= 3
    assert set(run["registered"]) == {at_node.did, at_root.did}
    assert elsewhere.nftAddress not in resolver.asked  # judged from the log alone
    asset = resolver.resolve(at_node.did)
    assert asset.ddo == at_node.ddo and asset.indexed["datatokens"][0]["address"] == at_node.datatoken
    with pytest.raises(AssetRecord.DoesNotExist):
        AssetRecord.get(elsewhere.did)
    cursor = IndexerCursor.get(f"indexer#{chain.chain_id}")
    assert cursor.block == chain.w3.eth.block_number and cursor.block_hash.startswith("0x")


def test_a_second_run_writes_nothing_new(chain, indexing, route_encrypt, clock):
    _, make = indexing
    indexer = make()
    published = _publish(chain, route_encrypt, OURS)
    indexer.run()
    before = AssetRecord.get(published.did)
    clock.advance(30)
    [run] = indexer.run()  # the same blocks again (the reorg window): the same asset, unchanged
    after = AssetRecord.get(published.did)
    assert run["registered"] == [published.did] and after.updated_at == before.updated_at


def test_state_changes_and_ddos_moving_away_are_followed(chain, indexing, route_encrypt, clock):
    from devstack.publish import set_ddo

    resolver, make = indexing
    indexer = make()
    published = _publish(chain, route_encrypt, OURS)
    indexer.run()
    set_state(chain, published.nftAddress, 4)
    indexer.run()
    assert AssetRecord.get(published.did).state == 4
    moved = json.loads(json.dumps(published.ddo))
    moved["services"][0]["serviceEndpoint"] = "https://another-provider.example"
    set_ddo(chain.w3, chain.publisher, moved, provider_url="https://another-provider.example",
            provider_address=chain.provider.address)
    [run] = indexer.run()
    assert run["forgotten"] == [published.did]
    with pytest.raises(AssetRecord.DoesNotExist):
        AssetRecord.get(published.did)


def test_blocks_replaced_by_a_reorg_are_read_again(chain, indexing, route_encrypt):
    from devstack.anvil import revert, snapshot

    resolver, make = indexing
    indexer = make()
    indexer.run()
    fork = snapshot(chain.w3)
    lost = _publish(chain, route_encrypt, OURS, name="on the abandoned branch")
    indexer.run()
    revert(chain.w3, fork)  # a reorg: the blocks after `fork` are replaced
    kept = _publish(chain, route_encrypt, OURS, name="on the new branch")
    assert chain.w3.eth.block_number - REORG_DEPTH < IndexerCursor.get(f"indexer#{chain.chain_id}").block
    assert AssetRecord.get(lost.did).ddo == lost.ddo
    [run] = indexer.run()
    # the same publisher nonce made the same NFT (and did) on the new branch, with another DDO
    assert kept.did == lost.did and kept.did in run["registered"]
    assert AssetRecord.get(kept.did).ddo == kept.ddo != lost.ddo


def test_a_dead_rpc_fails_the_run_and_keeps_the_cursor(chain, indexing, route_encrypt):
    _, make = indexing
    start = chain.w3.eth.block_number + 1
    published = _publish(chain, route_encrypt, OURS)
    [dead] = make("http://127.0.0.1:9", start=start).run()
    assert dead["error"] and dead["registered"] == []
    with pytest.raises(IndexerCursor.DoesNotExist):
        IndexerCursor.get(f"indexer#{chain.chain_id}")
    [alive] = make(start=start).run()
    assert alive["registered"] == [published.did]


def test_the_first_run_starts_where_it_is_told(chain, indexing, route_encrypt):
    _, make = indexing
    published = _publish(chain, route_encrypt, OURS)
    [later] = make(start=chain.w3.eth.block_number + 1).run()
    assert later["registered"] == []
    IndexerCursor(f"indexer#{chain.chain_id}").delete()
    assert published.did in make(start=0).run()[0]["registered"]


def test_the_indexer_needs_nothing_beyond_its_own_policy(chain, indexing, route_encrypt, clock, monkeypatch):
    """Every AWS call of a run that registers, re-reads and forgets assets is one the stage's
    indexer policy (infra.policies.index_policy) allows: its action on that table, and a key the
    policy's condition admits (only the indexer's own cursors in the counters table)."""
    import fnmatch
    import os

    from botocore.client import BaseClient

    from chalicelib.config import load_settings
    from devstack.publish import set_ddo
    from infra import policies

    calls: list[tuple[str, dict]] = []
    real = BaseClient._make_api_call

    def recording(client, operation, params):
        calls.append((f"{client.meta.service_model.signing_name}:{operation}", params))
        return real(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", recording)
    _, make = indexing
    indexer = make()
    published = _publish(chain, route_encrypt, OURS)
    indexer.run()
    clock.advance(30)
    moved = json.loads(json.dumps(published.ddo))
    moved["services"][0]["serviceEndpoint"] = "https://another-provider.example"
    set_ddo(chain.w3, chain.publisher, moved, provider_url="https://another-provider.example",
            provider_address=chain.provider.address)
    [run] = indexer.run()
    assert run["forgotten"] == [published.did] and calls

    env = {**os.environ, "PROVIDER_KEY_SECRET": "arn:aws:secretsmanager:us-east-1:123456789012:secret:k-Ab12Cd",
           "JWT_SECRET_NAME": "arn:aws:secretsmanager:us-east-1:123456789012:secret:j-Ef34Gh"}
    policy = policies.index_policy(env, "app", "test")
    keys = {load_settings(env).counters_table: "environment", load_settings(env).assets_table: "did"}

    def allowed(action: str, params: dict) -> bool:
        table = params.get("TableName", "")
        key = (params.get("Key") or params.get("Item") or {}).get(keys.get(table, ""), {}).get("S", "")
        for statement in policy["Statement"]:
            if action not in statement["Action"] or not any(r.endswith(f":table/{table}") for r in statement["Resource"]):
                continue
            patterns = statement.get("Condition", {}).get("ForAllValues:StringLike", {}).get("dynamodb:LeadingKeys")
            if patterns is None or any(fnmatch.fnmatchcase(key, p) for p in patterns):
                return True
        return False

    refused = [(action, params.get("TableName")) for action, params in calls if not allowed(action, params)]
    assert not refused, refused
    assert {action for action, _ in calls} >= {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"}
