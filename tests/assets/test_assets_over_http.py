"""POST /encrypt over real HTTP (Chalice's local server), sent exactly as ocean.py and ocean.js do."""
from __future__ import annotations

import json

import ecies as eciespy
import requests

from devstack.stack import DEV_PROVIDER_KEY


def test_encrypt_over_http_like_ocean_py_and_ocean_js(local_stack):
    base = local_stack["providerUrl"]
    method, path = requests.get(base + "/", timeout=10).json()["serviceEndpoints"]["encrypt"]
    payload = json.dumps({"files": [{"type": "url", "url": "https://example.com/x"}]}, separators=(",", ":")).encode()
    for headers in ({"Content-type": "application/octet-stream"}, {"Content-Type": "application/octet-stream"}):
        response = requests.request(method, base + path, params={"chainId": 8996}, data=payload, headers=headers,
                                    timeout=10)
        assert response.status_code == 201, response.text
        assert response.headers["Content-Type"].startswith("text/plain")
        ciphertext = response.content.decode("utf-8")
        assert eciespy.decrypt(DEV_PROVIDER_KEY[2:], bytes.fromhex(ciphertext.removeprefix("0x"))) == payload
    binary = bytes(range(256)) * 4
    response = requests.post(base + path, data=binary, headers={"Content-Type": "application/octet-stream"}, timeout=10)
    assert eciespy.decrypt(DEV_PROVIDER_KEY[2:], bytes.fromhex(response.text[2:])) == binary
