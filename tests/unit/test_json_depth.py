"""JSON nested beyond MAX_JSON_DEPTH is a 400 before any parser recurses, whatever the process
state: importing web3 makes py_ecc raise the recursion limit to 100,000, after which a
100,000-deep body overflowed the C stack (a segfault, not a RecursionError)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chalicelib.http import MAX_JSON_DEPTH, within_depth

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("text, ok", [
    (b'{"a": [1, {"b": "[[[[[[[["}]}', True),
    (b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, True),
    (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), False),
    (b'[{' * 32 + b'}]' * 32, True),
    (b'[{' * 33 + b'}]' * 33, False),
    (b'[' + b'[[],{}],' * 20000 + b'[]]', True),  # wide, not deep
    (json.dumps({"s": "[" * 100_000}).encode(), True),  # brackets inside strings do not count
    (b'{"s": "\\"' + b"[" * 100 + b'"}', True),  # nor after an escaped quote
    (b'"unterminated ' + b"[" * 100, False),
    ("[" * 100 + "é" + "]" * 100, False),
])
def test_depth_is_found_without_parsing(text, ok):
    assert within_depth(text) is ok


PROBE = r"""
import json, sys
from moto import mock_aws

with mock_aws():
    from chalice.test import Client

    import app
    from chalicelib import services
    from chalicelib.bootstrap import bootstrap

    services.reset()
    bootstrap(services.settings(), with_bucket=True)
    from chalicelib.models import AssetRecord

    # a registered asset whose cache is stale: resolving it reads its NFT on chain
    AssetRecord("did:op:" + "ab" * 32, chain_id=8996, nft_address="0x" + "34" * 20, ddo={}, updated_at=0).save()
    with Client(app.app, stage_name="local") as client:
        # a chain route first: it reaches for the chain (there is none listening), importing web3
        client.http.post("/api/services/initializeCompute", headers={"Content-Type": "application/json"}, body=json.dumps({
            "datasets": [{"documentId": "did:op:" + "ab" * 32, "serviceId": "0"}],
            "algorithm": {"documentId": "did:op:" + "cd" * 32, "serviceId": "0"},
            "compute": {"env": "ocean-c2d-cpu", "validUntil": 2000000000},
            "consumerAddress": "0x" + "12" * 20}))
        state = {"web3": "web3" in sys.modules, "py_ecc": "py_ecc" in sys.modules, "limit": sys.getrecursionlimit()}
        deep = "[" * 100_000 + "]" * 100_000
        answers = {}
        for method, path in (("POST", "/api/services/compute"), ("POST", "/api/services/initializeCompute"),
                             ("PUT", "/api/services/compute"), ("GET", "/api/services/nonce")):
            response = client.http.request(method, path, body=deep, headers={"Content-Type": "application/json"})
            answers[f"{method} {path}"] = [response.status_code, json.loads(response.body)]
        # JSON text inside a JSON string (userdata as ocean.py sends it) is checked the same way
        inner = json.dumps({"consumerAddress": "0x" + "12" * 20,
                            "datasets": [{"documentId": "did:op:" + "ab" * 32, "serviceId": "0",
                                          "userdata": "[" * 8000 + "]" * 8000}],
                            "algorithm": {"documentId": "did:op:" + "cd" * 32, "serviceId": "0"},
                            "compute": {"env": "ocean-c2d-cpu", "validUntil": 2000000000}})
        response = client.http.post("/api/services/initializeCompute", body=inner, headers={"Content-Type": "application/json"})
        answers["userdata"] = [response.status_code, json.loads(response.body)]
print(json.dumps({"state": state, "answers": answers}))
"""


def test_a_100000_deep_body_after_a_chain_route_is_a_400_and_the_process_lives():
    """In a subprocess, so a segfault fails this test instead of killing pytest."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=180, env=env, cwd=ROOT)
    assert done.returncode == 0, f"exit {done.returncode} (negative: killed by a signal)\n{done.stderr[-2000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["state"]["web3"] and result["state"]["py_ecc"] and result["state"]["limit"] >= 100_000
    for path, (status, body) in result["answers"].items():
        assert status == 400, (path, status, body)
    assert "nested deeper than" in json.dumps(result["answers"]["POST /api/services/compute"][1])
    assert "userdata" in json.dumps(result["answers"]["userdata"][1])
