"""`make demo`: a consumer runs the sample algorithm on the sample dataset against the local
stack (`make run` in another terminal), the way ocean.py and ocean.js do it:
computeEnvironments → initializeCompute → startOrder on chain (dataset and algorithm) →
POST compute → status until finished → computeResult, then prints the algorithm's output.

Then the same job paid the Ocean Node way, at `/node` (what ocean.js 8 does): initializeCompute
with `payment` → the consumer approves OCEAN to the Escrow, deposits and authorizes the provider
→ orders → computeStart (the provider locks in escrow before dispatching) → status 70 → the
provider claims what the job ran; prints the lock, the claim and the consumer's escrow funds
before and after."""
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

from devstack.contracts import contract, send
from devstack.orders import start_order
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


def run_paid(stack: dict[str, Any], poll_seconds: float = 0.5, timeout: float = 300,
             max_job_duration: int = 300) -> dict[str, Any]:
    """The paid `/node` run: escrow lock before dispatch, claim at the end (module docstring)."""
    consumer = Consumer(stack)
    dataset, algorithm = stack["dataset"], stack["algorithm"]
    chain_id, ocean = int(stack["chainId"]), stack["contracts"]["OceanToken"]
    environments = consumer.call("GET", "/node/api/services/computeEnvironments").json()
    environment = next(env for env in environments if any(
        fee["feeToken"].lower() == ocean.lower() and any(p["price"] for p in fee["prices"])
        for fee in env["fees"].get(str(chain_id), [])) and not any(r["id"] == "gpu" for r in env["resources"]))
    gas = environment.get("providerGasBalance", {}).get(str(chain_id))
    step(f"\n[/node, escrow] environment {environment['id']}: fees {json.dumps(environment['fees'][str(chain_id)][0]['prices'])}"
         f" per minute; provider gas {int(gas) / 1e18 if gas else '?'} ETH")
    inputs = [{"documentId": dataset["did"], "serviceId": dataset["serviceId"]}]
    algo = {"documentId": algorithm["did"], "serviceId": algorithm["serviceId"]}
    quote = consumer.call("POST", "/node/api/services/initializeCompute", json={
        "datasets": inputs, "algorithm": algo, "environment": environment["id"], "consumerAddress": consumer.address,
        "maxJobDuration": max_job_duration, "payment": {"chainId": chain_id, "token": ocean}}).json()
    payment = quote["payment"]
    step(f"escrow payment: lock {int(payment['amount']) / 1e18:g} OCEAN for {payment['minLockSeconds']} s, "
         f"payee {payment['payee']}, Escrow {payment['escrowAddress']}")

    w3 = Web3(Web3.HTTPProvider(stack["rpcUrl"]))
    key = stack["consumerPrivateKey"]
    escrow = contract(w3, "Escrow", payment["escrowAddress"])
    amount = int(payment["amount"])
    send(w3, key, contract(w3, "OceanToken", ocean).functions.approve(escrow.address, amount))
    send(w3, key, escrow.functions.deposit(ocean, amount))
    send(w3, key, escrow.functions.authorize(ocean, payment["payee"], amount, payment["minLockSeconds"], 10))
    before = escrow.functions.getUserFunds(consumer.address, ocean).call()
    step(f"escrow funds before: {before[0] / 1e18:g} OCEAN available, {before[1] / 1e18:g} locked")
    dataset_tx = start_order(w3, key, dataset["datatoken"], dataset["serviceIndex"], quote["datasets"][0]["providerFee"])
    algorithm_tx = start_order(w3, key, algorithm["datatoken"], algorithm["serviceIndex"], quote["algorithm"]["providerFee"])

    nonce = str(consumer.next_nonce())
    began = time.monotonic()
    job = consumer.call("POST", "/node/api/services/compute", json={
        "consumerAddress": consumer.address, "nonce": nonce, "environment": environment["id"],
        "signature": consumer.sign(consumer.address + nonce + "startCompute"),
        "datasets": [{**inputs[0], "transferTxId": dataset_tx}], "algorithm": {**algo, "transferTxId": algorithm_tx},
        "maxJobDuration": max_job_duration, "chainId": chain_id,
        "payment": {"chainId": chain_id, "token": ocean, "maxJobDuration": max_job_duration}}).json()[0]
    step(f"job {job['jobId']} started in {time.monotonic() - began:.2f} s (its lock mined before dispatch)")
    token = _node_token(consumer)
    status = _wait_paid(consumer, token, job["jobId"], poll_seconds, timeout)
    view = status["payment"]
    after = escrow.functions.getUserFunds(consumer.address, ocean).call()
    step(f"lock  {view['lock']['hash']} ({int(view['amount']) / 1e18:g} OCEAN, nonce {view['lock']['nonce']})")
    step(f"claim {view['claim']['hash'] if view['claim'] else None} ({int(view['claimed'] or 0) / 1e18:g} OCEAN "
         f"for {view['billedSeconds']} s billed)")
    step(f"escrow funds after:  {after[0] / 1e18:g} OCEAN available, {after[1] / 1e18:g} locked "
         f"(before - claim = {(before[0] - int(view['claimed'] or 0)) / 1e18:g})")
    return {"jobId": job["jobId"], "status": status, "payment": view, "before": before, "after": after}


def _node_token(consumer: Consumer) -> str:
    """An Ocean Node auth token: the status call with it shows the job's escrow payment."""
    nonce = str(consumer.next_nonce())
    return consumer.call("POST", "/node/api/services/auth/token", json={
        "address": consumer.address, "nonce": nonce,
        "signature": consumer.sign(consumer.address + nonce + "createAuthToken")}).json()["token"]


def _wait_paid(consumer: Consumer, token: str, job_id: str, poll_seconds: float, timeout: float) -> dict[str, Any]:
    """Poll the `/node` status until the job ended and its payment is settled."""
    deadline, seen = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        status = consumer.call("GET", "/node/api/services/compute", headers={"Authorization": token},
                               params={"consumerAddress": consumer.address, "jobId": job_id}).json()[0]
        if status["status"] != seen:
            seen = status["status"]
            step(f"  status {seen}: {status['statusText']}")
        payment = status.get("payment") or {}
        if seen in TERMINAL and payment.get("status") in ("claimed", "cancelled", "settle_failed", "lock_failed"):
            if seen != 70:
                raise SystemExit(f"paid job ended with {seen}: {status.get('terminationDetails')}")
            return status
        time.sleep(poll_seconds)
    raise SystemExit(f"paid job {job_id} was not settled within {timeout:.0f} s")


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
    stack = json.loads(args.stack.read_text())
    run(stack)
    run_paid(stack)


if __name__ == "__main__":
    main()
