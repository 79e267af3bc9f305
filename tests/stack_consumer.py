"""A consumer of `make run`'s stack for the tests that run free jobs on it through `/node` (the
real runner and the sample algorithm): its own funded dev account, so no other test's nonces or
free slots interfere, Ocean Node's signed calls, and a free job followed to its output."""
from __future__ import annotations

import json
import time
from typing import Any

import requests

from devstack.anvil import dev_accounts
from devstack.demo import Consumer

API = "/node/api/services"
TERMINAL = {7, 8, 31, 32, 41, 62, 70}


def own_consumer(stack: dict[str, Any], account: int) -> Consumer:
    """Dev account `account` (anvil funds it with ETH; free compute needs no token) as a consumer."""
    key = dev_accounts(account + 1)[account].key
    return Consumer({**stack, "consumerPrivateKey": "0x" + bytes(key).hex()})


def signed(consumer: Consumer, command: str) -> dict[str, str]:
    nonce = str(consumer.next_nonce())
    return {"consumerAddress": consumer.address, "nonce": nonce,
            "signature": consumer.sign(consumer.address + nonce + command)}


def run_free(consumer: Consumer, datasets: list[dict], algorithm: dict) -> dict[str, Any]:
    """freeCompute, then the status until the job ends (it must end 70), then its output (the
    sample algorithm's result.json)."""
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
    """The sample algorithm's summary of one input that is the sample iris.csv."""
    summary = output["inputs"][name]
    assert summary["rows"] == 60 and summary["columns"]["species"] == {"distinct": 3}, summary
    return summary
