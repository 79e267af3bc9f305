"""POST /api/services/encrypt: the original Provider's contract (ocean.py DataEncryptor.encrypt)."""
from __future__ import annotations

import json
import lzma

import ecies as eciespy
import pytest

from chalicelib.http import MAX_BODY_BYTES

OCTET = {"Content-Type": "application/octet-stream"}


def post(client, body: bytes, query: str = "?chainId=8996", headers=None):
    return client.http.post("/api/services/encrypt" + query, body=body, headers=OCTET if headers is None else headers)


def provider_decrypts(provider_key: str, text: str) -> bytes:
    assert text.startswith("0x")
    return eciespy.decrypt(provider_key.removeprefix("0x"), bytes.fromhex(text[2:]))


def test_round_trip_as_ocean_py_sends_it(client, provider_key):
    files = {"datatokenAddress": "0x" + "11" * 20, "nftAddress": "0x" + "22" * 20,
             "files": [{"type": "url", "url": "https://example.com/a.csv", "method": "GET"}]}
    payload = json.dumps(files, separators=(",", ":")).encode()
    # ocean.py writes the header as "Content-type"
    response = post(client, payload, headers={"Content-type": "application/octet-stream"})
    assert response.status_code == 201
    assert response.headers["Content-Type"] == "text/plain"
    assert provider_decrypts(provider_key, response.body.decode()) == payload


def test_binary_bodies_are_not_read_as_json(client, provider_key):
    for payload in (lzma.compress(b'{"a": 1}' * 50), b"[1, 2, 3]", bytes(range(256)), b"hello_world"):
        response = post(client, payload)
        assert response.status_code == 201, response.body
        assert provider_decrypts(provider_key, response.body.decode()) == payload


def test_each_encryption_differs_but_decrypts_the_same(client, provider_key):
    first, second = (post(client, b"same").body.decode() for _ in range(2))
    assert first != second
    assert provider_decrypts(provider_key, first) == provider_decrypts(provider_key, second) == b"same"


def test_chain_id_is_optional_but_must_be_served(client, provider_key):
    assert provider_decrypts(provider_key, post(client, b"x", query="").body.decode()) == b"x"
    response = post(client, b"x", query="?chainId=1")
    assert response.status_code == 400
    assert json.loads(response.body) == {"error": "Unsupported chain ID 1"}
    response = post(client, b"x", query="?chainId=abc")
    assert response.status_code == 400
    assert "chainId" in json.loads(response.body)["errors"]


def test_content_type_must_be_octet_stream(client):
    response = post(client, b'{"a": 1}', headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert json.loads(response.body) == {"error": "Invalid request content type: should be application/octet-stream"}


def test_empty_body_is_refused(client):
    response = post(client, b"")
    assert response.status_code == 400
    assert json.loads(response.body)["errors"] == {"body": ["the bytes to encrypt are required"]}


def test_body_is_capped(client, provider_key):
    assert post(client, b"a" * MAX_BODY_BYTES).status_code == 201
    response = post(client, b"a" * (MAX_BODY_BYTES + 1))
    assert response.status_code == 413
    assert "error" in json.loads(response.body)


def test_wrong_method_and_discovery(client):
    assert client.http.get("/api/services/encrypt").status_code == 405
    root = json.loads(client.http.get("/").body)
    assert root["serviceEndpoints"]["encrypt"] == ["POST", "/api/services/encrypt"]
    spec = json.loads(client.http.get("/spec").body)
    operation = spec["paths"]["/api/services/encrypt"]["post"]
    assert "application/octet-stream" in operation["requestBody"]["content"]
    assert [p["name"] for p in operation["parameters"]] == ["chainId"]


def test_json_routes_still_parse_json_bodies(client):
    """The raw-body option is per route: the others still read JSON bodies and refuse bad ones."""
    response = client.http.get("/api/services/nonce", body=b"not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert json.loads(response.body)["errors"] == {"body": ["body is not valid JSON"]}


@pytest.mark.parametrize("payload", [b"x", b"\x00" * 1000])
def test_devstack_encrypt_is_the_same_scheme(provider_key, payload):
    from chalicelib.assets import ecies
    from devstack.publish import ecies_encrypt_for

    public = ecies.public_key_of(provider_key)
    assert ecies.decrypt(provider_key, ecies_encrypt_for(public)(payload)) == payload
    assert ecies.decrypt(provider_key, ecies_encrypt_for("0x" + public[4:])(payload)) == payload
