"""Free compute at `/node` against `make run`'s stack (its API server, anvil, moto server and the
local backend running the real runner and the sample algorithm), as a consumer calls it: the
published sample algorithm on the sample dataset, and the consumer's own files (a `fileObject`
dataset, and an `algorithm.fileObject`), each to status 70 with the algorithm's real output."""
from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests

from devstack.anvil import dev_accounts
from devstack.demo import Consumer

API = "/node/api/services"
CONTAINER = {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11-slim", "checksum": "sha256:" + "a1" * 32}
TERMINAL = {7, 8, 31, 32, 41, 62, 70}


@pytest.fixture(scope="module")
def consumer(local_stack) -> Consumer:
    """A consumer of its own (free compute needs no funds), so no other test's nonces or free slots interfere."""
    account = dev_accounts(6)[5]
    return Consumer({**local_stack, "consumerPrivateKey": "0x" + bytes(account.key).hex()})


def signed(consumer: Consumer, command: str) -> dict[str, str]:
    nonce = str(consumer.next_nonce())
    return {"consumerAddress": consumer.address, "nonce": nonce,
            "signature": consumer.sign(consumer.address + nonce + command)}


def run_free(consumer: Consumer, datasets: list[dict], algorithm: dict) -> dict[str, Any]:
    """freeCompute, then the status until the job ends, then its output (the sample's result.json)."""
    answer = requests.post(consumer.url + API + "/freeCompute", timeout=60, json={
        **signed(consumer, "freeStartCompute"), "environment": "ocean-c2d-cpu", "datasets": datasets,
        "algorithm": algorithm})
    assert answer.status_code == 200, answer.text
    job_id = answer.json()[0]["jobId"]
    deadline = time.monotonic() + 120
    while True:
        status = requests.get(consumer.url + API + "/compute", timeout=30,
                              params={"consumerAddress": consumer.address, "jobId": job_id}).json()[0]
        if status["status"] in TERMINAL:
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
    assert status["status"] == 70, status
    (output,) = [result for result in status["results"] if result["type"] == "output"]
    result = requests.get(consumer.url + API + "/computeResult", timeout=30,
                          params={**signed(consumer, "getComputeResult"), "jobId": job_id, "index": output["index"]})
    assert result.status_code == 200, result.text
    return {"status": status, "output": json.loads(result.content)}


def iris_summary(output: dict, name: str) -> dict:
    summary = output["inputs"][name]
    assert summary["rows"] == 60 and summary["columns"]["species"] == {"distinct": 3}, summary
    return summary


def test_a_free_job_of_the_published_sample_algorithm(local_stack, consumer):
    """What ocean.js's docs and Ocean's CLI do: algorithm {documentId, serviceId}; it used to end 32."""
    dataset, algorithm = local_stack["dataset"], local_stack["algorithm"]
    done = run_free(consumer, [{"documentId": dataset["did"], "serviceId": dataset["serviceId"]}],
                    {"documentId": algorithm["did"], "serviceId": algorithm["serviceId"]})
    iris_summary(done["output"], f"{dataset['did']}/0")
    assert done["status"]["inputDID"] == [dataset["did"]] and done["status"]["algoDID"] == algorithm["did"]


def test_a_free_job_of_the_consumers_own_files(local_stack, consumer):
    """A `fileObject` dataset (no DID) and the algorithm as `algorithm.fileObject` with its container."""
    files = local_stack["filesUrl"]
    done = run_free(consumer, [{"fileObject": {"type": "url", "url": f"{files}/iris.csv", "method": "GET"}}],
                    {"fileObject": {"type": "url", "url": f"{files}/algorithm.py", "method": "GET"},
                     "meta": {"container": CONTAINER}})
    iris_summary(done["output"], "raw-0/0")
    assert done["status"]["inputDID"] == ["raw-0"] and done["status"]["algoDID"] == ""


def test_the_published_algorithm_on_a_raw_file_beside_the_published_dataset(local_stack, consumer):
    files = local_stack["filesUrl"]
    dataset, algorithm = local_stack["dataset"], local_stack["algorithm"]
    done = run_free(consumer, [{"documentId": dataset["did"], "serviceId": dataset["serviceId"]},
                               {"documentId": "", "serviceId": "",  # as Ocean's CLI sends a raw one
                                "fileObject": {"type": "url", "url": f"{files}/iris.csv", "method": "get"}}],
                    {"documentId": algorithm["did"], "serviceId": algorithm["serviceId"]})
    iris_summary(done["output"], f"{dataset['did']}/0")
    iris_summary(done["output"], "raw-1/0")
