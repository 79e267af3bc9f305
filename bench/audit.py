"""The publisher's audit log at scale (issue 22): a dataset's log with 10 jobs against one with
5,000, each job finished with an output and a log, so every item carries a freshly signed
receipt. The budgeted row compares like with like: the 10-job log against a page of 10 jobs of
the 5,000-job log (its oldest, reached with a Next-Page cursor: the Query starts at the end of a
5,000-job partition); the first page of the large log (50 jobs, five times the items to sign) is
printed too, per job answered. In-process moto, the real app through Chalice's test client; the records
and their audit entries written as a start writes them. The NFT owner's check (one ownerOf call,
the same whatever the number of jobs) answers from memory here: the bench has no chain."""
from __future__ import annotations

import statistics
import time
from typing import Any

from bench.scale import EMULATOR, _environment, timed_signed_get

SMALL, LARGE = 10, 5000
RUNS = 11
BUDGET_RATIO = 3.0


def _jobs(publisher: str, consumer: str, did: str, count: int, start: int) -> list[Any]:
    from chalicelib.models import JobRecord

    records = []
    for number in range(count):
        job_id = f"{did[-8:]}{number:08d}"
        prefix = f"jobs/{job_id}/"
        records.append(JobRecord(
            job_id, owner=consumer, document_id=did, date_created=start + number, date_finished=start + number + 60,
            status=70, status_text="Job completed", environment="ocean-c2d-cpu", chain_id=8996, input_dids=[did],
            algo_did="did:op:" + "cd" * 32, orders=[f"8996:0x{number:064x}"],
            owner_document=f"{consumer} {did}",
            provenance={"inputs": [{"did": did, "serviceId": "0", "order": f"0x{number:064x}", "publisher": publisher}],
                        "algorithm": {"did": "did:op:" + "cd" * 32, "files": ["ab" * 32]},
                        "image": {"name": "python", "tag": "3.11", "digest": "sha256:" + "ef" * 32, "resolved": True},
                        "resources": {"cpu": 2, "gpu": 0, "ramGB": 4, "diskGB": 10}},
            results=[{"filename": "out.txt", "filesize": 12, "type": "output", "key": prefix + "outputs/out.txt",
                      "sha256": "01" * 32},
                     {"filename": "algorithm.log", "filesize": 40, "type": "algorithmLog",
                      "key": prefix + "logs/algorithm.log", "sha256": "02" * 32}]))
    return records


def _save(records: list[Any]) -> None:
    from chalicelib.models import AuditEntry, JobRecord
    from chalicelib.owner.audit import AuditLog

    log = AuditLog()
    with JobRecord.batch_write() as jobs, AuditEntry.batch_write() as entries:
        for record in records:
            jobs.save(record)
            for entry in log.entries(record):
                entries.save(entry)


def _audit(client: Any, key: str, publisher: str, did: str, after: str = "") -> tuple[float, float, int, int]:
    query = f"consumerAddress={publisher}&documentId={did}" + (f"&next={after}" if after else "")
    return timed_signed_get(client, key, "/api/services/computeAudit", publisher + did, query)


def _median(client: Any, key: str, publisher: str, did: str, after: str = "") -> dict[str, Any]:
    samples = [_audit(client, key, publisher, did, after) for _ in range(RUNS)]
    return {"ms": statistics.median(s[0] for s in samples) * 1000, "own_ms": statistics.median(s[1] for s in samples) * 1000,
            "bytes": samples[-1][2], "jobs": samples[-1][3]}


class _Owners:
    """The NFT owner of every dataset: the publisher (see the module docstring)."""

    def __init__(self, owner: str) -> None:
        self._owner = owner

    def current_owner(self, did: str) -> str:
        return self._owner


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
        from chalicelib.compute.paging import Cursor

        services.reset()
        bootstrap(services.settings(), with_bucket=True)
        publisher, consumer = Account.create(), Account.create()
        small, large = "did:op:" + "aa" * 32, "did:op:" + "bb" * 32
        now = int(time.time()) - LARGE - 3600
        _save(_jobs(publisher.address.lower(), consumer.address, small, SMALL, now))
        older = _jobs(publisher.address.lower(), consumer.address, large, LARGE, now)
        _save(older)
        oldest = Cursor(int(older[SMALL].date_created), older[SMALL].job_id).encode()  # the SMALL oldest follow it
        original = services.asset_resolver
        services.asset_resolver = lambda: _Owners(publisher.address)  # type: ignore[assignment]
        try:
            with Client(app_module.app, stage_name="local") as client:
                _audit(client, publisher.key, publisher.address, small)  # warm: clients built, modules imported
                result = {f"audit, {SMALL} jobs": _median(client, publisher.key, publisher.address, small),
                          f"audit, {LARGE} jobs, its oldest page": _median(client, publisher.key, publisher.address,
                                                                           large, oldest),
                          f"audit, {LARGE} jobs, its first page": _median(client, publisher.key, publisher.address,
                                                                          large)}
        finally:
            services.asset_resolver = original  # type: ignore[assignment]
            services.reset()
    return result


def run() -> tuple[str, float, str, float]:
    result = measure()
    for name, row in result.items():
        print(f"  {name}: {row['ms']:.1f} ms wall, {row['own_ms']:.1f} ms outside moto, {row['bytes'] / 1024:.0f} KiB, "
              f"{row['jobs']} jobs answered (each with its signed receipt)")
    small = result[f"audit, {SMALL} jobs"]
    deep, first = result[f"audit, {LARGE} jobs, its oldest page"], result[f"audit, {LARGE} jobs, its first page"]
    assert small["jobs"] == deep["jobs"] == SMALL, (small, deep)
    print(f"  wall-time ratio {deep['ms'] / small['ms']:.1f}x (moto sorts the whole partition on every Query)")
    print(f"  first page of {first['jobs']}: {first['own_ms'] / first['jobs']:.2f} ms a job outside moto, "
          f"against {small['own_ms'] / small['jobs']:.2f} ms for the {SMALL}-job log")
    return (f"audit log page of {SMALL} jobs, time outside moto, {LARGE}-job log / {SMALL}-job log",
            deep["own_ms"] / small["own_ms"], "x", BUDGET_RATIO)


if __name__ == "__main__":
    print(run())
