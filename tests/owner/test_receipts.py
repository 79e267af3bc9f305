"""Signed compute receipts (issue 22): a finished job's receipt records what ran, on what, for how
long, for how much and what came out; it is signed by the provider key (EIP-712 over its
canonical JSON) and `python -m chalicelib.receipts verify` checks it and the downloaded outputs
with no provider running; every field changed, and an output changed, is refused; only the job's
owner, its viewers and its inputs' publishers may fetch it."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from lifecycle_helpers import ALGORITHM_CODE, TEST_IMAGE, environments_json, initialize, order_both, post_start, start_body, stubbed_provider
from owner_helpers import finish, get, node_signed, receipt_of, signed
from test_events import T0

OUTPUTS = {"result.csv": b"answer,42\n", "summary.json": b'{"rows": 3}\n'}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def provider(aws, chain, client, monkeypatch):
    with stubbed_provider(chain, monkeypatch, environments_json(chain)) as (batch, published):
        yield chain, batch, published


def start(client, provider, account=None) -> tuple[dict, str, str]:
    chain, batch, published = provider
    account = account or chain.consumer
    quote = initialize(client, published, account.address)
    dataset_tx, algorithm_tx = order_both(chain, published, quote, account)
    batch.expect_new_definition()
    batch.expect_submit()
    status, body = post_start(client, start_body(published, account, time.time_ns(), dataset_tx, algorithm_tx))
    assert status == 200, body
    return body[0], dataset_tx, algorithm_tx


@pytest.fixture
def finished(client, provider) -> Iterator[tuple[dict, str, str]]:
    job, dataset_tx, algorithm_tx = start(client, provider)
    finish(client, job["jobId"], OUTPUTS)
    yield job, dataset_tx, algorithm_tx


def test_a_finished_jobs_receipt_records_the_job(client, provider, finished):
    from chalicelib import services

    chain, _, published = provider
    job, dataset_tx, algorithm_tx = finished
    status, signed_receipt, _ = receipt_of(client, chain.consumer, job["jobId"])
    assert status == 200, signed_receipt
    receipt = signed_receipt["receipt"]
    assert receipt["provider"] == services.provider_address() and receipt["chainId"] == chain.chain_id
    assert receipt["jobId"] == job["jobId"] and receipt["owner"] == chain.consumer.address
    assert receipt["datasets"] == [{"did": published.dataset.did, "serviceId": published.dataset.serviceId,
                                    "order": dataset_tx}]
    assert receipt["algorithm"] == {"did": published.algorithm.did, "serviceId": published.algorithm.serviceId,
                                    "order": algorithm_tx, "rawcodeSha256": None,
                                    "files": [{"index": 0, "sha256": hashlib.sha256(ALGORITHM_CODE).hexdigest()}]}
    assert receipt["image"] == {"name": "python", "tag": "3.11-slim", "digest": TEST_IMAGE.digest, "resolved": True}
    assert receipt["environment"]["id"] == "ocean-c2d-cpu"
    assert receipt["environment"]["resources"] == {"cpu": 2, "gpu": 0, "ramGB": 4, "diskGB": 10}
    times = receipt["times"]
    assert times["configure"] == {"startedAt": times["configure"]["startedAt"], "endedAt": T0}
    assert times["algorithm"] == {"startedAt": T0 + 5, "endedAt": T0 + 125}
    assert times["publish"]["startedAt"] == T0 and times["finished"] == times["publish"]["endedAt"]
    assert (receipt["status"], receipt["exitCode"]) == (70, 0)
    billing = receipt["billing"]
    assert billing["kind"] == "providerFee" and billing["transactions"] == {"order": dataset_tx}
    assert int(billing["amount"]) > 0 and billing["token"].lower() == chain.contracts.OceanToken.lower()
    assert receipt["outputs"] == [{"name": name, "size": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                                   "deleted": False} for name, body in OUTPUTS.items()]
    assert {log["name"]: log["type"] for log in receipt["logs"]} == {
        "configure.log": "configurationLog", "algorithm.log": "algorithmLog", "publish.log": "publishLog"}
    assert all(len(log["sha256"]) == 64 for log in receipt["logs"]) and receipt["release"] == {"required": False}
    # the same state, the same bytes and signature; at /node too (address + nonce + getComputeReceipt)
    assert receipt_of(client, chain.consumer, job["jobId"])[1] == signed_receipt
    status, again, _ = get(client, "/node/api/services/computeReceipt",
                           node_signed(chain.consumer, "getComputeReceipt", jobId=job["jobId"]))
    assert status == 200 and again == signed_receipt


def _download_outputs(client, account, job_id: str, folder: Path) -> list[Path]:
    folder.mkdir()
    paths = []
    for index, name in enumerate(OUTPUTS):
        status, _, headers = get(client, "/api/services/computeResult",
                                 signed(account, job_id, str(index), jobId=job_id, index=index))
        assert status == 302
        path = folder / name
        path.write_bytes(requests.get(headers["Location"], timeout=10).content)
        paths.append(path)
    return paths


def verify_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a consumer runs it: a fresh process, nothing of the provider's settings."""
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "chalicelib.receipts", "verify", *args], capture_output=True,
                          text=True, env=env, cwd=str(ROOT), timeout=60)


def test_the_cli_verifies_the_receipt_and_the_downloaded_outputs(client, provider, finished, tmp_path):
    from chalicelib import services

    chain = provider[0]
    job = finished[0]
    receipt = receipt_of(client, chain.consumer, job["jobId"])[1]
    (tmp_path / "receipt.json").write_text(json.dumps(receipt))
    outputs = _download_outputs(client, chain.consumer, job["jobId"], tmp_path / "outputs")
    ran = verify_cli(str(tmp_path / "receipt.json"), *map(str, outputs), "--provider", services.provider_address())
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.startswith(f"OK job {job['jobId']}") and "2 output(s) match" in ran.stdout

    outputs[0].write_bytes(b"answer,43\n")  # an output changed after download
    ran = verify_cli(str(tmp_path / "receipt.json"), *map(str, outputs))
    assert ran.returncode == 1 and "REFUSED result.csv: sha256" in ran.stdout
    receipt["receipt"]["status"] = 41
    (tmp_path / "receipt.json").write_text(json.dumps(receipt))
    ran = verify_cli(str(tmp_path / "receipt.json"))
    assert ran.returncode == 1 and "REFUSED signature" in ran.stdout
    assert verify_cli(str(tmp_path / "missing.json")).returncode == 2


def _leaves(value: Any, path: tuple = ()) -> Iterator[tuple]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    else:
        yield path


def _changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value[:-1] + ("0" if value[-1:] != "0" else "1") if value else "x"
    return "x"


def test_every_field_changed_is_refused(client, provider, finished, tmp_path):
    from chalicelib.receipts.__main__ import verify

    chain = provider[0]
    signed_receipt = receipt_of(client, chain.consumer, finished[0]["jobId"])[1]
    assert verify(signed_receipt, []) == []
    paths = list(_leaves(signed_receipt["receipt"]))
    assert len(paths) > 60, "every recorded field is a leaf of the receipt"
    for path in paths:
        tampered = copy.deepcopy(signed_receipt)
        holder = tampered["receipt"]
        for part in path[:-1]:
            holder = holder[part]
        holder[path[-1]] = _changed(holder[path[-1]])
        problems = verify(tampered, [])
        assert problems and problems[0].startswith("signature"), path
    for path in _leaves({key: signed_receipt[key] for key in ("eip712", "scheme", "signature")}):
        tampered = copy.deepcopy(signed_receipt)
        holder = tampered
        for part in path[:-1]:
            holder = holder[part]
        holder[path[-1]] = _changed(holder[path[-1]])
        assert verify(tampered, []), path
    # the outputs: each one changed, and one that is not in the receipt
    folder = tmp_path / "outputs"
    folder.mkdir()
    for name, body in OUTPUTS.items():
        (folder / name).write_bytes(body)
    assert verify(signed_receipt, list(folder.iterdir())) == []
    for name, body in OUTPUTS.items():
        (folder / name).write_bytes(body + b" ")
        assert [p for p in verify(signed_receipt, list(folder.iterdir())) if p.startswith(name)], name
        (folder / name).write_bytes(body)
    (folder / "extra.txt").write_bytes(b"x")
    assert verify(signed_receipt, [folder / "extra.txt"]) == ["extra.txt: no output of that name in the receipt"]
    # a receipt another key signed, however right its content, is refused
    from chalicelib.receipts.signing import sign

    forged = sign(signed_receipt["receipt"], "0x" + "11" * 32)
    assert verify(forged, [])[0].startswith("signature")


def test_who_may_read_a_receipt(client, provider):
    chain, _, published = provider
    job, _, _ = start(client, provider)
    job_id = job["jobId"]
    status, body, _ = receipt_of(client, chain.consumer, job_id)
    assert (status, body) == (400, {"error": "The job has not ended yet; its receipt is made when it does"})
    finish(client, job_id, OUTPUTS)
    assert receipt_of(client, chain.consumer, job_id)[0] == 200
    assert receipt_of(client, chain.publisher, job_id)[0] == 200  # the dataset's (and algorithm's) publisher
    assert receipt_of(client, chain.other, job_id)[:2] == (404, {"error": "Job not found"})
    from chalicelib.models import JobRecord

    record = JobRecord.get(job_id)
    record.update(actions=[JobRecord.viewers.set([chain.other.address.lower()])])
    assert receipt_of(client, chain.other, job_id)[0] == 200
    assert receipt_of(client, chain.other, "no-such-job")[:2] == (404, {"error": "Job not found"})
