"""Job reads at scale (issue 12): a signed status of an owner with 10 jobs against one with 5,000,
and a documentId query among many other owners' jobs on the same dataset. In-process moto, the
real app through Chalice's test client, finished jobs that each have an output and a log."""
from __future__ import annotations

import json
import os
import statistics
import time
from typing import Any

SMALL, LARGE, OTHERS = 10, 5000, 1500
RUNS = 11
DATASET = "did:op:" + "ab" * 32
BUDGET_RATIO = 3.0


def _environment() -> None:
    for name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL")]:
        del os.environ[name]
    os.environ.update({
        "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1", "RESULTS_BUCKET": "bench-results", "RESOURCE_PREFIX": "bench",
        "CHAINS": '{"8996": "http://127.0.0.1:8545"}', "JWT_SECRET": "bench-jwt-secret-of-sufficient-length-000",
        "PROVIDER_PRIVATE_KEY": "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
    })


def _jobs(owner: str, count: int, document_id: str, start: int) -> list[Any]:
    from chalicelib.models import JobRecord

    records = []
    for number in range(count):
        job_id = f"{owner[2:10].lower()}{number:08d}"
        prefix = f"jobs/{job_id}/"
        # the by-owner-document key where the model has it (main's had none)
        extra = {"owner_document": f"{owner} {document_id}"} if hasattr(JobRecord, "owner_document") else {}
        records.append(JobRecord(
            job_id, owner=owner, document_id=document_id, date_created=start + number, date_finished=start + number + 60,
            status=70, status_text="Job completed", environment="ocean-c2d-cpu", chain_id=8996,
            input_dids=[document_id], algo_did="did:op:" + "cd" * 32, orders=[f"8996:0x{number:064x}"],
            results=[{"filename": "out.txt", "filesize": 12, "type": "output", "key": prefix + "outputs/out.txt"},
                     {"filename": "algorithm.log", "filesize": 40, "type": "algorithmLog", "key": prefix + "logs/algorithm.log"}],
            **extra))
    return records


def _save(records: list[Any]) -> None:
    from chalicelib.models import JobRecord

    with JobRecord.batch_write() as batch:
        for record in records:
            batch.save(record)


class EmulatorClock:
    """Time spent inside moto answering AWS calls: real DynamoDB answers a Query with Limit from
    the page it reads, while moto sorts the whole partition first (O(jobs of the owner)), so
    the provider's own time is the wall time less this."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def install(self) -> None:
        from moto.core.botocore_stubber import BotocoreStubber

        original, clock = BotocoreStubber.__call__, self

        def timed(stubber: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(stubber, *args, **kwargs)
            finally:
                clock.seconds += time.perf_counter() - started

        BotocoreStubber.__call__ = timed  # type: ignore[method-assign]


EMULATOR = EmulatorClock()


def timed_signed_get(client: Any, key: str, path: str, signed_text: str, query: str) -> tuple[float, float, int, int]:
    """One GET signed as `signed_text + nonce` (the address's key): wall seconds, seconds outside the
    emulated DynamoDB, the body's bytes and its items."""
    from eth_account import Account
    from eth_account.messages import encode_defunct
    from eth_utils import keccak

    nonce = time.time_ns()
    signature = Account.sign_message(encode_defunct(primitive=keccak(text=signed_text + str(nonce))),
                                     key).signature.to_0x_hex()
    emulated = EMULATOR.seconds
    started = time.perf_counter()
    response = client.http.get(f"{path}?{query}&nonce={nonce}&signature={signature}")
    seconds = time.perf_counter() - started
    assert response.status_code == 200, response.body[:300]
    return seconds, seconds - (EMULATOR.seconds - emulated), len(response.body), len(json.loads(response.body))


def _signed_status(client: Any, key: str, owner: str, document_id: str = "") -> tuple[float, float, int, int]:
    query = f"consumerAddress={owner}" + (f"&documentId={document_id}" if document_id else "")
    return timed_signed_get(client, key, "/api/services/compute", owner + document_id, query)


def _median(client: Any, key: str, owner: str, document_id: str = "") -> dict[str, Any]:
    samples = [_signed_status(client, key, owner, document_id) for _ in range(RUNS)]
    return {"ms": statistics.median(s[0] for s in samples) * 1000, "own_ms": statistics.median(s[1] for s in samples) * 1000,
            "bytes": samples[-1][2], "jobs": samples[-1][3]}


def measure() -> dict[str, Any]:
    _environment()
    from eth_account import Account
    from moto import mock_aws

    with mock_aws():
        EMULATOR.install()
        from chalice.test import Client

        import app as app_module
        from chalicelib import services
        from chalicelib.bootstrap import bootstrap

        services.reset()
        bootstrap(services.settings(), with_bucket=True)
        small, large, other = Account.create(), Account.create(), Account.create()
        now = int(time.time()) - LARGE - 3600
        _save(_jobs(small.address, SMALL, DATASET, now))
        _save(_jobs(large.address, LARGE, "did:op:" + "ef" * 32, now))
        _save(_jobs(other.address, OTHERS, DATASET, now))
        with Client(app_module.app, stage_name="local") as client:
            _signed_status(client, small.key, small.address)  # warm: clients built, modules imported
            result = {
                f"status, {SMALL} jobs": _median(client, small.key, small.address),
                f"status, {LARGE} jobs": _median(client, large.key, large.address),
                f"status by documentId, {SMALL} own among {OTHERS} others'": _median(
                    client, small.key, small.address, DATASET),
            }
        services.reset()
    return result


def run() -> tuple[str, float, str, float]:
    from bench.baseline import today

    result = measure()
    before = today("scale")
    for name, row in result.items():
        old = before.get(name)
        was = (f" (today {old['ms']:.1f} ms wall, {old.get('own_ms', float('nan')):.1f} ms outside moto, "
               f"{old['bytes'] / 1024:.0f} KiB, {old['jobs']} jobs)") if old else ""
        print(f"  {name}: {row['ms']:.1f} ms wall, {row['own_ms']:.1f} ms outside moto, {row['bytes'] / 1024:.0f} KiB, "
              f"{row['jobs']} jobs answered{was}")
    large, small = result[f"status, {LARGE} jobs"], result[f"status, {SMALL} jobs"]
    print(f"  wall-time ratio {large['ms'] / small['ms']:.1f}x (moto sorts the whole partition on every Query)")
    ratio = large["own_ms"] / small["own_ms"]
    return (f"signed status time outside moto, {LARGE} jobs / {SMALL} jobs", ratio, "x", BUDGET_RATIO)


if __name__ == "__main__":
    print(run())
