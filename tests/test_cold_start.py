"""Routes that do not touch the chain must not pay for web3 or eth_account on a cold start."""
from __future__ import annotations

from bench.cold_start import PROBE

import json
import subprocess
import sys


def test_import_app_leaves_chain_libraries_out():
    output = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    assert json.loads(output.strip().splitlines()[-1])["chain_modules"] == []


def test_openapi_document_covers_every_route(client):
    import app as app_module

    spec = json.loads(client.http.get("/spec").body)
    assert spec["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, item in spec["paths"].items() for method in item}
    registered = {(op.path, op.method) for op in app_module.api.operations}
    assert documented == registered
    nonce_params = {p["name"]: p for p in spec["paths"]["/api/services/nonce"]["get"]["parameters"]}
    assert nonce_params["userAddress"]["required"] and "pattern" in nonce_params["userAddress"]["schema"]
