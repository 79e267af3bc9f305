"""ECIES, the DDO rules, flag decoding and files decryption, without a chain."""
from __future__ import annotations

import hashlib
import json
import logging
import lzma

import pytest
from eth_account import Account

from asset_helpers import FILES, SECRET_URL, exception_chain_text
from chalicelib.assets import ecies
from chalicelib.assets.ddo import Asset, MAX_DDO_BYTES, check_identity, compute_did, parse_ddo
from chalicelib.assets.files import FilesUnavailable, decrypt_files
from chalicelib.assets.onchain import FLAG_ECIES, FLAG_LZMA, MetadataEvent, plain_document
from chalicelib.errors import BusinessError

OTHER_KEY = "0x" + "42" * 32
NFT = Account.from_key("0x" + "01" * 32).address
DATATOKEN = Account.from_key("0x" + "02" * 32).address


# ------------------------------------------------------------------ ecies


def test_public_key_is_the_eth_public_key(provider_key):
    eth_public = Account.from_key(provider_key)._key_obj.public_key.to_hex()
    assert ecies.public_key_of(provider_key) == "0x04" + eth_public[2:]


def test_decrypt_refuses_foreign_or_malformed_ciphertext(provider_key):
    foreign = ecies.encrypt_for_key(OTHER_KEY, b"secret")
    for bad in (foreign, "0xzz", "0x1234", b"\x04" + b"\x00" * 100, ""):
        with pytest.raises(ecies.DecryptionError) as excinfo:
            ecies.decrypt(provider_key, bad)
        assert "secret" not in str(excinfo.value)
    assert ecies.decrypt(OTHER_KEY, foreign) == b"secret"


# ------------------------------------------------------------------ ddo


def make_ddo(chain_id: int = 8996, nft: str = NFT, version: str = "4.1.0", files: str = "0x00") -> dict:
    return {
        "@context": ["https://w3id.org/did/v1"], "id": compute_did(nft, chain_id), "version": version,
        "chainId": chain_id, "nftAddress": nft, "metadata": {"type": "dataset", "name": "n"},
        "services": [{"id": "svc-a", "type": "compute", "files": files, "datatokenAddress": DATATOKEN},
                     {"id": "7", "type": "access", "files": files, "datatokenAddress": DATATOKEN}],
    }  # fmt: skip


def test_did_rule_matches_devstack_and_ignores_address_case():
    from devstack.publish import compute_did as devstack_did

    assert compute_did(NFT.lower(), 8996) == compute_did(NFT, 8996) == devstack_did(NFT, 8996)
    assert compute_did(NFT, 1) != compute_did(NFT, 8996)


def test_service_lookup_and_codes():
    ddo = make_ddo()
    asset = Asset(ddo["id"], 8996, NFT, ddo)
    assert asset.service("svc-a") == (0, ddo["services"][0])
    assert asset.service(7)[0] == 1  # ids compared as text
    with pytest.raises(BusinessError) as excinfo:
        asset.service("nope", resource="algorithm")
    assert excinfo.value.body() == {"error": {"algorithm.serviceId": "not_found"}}
    assert asset.type == "dataset" and asset.metadata["name"] == "n"


@pytest.mark.parametrize("state,consumable", [(0, True), (5, True), (1, False), (2, False), (3, False), (4, False)])
def test_consumable_states(state, consumable):
    ddo = make_ddo()
    asset = Asset(ddo["id"], 8996, NFT, ddo, state=state)
    assert asset.is_consumable is consumable
    if not consumable:
        with pytest.raises(BusinessError) as excinfo:
            asset.check_consumable()
        assert excinfo.value.body() == {"error": "Asset is not consumable."}


def test_identity_checks():
    ddo = make_ddo()
    check_identity(ddo, ddo["id"], 8996, NFT)
    malformed = {"error": {"dataset.documentId": "asset_malformed"}}
    cases = [
        (dict(ddo, id=compute_did(NFT, 1)), ddo["id"], 8996, NFT),  # DDO names another did
        (dict(ddo, chainId=1), ddo["id"], 8996, NFT),
        (dict(ddo, nftAddress=DATATOKEN), ddo["id"], 8996, NFT),
        (ddo, compute_did(DATATOKEN, 8996), 8996, NFT),  # did does not follow from the NFT
        (dict(ddo, id=compute_did(DATATOKEN, 8996)), compute_did(DATATOKEN, 8996), 8996, NFT),  # even if named
        (dict(ddo, nftAddress="nope"), ddo["id"], 8996, NFT),
    ]
    for candidate, did, chain_id, nft in cases:
        with pytest.raises(BusinessError) as excinfo:
            check_identity(candidate, did, chain_id, nft)
        assert excinfo.value.body() == malformed


@pytest.mark.parametrize("raw", [b"not json", b"[1]", b'"text"', b"{" * 100_000, b" " * (MAX_DDO_BYTES + 1)])
def test_parse_ddo_refuses_what_is_not_a_json_object(raw):
    with pytest.raises(BusinessError):
        parse_ddo(raw)


# ------------------------------------------------------------------ flags


def event_for(plain: bytes, flags: int, key: str, digest: bytes | None = None) -> MetadataEvent:
    data = lzma.compress(plain) if flags & FLAG_LZMA else plain
    if flags & FLAG_ECIES:
        data = bytes.fromhex(ecies.encrypt_for_key(key, data)[2:])
    return MetadataEvent(1, 0, 0, flags, data, digest or hashlib.sha256(plain).digest())


@pytest.mark.parametrize("flags", [0, 1, 2, 3])
def test_every_flag_combination_decodes(flags, provider_key):
    plain = json.dumps(make_ddo()).encode()
    assert plain_document(event_for(plain, flags, provider_key), lambda: provider_key) == plain


@pytest.mark.parametrize("flags", [0, 1, 2, 3])
def test_hash_mismatch_is_refused(flags, provider_key):
    plain = json.dumps(make_ddo()).encode()
    with pytest.raises(BusinessError) as excinfo:
        plain_document(event_for(plain, flags, provider_key, digest=b"\x00" * 32), lambda: provider_key)
    assert excinfo.value.body() == {"error": {"dataset.documentId": "asset_malformed"}}


def test_undecodable_documents_are_refused(provider_key):
    plain = json.dumps(make_ddo()).encode()
    foreign = event_for(plain, FLAG_ECIES, OTHER_KEY)
    bomb_plain = b" " * (MAX_DDO_BYTES * 20)
    bomb = MetadataEvent(1, 0, 0, FLAG_LZMA, lzma.compress(bomb_plain), hashlib.sha256(bomb_plain).digest())
    truncated = MetadataEvent(1, 0, 0, FLAG_LZMA, lzma.compress(plain)[:-10], hashlib.sha256(plain).digest())
    not_lzma = MetadataEvent(1, 0, 0, FLAG_LZMA, plain, hashlib.sha256(plain).digest())
    for event in (foreign, bomb, truncated, not_lzma):
        with pytest.raises(BusinessError):
            plain_document(event, lambda: provider_key)


# ------------------------------------------------------------------ files


def encrypted_files(key: str, datatoken: str = DATATOKEN, nft: str = NFT, files=None) -> str:
    body = {"datatokenAddress": datatoken, "nftAddress": nft, "files": FILES if files is None else files}
    return ecies.encrypt_for_key(key, json.dumps(body).encode())


def asset_with(files: str, version: str = "4.1.0") -> tuple[Asset, dict]:
    ddo = make_ddo(files=files, version=version)
    return Asset(ddo["id"], 8996, NFT, ddo), ddo["services"][0]


def test_decrypt_files_returns_the_file_objects(provider_key):
    asset, service = asset_with(encrypted_files(provider_key, datatoken=DATATOKEN.lower()))
    assert decrypt_files(asset, service, provider_key) == FILES


def test_old_structure_is_a_bare_list(provider_key):
    asset, service = asset_with(ecies.encrypt_for_key(provider_key, json.dumps(FILES).encode()), version="4.0.0")
    assert decrypt_files(asset, service, provider_key) == FILES
    asset, service = asset_with(ecies.encrypt_for_key(provider_key, json.dumps(FILES).encode()))
    with pytest.raises(FilesUnavailable):
        decrypt_files(asset, service, provider_key)


@pytest.mark.parametrize(
    "files,reason",
    [
        (lambda key: encrypted_files(OTHER_KEY), "files are not encrypted for this provider"),
        (lambda key: encrypted_files(key, datatoken=NFT), "mismatch of datatoken"),
        (lambda key: encrypted_files(key, nft=DATATOKEN), "mismatch of dataNft"),
        (lambda key: encrypted_files(key, files=[]), "expected a non-empty files list"),
        (lambda key: encrypted_files(key, files=[{"type": "graphql", "url": SECRET_URL}]), "unsupported file type"),
        (lambda key: ecies.encrypt_for_key(key, SECRET_URL.encode()), "decrypted files are not JSON"),
        (lambda key: ecies.encrypt_for_key(key, json.dumps({"files": FILES}).encode()),
         "key datatokenAddress not found in files"),
        (lambda key: "", "service has no encrypted files"),
    ],
)
def test_refused_files_never_leak(files, reason, provider_key, caplog):
    asset, service = asset_with(files(provider_key))
    caplog.set_level(logging.DEBUG)
    for resource, code in (("dataset", {"dataset.serviceId": "compute_services_not_in_same_provider"}),
                           ("algorithm", {"algorithm": "file_unavailable"})):
        with pytest.raises(FilesUnavailable) as excinfo:
            decrypt_files(asset, service, provider_key, resource)
        assert excinfo.value.reason == reason
        assert excinfo.value.body() == {"error": code}
        assert "s3cr3t" not in exception_chain_text(excinfo.value)
    assert all("s3cr3t" not in record.getMessage() for record in caplog.records)
