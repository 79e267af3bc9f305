"""`make demo`: a consumer runs the sample algorithm on the sample dataset against the local
stack (`make run` in another terminal), the way ocean.py and ocean.js do it:
computeEnvironments → initializeCompute → startOrder on chain (dataset and algorithm) →
POST compute → status until finished → computeResult, then prints the algorithm's output."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import requests
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak
from web3 import Web3

from devstack.publish import start_order
from devstack.stack import STATE_DIR

TERMINAL = {7, 8, 31, 32, 41, 62, 70}


class Consumer:
    """A consumer with one key, signing as ocean.py does (EIP-191 over keccak(message))."""

    def __init__(self, stack: dict[str, Any]):
        self.stack = stack
        self.url = stack["providerUrl"]
        self.account = Account.from_key(stack["consumerPrivateKey"])
        self.address = self.account.address

    def sign(self, message: str) -> str:
        return Account.sign_message(encode_defunct(primitive=keccak(text=message)), self.account.key).signature.to_0x_hex()

    def next_nonce(self) -> int:
        answer = requests.get(f"{self.url}/api/services/nonce", params={"userAddress": self.address}, timeout=30)
        return int(answer.json()["nonce"]) + 1

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = requests.request(method, self.url + path, timeout=60, **kwargs)
        if response.status_code >= 400:
            raise SystemExit(f"{method} {path} -> {response.status_code}: {response.text}")
        return response


def run(stack: dict[str, Any], poll_seconds: float = 1.0, timeout: float = 300) -> dict[str, Any]:
    consumer = Consumer(stack)
    dataset, algorithm = stack["dataset"], stack["algorithm"]
    chain_id = str(stack["chainId"])

    environments = consumer.call("GET", "/api/services/computeEnvironments", params={"chainId": chain_id}).json()[chain_id]
    environment = environments[0]
    step(f"environment {environment['id']}: {environment['nCPU']} CPU, {environment['ramGB']} GB, "
         f"{environment['priceMin']} OCEAN/min, {environment['currentJobs']}/{environment['maxJobs']} jobs running")

    valid_until = int(time.time()) + 15 * 60
    quote = consumer.call("POST", "/api/services/initializeCompute", json={
        "datasets": [{"documentId": dataset["did"], "serviceId": dataset["serviceId"]}],
        "algorithm": {"documentId": algorithm["did"], "serviceId": algorithm["serviceId"]},
        "compute": {"env": environment["id"], "validUntil": valid_until},
        "consumerAddress": consumer.address, "chainId": int(chain_id),
    }).json()
    fee = quote["datasets"][0]["providerFee"]
    step(f"provider fee: {int(fee['providerFeeAmount']) / 1e18:.2f} OCEAN, valid until {fee['validUntil']}")

    w3 = Web3(Web3.HTTPProvider(stack["rpcUrl"]))
    key = stack["consumerPrivateKey"]
    dataset_tx = start_order(w3, key, dataset["datatoken"], dataset["serviceIndex"], fee)
    algorithm_tx = start_order(w3, key, algorithm["datatoken"], algorithm["serviceIndex"], quote["algorithm"]["providerFee"])
    step(f"ordered on chain: dataset {dataset_tx[:18]}…, algorithm {algorithm_tx[:18]}…")

    nonce = consumer.next_nonce()
    job = consumer.call("POST", "/api/services/compute", json={
        "consumerAddress": consumer.address, "nonce": nonce, "environment": environment["id"],
        "signature": consumer.sign(consumer.address + dataset["did"] + str(nonce)),
        "dataset": {"documentId": dataset["did"], "serviceId": dataset["serviceId"], "transferTxId": dataset_tx},
        "algorithm": {"documentId": algorithm["did"], "serviceId": algorithm["serviceId"], "transferTxId": algorithm_tx,
                      "algocustomdata": {"requestedBy": "make demo"}},
    }).json()[0]
    job_id = job["jobId"]
    step(f"job {job_id} started")

    status = wait(consumer, job_id, poll_seconds, timeout)
    if status["status"] != 70:
        raise SystemExit(f"job ended with {status['status']} {status['statusText']}: {status.get('terminationDetails')}")
    outputs = [r for r in status["results"] if r["type"] == "output"]
    step("results: " + ", ".join(f"{r['filename']} ({r['filesize']} bytes)" for r in status["results"]))
    nonce = consumer.next_nonce()
    index = str(outputs[0]["index"])
    redirect = consumer.call("GET", "/api/services/computeResult", allow_redirects=False, params={
        "consumerAddress": consumer.address, "jobId": job_id, "index": index, "nonce": nonce,
        "signature": consumer.sign(consumer.address + job_id + index + str(nonce))})
    content = requests.get(redirect.headers["Location"], timeout=60).content
    print(f"\n--- {outputs[0]['filename']} ---\n{content.decode()}")
    return {"jobId": job_id, "status": status, "output": content}


def wait(consumer: Consumer, job_id: str, poll_seconds: float, timeout: float) -> dict[str, Any]:
    """Poll the signed status, printing each new stage, until the job ends."""
    deadline, seen = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        nonce = consumer.next_nonce()
        status = consumer.call("GET", "/api/services/compute", params={
            "consumerAddress": consumer.address, "jobId": job_id, "nonce": nonce,
            "signature": consumer.sign(consumer.address + job_id + str(nonce))}).json()[0]
        if status["status"] != seen:
            seen = status["status"]
            step(f"  status {seen}: {status['statusText']}")
        if seen in TERMINAL:
            return status
        time.sleep(poll_seconds)
    raise SystemExit(f"job {job_id} did not finish within {timeout:.0f} s")


def step(text: str) -> None:
    print(text, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stack", type=Path, default=STATE_DIR / "stack.json")
    args = parser.parse_args(argv)
    if not args.stack.exists():
        sys.exit(f"{args.stack} not found: start the local stack with `make run` first")
    run(json.loads(args.stack.read_text()))


if __name__ == "__main__":
    main()
