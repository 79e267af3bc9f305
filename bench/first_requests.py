"""The first requests of a fresh API process, as a cold Lambda serves them: `import app`, then a
signed stop of a finished job (nonce, job read; no S3 or Batch call is needed), then a signed
POST /compute (resolve, decrypt, verify the orders on chain, reserve, manifest, SubmitJob).

The parent starts moto's server and anvil, publishes the samples, orders, and writes the job; the
probe is a new interpreter that reaches them over HTTP (AWS_ENDPOINT_URL), as the Lambda would
reach AWS. Batch is botocore's Stubber on the probe's own client (moto drops multi-container job
definitions), activated after the stop so the stop pays for whatever clients it builds."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
JOB_ID = "f" * 32
STOP_BUDGET_MS = 80

PROBE = r"""
import json, sys, time
started = time.perf_counter()
import app
imported = time.perf_counter()
from chalice.test import Client
arguments = json.loads(sys.argv[1])
client = Client(app.app, stage_name="local")
t = time.perf_counter()
stop = client.http.put("/api/services/compute?" + arguments["stop"])
stop_ms = (time.perf_counter() - t) * 1000
assert stop.status_code == 200, stop.body
chain_after_stop = sorted(m for m in ("web3", "eth_account") if m in sys.modules)
from chalicelib import aws
from bench.consumer import StubbedBatch
StubbedBatch(aws.client("batch")).expect(first=True)
t = time.perf_counter()
start = client.http.post("/api/services/compute", body=json.dumps(arguments["start"]), headers={"Content-Type": "application/json"})
start_ms = (time.perf_counter() - t) * 1000
assert start.status_code == 200, start.body
print(json.dumps({"import_ms": (imported - started) * 1000, "stop_ms": stop_ms, "start_ms": start_ms,
                  "chain_after_stop": chain_after_stop}))
"""


def _finished_job(owner: str) -> None:
    from chalicelib.models import JobRecord

    now = int(time.time())
    JobRecord(JOB_ID, owner=owner, document_id="did:op:" + "ab" * 32, date_created=now - 120, date_finished=now - 60,
              status=70, status_text="Job completed", environment="ocean-c2d-cpu", chain_id=8996,
              results=[{"filename": "out.txt", "filesize": 1, "type": "output", "key": f"jobs/{JOB_ID}/outputs/out.txt"}],
              ).save()


def _signed_stop(chain: Any) -> str:
    from eth_account import Account
    from eth_account.messages import encode_defunct
    from eth_utils import keccak

    consumer = chain.consumer
    nonce = time.time_ns()
    signature = Account.sign_message(encode_defunct(primitive=keccak(text=consumer.address + JOB_ID + str(nonce))),
                                     consumer.key).signature.to_0x_hex()
    return f"consumerAddress={consumer.address}&jobId={JOB_ID}&nonce={nonce}&signature={signature}"


def measure() -> dict[str, Any]:
    from devstack.devchain import start_devchain
    from devstack.processes import ProcessGroup, free_port, wait_for_http
    from devstack.stack import DEV_PROVIDER_KEY, local_environments

    group = ProcessGroup()
    port = free_port()
    group.start("moto", [sys.executable, "-m", "devstack.moto_server", "-H", "127.0.0.1", "-p", str(port)])
    chain = start_devchain(provider_key=DEV_PROVIDER_KEY)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", group=group)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
        env.update({
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "RESULTS_BUCKET": "bench-first",
            "RESOURCE_PREFIX": "bench-first", "CHAINS": json.dumps({str(chain.chain_id): chain.rpc_url}),
            "PROVIDER_PRIVATE_KEY": DEV_PROVIDER_KEY, "JWT_SECRET": "bench-jwt-secret-of-sufficient-length-000",
            "ALLOW_PRIVATE_NETWORKS": "1", "COMPUTE_ENVIRONMENTS": local_environments(chain), "PYTHONPATH": str(ROOT),
        })
        os.environ.update(env)
        arguments = _prepare(chain)
        with tempfile.TemporaryDirectory() as folder:
            done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(arguments)], capture_output=True, text=True,
                                  env=env, cwd=folder, timeout=120)
        if done.returncode != 0:
            raise AssertionError(done.stderr[-3000:])
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        chain.stop()
        group.stop()


def _prepare(chain: Any) -> dict[str, Any]:
    from chalice.test import Client

    import app as app_module
    from bench.aws_calls import _static_server
    from bench.consumer import order_and_start_body
    from chalicelib import services
    from chalicelib.bootstrap import bootstrap
    from devstack.publish import ecies_encrypt_for
    from devstack.samples import SAMPLE_DIR, publish_samples

    services.reset()
    bootstrap(services.settings(), with_bucket=True)
    server, files_url = _static_server(str(SAMPLE_DIR))
    samples = publish_samples(chain, ecies_encrypt_for(chain.provider_public_key), services.settings().provider_url, files_url)
    for asset in (samples.dataset, samples.algorithm):
        services.asset_resolver().register(chain.chain_id, asset.nftAddress)
    _finished_job(chain.consumer.address)
    with Client(app_module.app, stage_name="local") as client:
        start = order_and_start_body(client, chain, samples)
    # the probe signs after the parent did: its nonces must be greater than the quote's
    stop = _signed_stop(chain)
    start["nonce"] = time.time_ns()
    from eth_account import Account
    from eth_account.messages import encode_defunct
    from eth_utils import keccak

    message = chain.consumer.address + start["dataset"]["documentId"] + str(start["nonce"])
    start["signature"] = Account.sign_message(encode_defunct(primitive=keccak(text=message)),
                                              chain.consumer.key).signature.to_0x_hex()
    arguments = {"stop": stop, "start": start, "files_server": files_url}
    _keep_alive.append(server)
    return arguments


_keep_alive: list[Any] = []


def run() -> tuple[str, float, str, float]:
    from bench.baseline import today

    result = measure()
    before = today("first_requests")
    print(f"  fresh process: import app {result['import_ms']:.0f} ms (today {before['import_ms']}), first signed stop "
          f"{result['stop_ms']:.0f} ms (today {before['stop_ms']}), first POST /compute {result['start_ms']:.0f} ms "
          f"(today {before['start_ms']})")
    if result["chain_after_stop"]:
        raise AssertionError(f"a stop imported {result['chain_after_stop']}")
    return ("first signed stop of a fresh process", result["stop_ms"], "ms", STOP_BUDGET_MS)


if __name__ == "__main__":
    print(run())
