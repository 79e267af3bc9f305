"""DDO resolution on the real dev chain: publish (files and DDO encrypted through our own
/encrypt route), register the NFT, resolve, update, tamper; every check against anvil."""
from __future__ import annotations

import json
import logging
import lzma

import pytest

from asset_helpers import FILES, SECRET_URL, exception_chain_text, publish, set_metadata_raw, set_state, sha256
from chalicelib.assets.ddo import compute_did
from chalicelib.assets.onchain import MetadataReader
from chalicelib.assets.resolver import AssetResolver
from chalicelib.chain.web3access import Chains
from chalicelib.errors import BusinessError, ServiceUnavailable
from chalicelib.models import AssetRecord

MALFORMED = {"error": {"dataset.documentId": "asset_malformed"}}


@pytest.mark.parametrize("flags", [0, 1, 2, 3])
def test_publish_register_resolve_round_trip(flags, chain, resolver, route_encrypt, caplog):
    caplog.set_level(logging.DEBUG)
    published = publish(chain, route_encrypt, flags=flags)
    assert published.did == compute_did(published.nftAddress, chain.chain_id)

    registered = resolver.register(chain.chain_id, published.nftAddress.lower(), tx_hash=published.metadataTxId)
    asset = resolver.resolve(published.did)
    assert registered == asset
    assert asset.ddo == published.ddo
    assert (asset.did, asset.chain_id, asset.nft_address, asset.state, asset.source) == (
        published.did, chain.chain_id, published.nftAddress, 0, "chain")

    index, service = asset.service(published.serviceId)
    assert index == published.serviceIndex == 0
    assert resolver.decrypt_files(asset, service) == FILES

    record = AssetRecord.get(published.did)
    assert record.ddo == published.ddo and record.block_number > 0 and record.scanned_block >= record.block_number
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert published.did in logged
    assert "s3cr3t" not in logged and SECRET_URL not in logged


def test_register_without_tx_scans_the_logs(chain, resolver, route_encrypt):
    published = publish(chain, route_encrypt)
    assert resolver.register(chain.chain_id, published.nftAddress).ddo == published.ddo
    small_windows = AssetResolver(
        chain_ids=[chain.chain_id], reader=MetadataReader(Chains({chain.chain_id: chain.rpc_url}, 5), window=2),
        metadata=None, private_key=lambda: chain.provider.key.to_0x_hex(),
    )
    assert small_windows.register(chain.chain_id, published.nftAddress, from_block=1).ddo == published.ddo


def test_cache_serves_without_the_chain_then_refreshes(chain, resolver, route_encrypt, clock, provider_key):
    from devstack.publish import set_ddo

    published = publish(chain, route_encrypt, flags=1)
    resolver.register(chain.chain_id, published.nftAddress, tx_hash=published.metadataTxId)

    offline = AssetResolver(
        chain_ids=[chain.chain_id], reader=MetadataReader(Chains({chain.chain_id: "http://127.0.0.1:9"}, 1)),
        metadata=None, private_key=lambda: provider_key, clock=clock, max_age=60,
    )
    assert offline.resolve(published.did).ddo == published.ddo  # fresh: no chain call at all

    updated = json.loads(json.dumps(published.ddo))
    updated["metadata"]["description"] = "second version"
    set_ddo(chain.w3, chain.publisher, updated, provider_url="http://provider.test",
            provider_address=chain.provider.address, flags=3, encrypt=route_encrypt)
    assert resolver.resolve(published.did).metadata["description"] != "second version"  # still cached

    clock.advance(61)
    with pytest.raises(ServiceUnavailable):
        offline.resolve(published.did)  # stale and the chain is unreachable: 503, not old data
    assert resolver.resolve(published.did).metadata["description"] == "second version"
    record = AssetRecord.get(published.did)
    assert record.updated_at == int(clock.now) and record.ddo == updated

    set_state(chain, published.nftAddress, 3)  # revoked, without a new DDO
    assert resolver.resolve(published.did).state == 0  # cached
    clock.advance(61)
    revoked = resolver.resolve(published.did)
    assert revoked.state == 3 and not revoked.is_consumable
    with pytest.raises(BusinessError) as excinfo:
        revoked.check_consumable()
    assert excinfo.value.body() == {"error": "Asset is not consumable."}


def test_tampered_ddo_is_refused(chain, resolver, route_encrypt, clock):
    published = publish(chain, route_encrypt)
    plain = json.dumps(published.ddo, separators=(",", ":")).encode()
    tampered = json.loads(plain)
    tampered["services"][0]["compute"]["allowRawAlgorithm"] = True
    tampered_bytes = json.dumps(tampered, separators=(",", ":")).encode()

    tx = set_metadata_raw(chain, published.nftAddress, tampered_bytes, sha256(plain))
    with pytest.raises(BusinessError) as excinfo:
        resolver.register(chain.chain_id, published.nftAddress, tx_hash=tx)
    assert excinfo.value.body() == {"error": {"asset.documentId": "asset_malformed"}}
    with pytest.raises(BusinessError) as excinfo:
        resolver.resolve(published.did)
    assert excinfo.value.body() == {"error": {"dataset.documentId": "did_not_found"}}

    # A good registration, then a tampered update: refused once the cache is stale, not served old.
    good_tx = set_metadata_raw(chain, published.nftAddress, lzma.compress(plain), sha256(plain), flags=1)
    resolver.register(chain.chain_id, published.nftAddress, tx_hash=good_tx)
    set_metadata_raw(chain, published.nftAddress, tampered_bytes, sha256(plain))
    clock.advance(61)
    with pytest.raises(BusinessError) as excinfo:
        resolver.resolve(published.did)
    assert excinfo.value.body() == MALFORMED
    assert AssetRecord.get(published.did).ddo == published.ddo  # the cache was not overwritten


def test_ddo_naming_another_asset_is_refused(chain, resolver, route_encrypt):
    """A publisher re-publishing someone else's DDO (with its correct hash) under their own NFT."""
    victim = publish(chain, route_encrypt, name="victim")
    copier = publish(chain, route_encrypt, name="copier")
    plain = json.dumps(victim.ddo, separators=(",", ":")).encode()
    tx = set_metadata_raw(chain, copier.nftAddress, plain, sha256(plain))
    with pytest.raises(BusinessError) as excinfo:
        resolver.register(chain.chain_id, copier.nftAddress, tx_hash=tx)
    assert excinfo.value.body() == {"error": {"asset.documentId": "asset_malformed"}}


def test_ddo_encrypted_for_another_provider_is_refused(chain, resolver):
    from devstack.publish import ecies_encrypt_for

    other = ecies_encrypt_for(chain.other._key_obj.public_key.to_hex())
    published = publish(chain, other, flags=2)
    with pytest.raises(BusinessError) as excinfo:
        resolver.register(chain.chain_id, published.nftAddress, tx_hash=published.metadataTxId)
    assert excinfo.value.body() == {"error": {"asset.documentId": "asset_malformed"}}


def test_files_for_another_provider_are_refused(chain, resolver, route_encrypt):
    from chalicelib.assets.files import FilesUnavailable
    from devstack.publish import ecies_encrypt_for

    other = ecies_encrypt_for(chain.other._key_obj.public_key.to_hex())
    published = publish(chain, other, flags=0)  # DDO plain, files for someone else
    asset = resolver.register(chain.chain_id, published.nftAddress, tx_hash=published.metadataTxId)
    with pytest.raises(FilesUnavailable) as excinfo:
        resolver.decrypt_files(asset, asset.service(published.serviceId)[1])
    assert excinfo.value.body() == {"error": {"dataset.serviceId": "compute_services_not_in_same_provider"}}


def test_other_chains_and_unknown_dids(chain, resolver, route_encrypt, clock):
    published = publish(chain, route_encrypt)
    with pytest.raises(BusinessError) as excinfo:
        resolver.register(1, published.nftAddress)
    assert excinfo.value.body() == {"error": "chain 1 is not supported by this provider"}

    foreign_did = compute_did(published.nftAddress, 1)
    AssetRecord(foreign_did, chain_id=1, nft_address=published.nftAddress, ddo=published.ddo,
                updated_at=int(clock.now)).save()  # e.g. a chain removed from CHAINS since
    with pytest.raises(BusinessError) as excinfo:
        resolver.resolve(foreign_did, resource="algorithm")
    assert excinfo.value.body() == {"error": {"algorithm.documentId": "chain_not_supported"}}

    for did in (published.did, "did:op:" + "0" * 64, "did:op:../../etc", "", "0x12"):
        with pytest.raises(BusinessError) as excinfo:
            resolver.resolve(did)
        assert excinfo.value.body() == {"error": {"dataset.documentId": "did_not_found"}}


def test_register_needs_a_metadata_event(chain, resolver, route_encrypt):
    from devstack.publish import create_nft_with_datatoken

    nft, _ = create_nft_with_datatoken(chain.w3, chain.publisher, chain.contracts, "bare")
    with pytest.raises(BusinessError, match="no DDO"):
        resolver.register(chain.chain_id, nft)
    published = publish(chain, route_encrypt)
    with pytest.raises(BusinessError, match="no MetadataCreated"):
        resolver.register(chain.chain_id, nft, tx_hash=published.metadataTxId)


def test_chain_down_is_503(aws, clock, provider_key):
    down = AssetResolver(
        chain_ids=[8996], reader=MetadataReader(Chains({8996: "http://127.0.0.1:9"}, 1)),
        metadata=None, private_key=lambda: provider_key, clock=clock,
    )
    with pytest.raises(ServiceUnavailable) as excinfo:
        down.register(8996, "0x" + "ab" * 20)
    assert "127.0.0.1" not in exception_chain_text(excinfo.value)
