"""Load on the local stack (`make run`'s API: Chalice's local server, DynamoDB on the moto server):
requests/s and p50/p99 latency of GET /, the nonce, signed status and signed stop, at 1 and 8
concurrent clients. Loopback only.

    python -m bench.load                      # starts its own stack on free ports, then stops it
    python -m bench.load --stack .local/stack.json   # drives a running `make run`
    python -m bench --load                    # the same (`make bench` runs only the quick ones)

Each client is a thread with its own key (so its nonces are its own) and a keep-alive session;
signed requests are signed before the clock starts, so the numbers are the server's, not the
signing client's. Signed stop targets a finished job of the client's own (seeded in the jobs
table), so it authenticates, consumes the nonce, reads the job and answers its status object.
The local server is one Python process: these numbers are a regression baseline for the local
stack, not a forecast for Lambda, where each request gets its own container.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import requests

ROUTES = ("root", "nonce", "signed status", "signed stop")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class Result:
    route: str
    clients: int
    requests: int
    seconds: float
    latencies: list[float]
    errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] * 1000

    def line(self) -> str:
        return (f"{self.route:14s} clients={self.clients}  {self.rate:7.1f} req/s  p50 {self.percentile(0.5):6.1f} ms"
                f"  p99 {self.percentile(0.99):6.1f} ms  ({self.requests} requests, {self.errors} errors)")


class Client:
    """One simulated consumer: a key, a session, and its signed requests prepared in advance."""

    def __init__(self, base: str):
        from eth_account import Account

        self.base = base
        self.account = Account.create()
        self.address = self.account.address
        self.job_id = uuid.uuid4().hex
        self.session = requests.Session()

    def sign(self, message: str) -> str:
        """What ocean.py sends: personal_sign over keccak(message)."""
        from eth_account import Account
        from eth_account.messages import encode_defunct
        from eth_utils import keccak

        return Account.sign_message(encode_defunct(primitive=keccak(text=message)), self.account.key).signature.to_0x_hex()

    def prepare(self, route: str, count: int) -> list[Callable[[], requests.Response]]:
        base, session = self.base, self.session
        if route == "root":
            return [lambda: session.get(base + "/", timeout=30)] * count
        if route == "nonce":
            params = {"userAddress": self.address}
            return [lambda: session.get(base + "/api/services/nonce", params=params, timeout=30)] * count
        first = time.time_ns()
        calls = []
        for offset in range(count):
            nonce = first + offset
            if route == "signed status":
                params = {"consumerAddress": self.address, "nonce": nonce, "signature": self.sign(self.address + str(nonce))}
                calls.append(lambda p=params: session.get(base + "/api/services/compute", params=p, timeout=30))
            else:
                params = {"consumerAddress": self.address, "jobId": self.job_id, "nonce": nonce,
                          "signature": self.sign(self.address + self.job_id + str(nonce))}
                calls.append(lambda p=params: session.put(base + "/api/services/compute", params=p, timeout=30))
        return calls


def drive(clients: list[Client], route: str, per_client: int) -> Result:
    plans = [client.prepare(route, per_client) for client in clients]
    for client in clients:  # open the keep-alive connections before the clock starts
        client.session.get(client.base + "/", timeout=30)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(len(clients) + 1)

    def run(plan: list[Callable[[], requests.Response]]) -> None:
        mine, failed = [], 0
        barrier.wait()
        for call in plan:
            began = time.perf_counter()
            response = call()
            mine.append(time.perf_counter() - began)
            failed += response.status_code != 200
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    threads = [threading.Thread(target=run, args=(plan,)) for plan in plans]
    for thread in threads:
        thread.start()
    barrier.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return Result(route, len(clients), len(latencies), time.perf_counter() - began, latencies, errors[0])


def seed_finished_jobs(stack: dict[str, Any], clients: list[Client]) -> None:
    """A finished job per client, written straight to the stack's jobs table."""
    import boto3

    from chalicelib.config import load_settings
    from chalicelib.models import JobRecord

    settings = load_settings({"RESOURCE_PREFIX": "local", "RESULTS_BUCKET": "local-c2d-results",
                              "CHAINS": json.dumps({str(stack.get("chainId", 8996)): stack.get("rpcUrl", "http://127.0.0.1:8545")})})
    dynamodb = boto3.client("dynamodb", endpoint_url=stack["awsEndpoint"], region_name="us-east-1",
                            aws_access_key_id="local", aws_secret_access_key="local")
    now = int(time.time())
    for client in clients:
        record = JobRecord(client.job_id, owner=client.address, document_id="did:op:" + "0" * 64, date_created=now,
                           date_finished=now, status=70, status_text="Job completed", environment="ocean-c2d-cpu",
                           chain_id=int(stack.get("chainId", 8996)), updated_at=now)
        dynamodb.put_item(TableName=settings.jobs_table, Item=record.serialize())


def local_stack():
    """`python -m devstack` on free loopback ports, stopped afterwards."""
    from devstack.processes import background_stack

    return background_stack(Path(tempfile.mkdtemp(prefix="bench-stack-")))


def measure(stack: dict[str, Any], levels: list[int], per_client: int, single: int) -> list[Result]:
    base = stack["providerUrl"]
    if urlsplit(base).hostname not in LOOPBACK:
        raise SystemExit(f"refusing to load {base}: loopback addresses only")
    clients = [Client(base) for _ in range(max(levels))]
    seed_finished_jobs(stack, clients)
    results = []
    for route in ROUTES:
        for level in levels:
            results.append(drive(clients[:level], route, single if level == 1 else per_client))
            print(results[-1].line(), flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Load on the local stack (loopback only).")
    parser.add_argument("--stack", help="stack.json of a running `make run` (default: start one)")
    parser.add_argument("--clients", default="1,8", help="concurrency levels, e.g. 1,8")
    parser.add_argument("--requests", type=int, default=60, help="requests per client at the higher levels")
    parser.add_argument("--single", type=int, default=200, help="requests of the lone client")
    args = parser.parse_args(argv)
    levels = [int(level) for level in args.clients.split(",")]
    if args.stack:
        results = measure(json.loads(Path(args.stack).read_text()), levels, args.requests, args.single)
    else:
        with local_stack() as stack:
            results = measure(stack, levels, args.requests, args.single)
    failed = sum(result.errors for result in results)
    print(f"{sum(r.requests for r in results)} requests, {failed} not 200")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
