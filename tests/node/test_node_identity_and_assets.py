"""What Ocean's newer clients read besides compute at /node: the DDO routes (Ocean's CLI and
ocean.js read every asset there), `directCommand {"command": "status"}` with the provider's
libp2p peer id (ocean.js 9 signs its token with it), both forms of the token messages (ocean.js
8 and 9), and every start option this provider does not honour refused with a 400 naming it.
Real contracts on anvil, moto, the app in process."""
from __future__ import annotations

import json
import time

import pytest

from lifecycle_helpers import consumer_key
from signing import sign
from test_node_protocol import RAW, free_body, node, post, signed  # noqa: F401 - `node` is a fixture

from chalicelib.node.identity import peer_id

# Ocean Node's own test keys and the peer ids its tests expect of them (ocean-node
# src/test/.env.test NODE1/NODE2_PRIVATE_KEY; src/test/unit/networking.test.ts names node 2's
# peer id, the Postman collection node 1's).
OCEAN_NODE_PAIRS = [
    ("0x3634cc4a3d2694a1186a7ce545f149e022eea103cc254d18d08675104bb4b5ac",
     "16Uiu2HAm7YHuXeBpoFoKHyAieKDAsdg3RNmCUEVgNxffByRS7Hdt"),
    ("0xcb345bd2b11264d523ddaf383094e2675c420a17511c3102a53817f13474a7ff",
     "16Uiu2HAmQU8YmsACkFjkaFqEECLN3Csu6JgoU3hw9EsPmk7i9TFL"),
]


@pytest.mark.parametrize("key,expected", OCEAN_NODE_PAIRS)
def test_peer_id_is_libp2p_s_for_the_secp256k1_key(key, expected):
    assert peer_id(key) == expected == peer_id(key.removeprefix("0x"))


def test_direct_command_status_names_the_provider_s_peer_id(client):
    from chalicelib import services

    response = client.http.post("/node/directCommand", body=json.dumps({"command": "status"}),
                                headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    status = json.loads(response.body)
    assert status["id"] == peer_id(services.settings().provider_private_key()) and status["id"].startswith("16Uiu2HA")
    assert status["address"] == services.provider_address()
    assert "0x" + status["publicKey"] == services.provider_public_key()
    assert status["http"] is True and status["p2p"] is False


@pytest.mark.parametrize("body,field", [({"command": "getFees"}, "getFees"), ({"command": "findDDO", "id": "x"}, "findDDO"),
                                        ({}, "command")])
def test_direct_command_refuses_every_other_command_clearly(client, body, field):
    response = client.http.post("/node/directCommand", body=json.dumps(body), headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and field in response.body.decode()


def _token_request(account, nonce: int, message_tail: str) -> dict:
    return {"address": account.address, "nonce": str(nonce),
            "signature": sign(consumer_key(account), account.address + str(nonce) + message_tail)}


def test_auth_token_takes_ocean_js_9_s_peer_id_message_and_spends_the_nonce_once(node, client):
    from chalicelib import services

    chain, _, _ = node
    nonce = time.time_ns()
    with_peer = _token_request(chain.consumer, nonce, "createAuthToken" + services.provider_peer_id())
    status, body = post(client, "/auth/token", with_peer)
    assert status == 200 and body["token"].count(".") == 2
    # the same nonce in the 8.6.2 form (no peer id): spent already
    status, body = post(client, "/auth/token", _token_request(chain.consumer, nonce, "createAuthToken"))
    assert status == 400, body
    status, _ = post(client, "/auth/token", _token_request(chain.consumer, nonce + 1, "createAuthToken"))
    assert status == 200
    # another node's peer id is not this provider's
    other = _token_request(chain.consumer, nonce + 2, "createAuthToken" + OCEAN_NODE_PAIRS[0][1])
    assert post(client, "/auth/token", other)[0] == 400


def test_invalidation_takes_both_message_forms(node, client):
    chain, _, _ = node
    for tail in ("", "invalidateAuthToken"):  # ocean.js 8, ocean.js 9
        nonce = time.time_ns()
        _, created = post(client, "/auth/token", _token_request(chain.consumer, nonce, "createAuthToken"))
        request = {**_token_request(chain.consumer, nonce + 1, tail), "token": created["token"]}
        assert post(client, "/auth/token/invalidate", request) == (200, {"success": True})


def test_ddo_routes_answer_the_registered_asset_in_ocean_node_s_shape(node, client):
    chain, _, published = node
    for route in ("ddo", "metadata"):
        response = client.http.get(f"/node/api/aquarius/assets/{route}/{published.dataset.did}")
        assert response.status_code == 200, response.body
        assert "max-age" in response.headers["Cache-Control"]
        ddo = json.loads(response.body)
        assert ddo["id"] == published.dataset.did and ddo["services"][0]["id"] == published.dataset.serviceId
        assert ddo["services"][0]["files"] == published.dataset.ddo["services"][0]["files"]  # still encrypted
        [datatoken] = ddo["datatokens"]
        assert datatoken["address"] == published.dataset.datatoken and datatoken["serviceId"] == published.dataset.serviceId
        assert datatoken["symbol"] == "DT1"
        indexed = ddo["indexedMetadata"]
        assert indexed["nft"]["address"] == published.dataset.nftAddress
        assert indexed["nft"]["owner"] == chain.publisher.address and indexed["nft"]["state"] == 0
        assert indexed["event"]["txid"] == published.dataset.metadataTxId
        assert indexed["event"]["from"] == chain.publisher.address
        assert indexed["purgatory"] == {"state": False} and indexed["stats"][0]["datatokenAddress"] == datatoken["address"]


def test_ddo_routes_404_the_unknown_and_refuse_what_is_no_did(client):
    unknown = client.http.get("/node/api/aquarius/assets/ddo/did:op:" + "ab" * 32)
    assert unknown.status_code == 404
    assert client.http.get("/node/api/aquarius/assets/ddo/not-a-did").status_code == 400
    assert client.http.post("/node/api/aquarius/assets/ddo/did:op:" + "ab" * 32).status_code == 405


UNHONOURED = ["output", "outputBucketId", "queueMaxWaitTime", "somethingElse"]


@pytest.mark.parametrize("option", UNHONOURED)
def test_a_free_start_option_not_honoured_is_refused_by_name(node, client, option):
    chain, _, published = node
    status, body = post(client, "/freeCompute", free_body(published, chain.consumer, RAW, **{option: "x"}))
    assert status == 400 and option in body["errors"], body
    assert "not supported" in body["errors"][option][0]


def test_a_paid_start_option_not_honoured_is_refused_by_name(node, client):
    chain, _, published = node
    body = {**signed(chain.consumer, "startCompute"), "environment": "ocean-c2d-cpu",
            "datasets": [{"documentId": published.dataset.did, "serviceId": published.dataset.serviceId,
                          "transferTxId": "0x" + "11" * 32}],
            "algorithm": RAW, "queueMaxWaitTime": 60, "output": "0x00", "policyServer": {}}
    status, answer = post(client, "/compute", body)
    assert status == 400 and {"queueMaxWaitTime", "output", "policyServer"} <= set(answer["errors"]), answer


def test_spec_documents_the_asset_routes_and_direct_command(client):
    spec = json.loads(client.http.get("/spec").body)
    ddo = spec["paths"]["/node/api/aquarius/assets/ddo/{did}"]["get"]
    assert ddo["parameters"] == [{"name": "did", "in": "path", "required": True, "schema": ddo["parameters"][0]["schema"]}]
    assert "404" in ddo["responses"] and "/node/api/aquarius/assets/metadata/{did}" in spec["paths"]
    assert "/node/directCommand" in spec["paths"]
