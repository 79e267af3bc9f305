"""Publishing as ocean.js does it against `<api>/node` (and so Ocean's CLI's `publish`): the DDO is
encrypted through this provider, `POST /node/api/aquarius/assets/ddo/validate` answers the hash
to set as metaDataHash, and setMetaData carries both; or, unencrypted, ocean.js hashes the hex text
of the DDO. Either way the asset is then read from chain and served here. Real contracts on anvil,
moto, the app in process; the DDO bytes are JavaScript's JSON.stringify, as ocean.js sends them."""
from __future__ import annotations

import hashlib
import json
import time

import pytest

from lifecycle_helpers import consumer_key
from signing import sign

from chalicelib.assets.document_hash import js_json
from chalicelib.auth.signatures import recover_address
from devstack.contracts import DEPLOY_GAS, contract, hex_to_bytes, send
from devstack.publish import build_ddo, create_nft_with_datatoken, ecies_encrypt_for

VALIDATE = "/node/api/aquarius/assets/ddo/validate"


@pytest.fixture
def publishing(aws, chain, client, monkeypatch):
    from chalicelib import services

    monkeypatch.setenv("CHAINS", json.dumps({str(chain.chain_id): chain.rpc_url}))
    services.reset()
    yield chain
    monkeypatch.undo()
    services.reset()


def _ddo(chain, endpoint: str = "http://127.0.0.1:8000/node", **extra) -> dict:
    from chalicelib import services

    nft, datatoken = create_nft_with_datatoken(chain.w3, chain.publisher, chain.contracts, "published by ocean.js")
    encrypt = ecies_encrypt_for(services.provider_public_key())
    files = encrypt(json.dumps({"datatokenAddress": datatoken, "nftAddress": nft,
                                "files": [{"type": "url", "url": "https://example.org/a.csv", "method": "GET"}]}).encode())
    ddo = build_ddo(nft_address=nft, chain_id=chain.chain_id, datatoken=datatoken, encrypted_files=files,
                    provider_url=endpoint, name="published by ocean.js", asset_type="dataset", description="",
                    algorithm=None, service_id="s1", service_type="compute", timeout=0, compute=None)
    # what ocean.js's metadata files carry besides (Ocean's CLI's samples): a float, an integral float, unicode
    return {**ddo, "indexedMetadata": {"stats": [{"prices": [{"price": 0.5}], "orders": 0}]},
            "metadata": {**ddo["metadata"], "name": "Iris – sample", "tags": ["ü"], "version": 1.0}, **extra}


def validate(client, account, ddo: dict, nonce: int | None = None) -> tuple[int, object]:
    nonce = nonce or time.time_ns()
    body = {"ddo": ddo, "publisherAddress": account.address, "nonce": str(nonce),
            "signature": sign(consumer_key(account), account.address + str(nonce) + "validateDDO")}
    response = client.http.post(VALIDATE, body=json.dumps(body), headers={"Content-Type": "application/json",
                                                                          "Authorization": "undefined"})  # as ocean.js sends it
    return response.status_code, json.loads(response.body)


def set_metadata(chain, ddo: dict, flags: int, data: bytes, metadata_hash: bytes) -> None:
    nft = contract(chain.w3, "ERC721Template", ddo["nftAddress"])
    send(chain.w3, chain.publisher, nft.functions.setMetaData(0, "http://127.0.0.1:8000/node", chain.provider.address,
                                                             bytes([flags]), data, metadata_hash, []), gas=DEPLOY_GAS)


def test_validate_answers_ocean_node_s_signed_hash_and_an_encrypted_ddo_with_it_is_served(publishing, client):
    from chalicelib import services

    chain = publishing
    ddo = _ddo(chain)
    status, answer = validate(client, chain.publisher, ddo)
    assert status == 200, answer
    stringified = js_json(ddo).encode()  # ocean.js: JSON.stringify(ddo), to encrypt and to validate
    assert b'"price":0.5' in stringified and b'"version":1}' in stringified
    assert answer["hash"] == "0x" + hashlib.sha256(stringified).hexdigest()
    assert answer["publicKey"] == services.provider_address()
    signature = answer["r"] + answer["s"][2:] + format(answer["v"], "02x")
    assert recover_address(answer["hash"], signature) == services.provider_address()

    encrypted = ecies_encrypt_for(services.provider_public_key())(stringified)
    set_metadata(chain, ddo, 2, hex_to_bytes(encrypted), bytes.fromhex(answer["hash"][2:]))
    asset = services.asset_resolver().register(chain.chain_id, ddo["nftAddress"])
    assert asset.ddo == ddo


def test_a_plain_ddo_hashed_as_ocean_js_hashes_it_is_served_and_another_hash_is_not(publishing, client):
    from chalicelib import services
    from chalicelib.errors import BusinessError

    chain = publishing
    ddo = _ddo(chain)
    plain = js_json(ddo).encode()
    hex_text = "0x" + plain.hex()  # ethers' hexlify(toUtf8Bytes(JSON.stringify(ddo))); crypto-js hashes this text
    set_metadata(chain, ddo, 0, plain, hashlib.sha256(hex_text.encode()).digest())
    assert services.asset_resolver().register(chain.chain_id, ddo["nftAddress"]).ddo == ddo

    other = _ddo(chain)
    set_metadata(chain, other, 0, js_json(other).encode(), hashlib.sha256(plain).digest())  # another document's hash
    with pytest.raises(BusinessError):
        services.asset_resolver().register(chain.chain_id, other["nftAddress"])


def test_validate_refuses_what_it_could_not_serve_and_needs_the_publisher_s_signature(publishing, client):
    chain = publishing
    ddo = _ddo(chain)
    for broken, reason in [({**ddo, "id": "did:op:" + "0" * 64}, "id must be"),
                           ({**ddo, "chainId": 1}, "not a chain this provider serves"),
                           ({**ddo, "services": []}, "at least one service"),
                           ({**ddo, "services": [{**ddo["services"][0], "files": ""}]}, "services[0] needs"),
                           ({**ddo, "metadata": {"name": "x"}}, "metadata needs a type"),
                           ({k: v for k, v in ddo.items() if k != "version"}, "version is required")]:
        status, answer = validate(client, chain.publisher, broken)
        assert status == 400 and reason in answer["error"] and answer["error"].startswith("Validation error: "), answer
    nonce = time.time_ns()
    assert validate(client, chain.publisher, ddo, nonce)[0] == 200
    assert validate(client, chain.publisher, ddo, nonce)[0] == 400, "a nonce is good once"
    body = {"ddo": ddo, "publisherAddress": chain.publisher.address, "nonce": str(time.time_ns()),
            "signature": sign(consumer_key(chain.other), "anything")}
    response = client.http.post(VALIDATE, body=json.dumps(body), headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "signature" in response.body.decode()
    response = client.http.post(VALIDATE, body=json.dumps({"ddo": ddo}), headers={"Content-Type": "application/json"})
    assert response.status_code == 400
