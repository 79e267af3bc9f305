"""`make demo`: a consumer runs the sample algorithm on the sample dataset against the local
stack (`make run` in another terminal), the way ocean.py and ocean.js do it:
computeEnvironments → initializeCompute → startOrder on chain (dataset and algorithm) →
POST compute → status until finished → computeResult, then prints the algorithm's output.

Then the same job paid the Ocean Node way, at `/node` (what ocean.js 8 does): initializeCompute
with `payment` → the consumer approves OCEAN to the Escrow, deposits and authorizes the provider
→ orders → computeStart (the provider locks in escrow before dispatching) → status 70 → the
provider claims what the job ran; prints the lock, the claim and the consumer's escrow funds
before and after.

Last, the data owner in control (`run_release`): a job on the dataset whose results its publisher
releases ends awaiting release; the publisher reads its audit log, reviews the output and
releases it; the consumer downloads it and verifies the job's signed receipt."""
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

TERMINAL = {7, 8, 31, 32, 41, 62, 70, 75, 76}  # 75/76: awaiting its data owner's release, refused (issue 22)


class Consumer:
    """A consumer with one key, signing as ocean.py does (EIP-191 over keccak(message))."""

    def __init__(self, stack: dict[str, Any], key: str | None = None):
        self.stack = stack
        self.url = stack["providerUrl"]
        self.key = key or stack["consumerPrivateKey"]
        self.account = Account.from_key(self.key)
        self.address = self.account.address

    def sign(self, message: str) -> str:
        return Account.sign_message(encode_defunct(primitive=keccak(text=message)), self.account.key).signature.to_0x_hex()

    def next_nonce(self) -> int:
        answer = requests.get(f"{self.url}/api/services/nonce", params={"userAddress": self.address}, timeout=30)
        return int(answer.json()["nonce"]) + 1

    def signed(self, *fields: str, **params: Any) -> dict[str, Any]:
        """A v4 signed call's parameters: `fields` (in the route's order), then a fresh nonce."""
        nonce = str(self.next_nonce())
        return {**params, "consumerAddress": self.address, "nonce": nonce,
                "signature": self.sign(self.address + "".join(fields) + nonce)}

    def call(self, method: str, path: str, expect: int | None = None, **kwargs: Any) -> requests.Response:
        """The request; SystemExit on an error answer, or on anything but `expect` when given."""
        response = requests.request(method, self.url + path, timeout=60, **kwargs)
        if (response.status_code != expect) if expect is not None else response.status_code >= 400:
            raise SystemExit(f"{method} {path} -> {response.status_code}: {response.text}")
        return response


def run(stack: dict[str, Any], poll_seconds: float = 1.0, timeout: float = 300) -> dict[str, Any]:
    consumer = Consumer(stack)
    dataset, chain_id = stack["dataset"], str(stack["chainId"])
    environment = _environment(consumer, chain_id)
    step(f"environment {environment['id']}: {environment['nCPU']} CPU, {environment['ramGB']} GB, "
         f"{environment['priceMin']} OCEAN/min, {environment['currentJobs']}/{environment['maxJobs']} jobs running")

    job_id = start_v4(consumer, stack, dataset, environment["id"])

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


def _environment(consumer: "Consumer", chain_id: str) -> dict[str, Any]:
    return consumer.call("GET", "/api/services/computeEnvironments", params={"chainId": chain_id}).json()[chain_id][0]


def run_release(stack: dict[str, Any], poll_seconds: float = 1.0, timeout: float = 300,
                folder: Path | None = None) -> dict[str, Any]:
    """The data owner in control (README "What the data owner sees and controls"): a job on the
    dataset that requires its publisher's release ends awaiting it; the publisher reads the
    audit log, downloads the output to review it, and releases it; then the consumer downloads
    it and checks the job's signed receipt and the output with `python -m chalicelib.receipts
    verify`, as anyone can without the provider."""
    consumer, publisher = Consumer(stack), Consumer(stack, stack["publisherPrivateKey"])
    dataset, chain_id = stack["heldDataset"], str(stack["chainId"])
    step(f"\n[the data owner in control] dataset {dataset['did'][:20]}… requires its publisher's release")
    job_id = start_v4(consumer, stack, dataset, _environment(consumer, chain_id)["id"])
    status = wait(consumer, job_id, poll_seconds, timeout)
    if status["status"] != 75:
        raise SystemExit(f"job ended with {status['status']} {status['statusText']}, not awaiting release")
    held = consumer.call("GET", "/api/services/computeResult", allow_redirects=False, expect=400,
                         params=consumer.signed(job_id, "0", jobId=job_id, index="0")).json()
    step(f"the consumer's computeResult: {held['error']} (until {status['release']['expiresAt']})")

    log = publisher.call("GET", "/api/services/computeAudit", params=publisher.signed(
        dataset["did"], documentId=dataset["did"])).json()
    entry = next(item for item in log if item["jobId"] == job_id)
    step(f"publisher's audit log: {len(log)} job(s); this one by {entry['consumer']}, algorithm "
         f"{entry['algorithm']['did'][:20]}…, status {entry['status']}, {entry['outputs']['count']} output(s) "
         f"of {entry['outputs']['bytes']} bytes")
    output = next(item for item in status["results"] if item["type"] == "output")
    index = str(output["index"])
    review = publisher.call("GET", "/api/services/computeAuditResult", allow_redirects=False, params=publisher.signed(
        dataset["did"], job_id, index, documentId=dataset["did"], jobId=job_id, index=index))
    reviewed = requests.get(review.headers["Location"], timeout=60).content
    step(f"publisher reviewed {output['filename']} ({len(reviewed)} bytes) and releases it")
    decided = publisher.call("POST", "/api/services/computeRelease", json=publisher.signed(
        dataset["did"], job_id, "release", documentId=dataset["did"], jobId=job_id, decision="release")).json()[0]
    step(f"  status {decided['status']}: {decided['statusText']} (release {decided['release']['state']})")

    redirect = consumer.call("GET", "/api/services/computeResult", allow_redirects=False,
                             params=consumer.signed(job_id, index, jobId=job_id, index=index))
    content = requests.get(redirect.headers["Location"], timeout=60).content
    receipt = consumer.call("GET", "/api/services/computeReceipt", params=consumer.signed(job_id, jobId=job_id)).json()
    folder = folder or STATE_DIR / "receipts" / job_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "receipt.json").write_text(json.dumps(receipt, indent=2))
    download = folder / Path(output["filename"]).name
    download.write_bytes(content)
    from chalicelib.receipts.__main__ import verify

    problems = verify(receipt, [download], stack["providerAddress"])
    step(f"the consumer downloaded {download.name} ({len(content)} bytes); "
         f"python -m chalicelib.receipts verify {folder / 'receipt.json'} {download} --provider {stack['providerAddress']}: "
         + ("OK" if not problems else "; ".join(problems)))
    if problems:
        raise SystemExit("the receipt does not verify")
    return {"jobId": job_id, "held": status, "decided": decided, "output": content, "reviewed": reviewed,
            "receipt": receipt, "folder": folder}


def start_v4(consumer: "Consumer", stack: dict[str, Any], dataset: dict[str, Any], environment: str) -> str:
    """initializeCompute, both orders on chain, the signed start: the new job's id."""
    algorithm, chain_id = stack["algorithm"], int(stack["chainId"])
    valid_until = int(time.time()) + 15 * 60
    quote = consumer.call("POST", "/api/services/initializeCompute", json={
        "datasets": [{"documentId": dataset["did"], "serviceId": dataset["serviceId"]}],
        "algorithm": {"documentId": algorithm["did"], "serviceId": algorithm["serviceId"]},
        "compute": {"env": environment, "validUntil": valid_until},
        "consumerAddress": consumer.address, "chainId": chain_id,
    }).json()
    fee = quote["datasets"][0]["providerFee"]
    step(f"provider fee: {int(fee['providerFeeAmount']) / 1e18:.2f} OCEAN, valid until {fee['validUntil']}")

    w3 = Web3(Web3.HTTPProvider(stack["rpcUrl"]))
    key = consumer.key
    dataset_tx = start_order(w3, key, dataset["datatoken"], dataset["serviceIndex"], fee)
    algorithm_tx = start_order(w3, key, algorithm["datatoken"], algorithm["serviceIndex"], quote["algorithm"]["providerFee"])
    step(f"ordered on chain: dataset {dataset_tx[:18]}…, algorithm {algorithm_tx[:18]}…")

    nonce = consumer.next_nonce()
    job = consumer.call("POST", "/api/services/compute", json={
        "consumerAddress": consumer.address, "nonce": nonce, "environment": environment,
        "signature": consumer.sign(consumer.address + dataset["did"] + str(nonce)),
        "dataset": {"documentId": dataset["did"], "serviceId": dataset["serviceId"], "transferTxId": dataset_tx},
        "algorithm": {"documentId": algorithm["did"], "serviceId": algorithm["serviceId"], "transferTxId": algorithm_tx,
                      "algocustomdata": {"requestedBy": "make demo"}},
    }).json()[0]
    step(f"job {job['jobId']} started")
    return job["jobId"]


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
    run_release(stack)


if __name__ == "__main__":
    main()
