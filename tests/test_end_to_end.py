"""`make run` then `make demo`: a consumer orders on the local chain, starts a job, follows it,
and downloads the algorithm's real output computed on the sample dataset by the local runner."""
from __future__ import annotations

import json


def test_demo_flow_computes_the_sample_result(local_stack):
    from devstack.demo import run

    outcome = run(local_stack, poll_seconds=0.3, timeout=120)
    assert outcome["status"]["status"] == 70
    result = json.loads(outcome["output"])
    (summary,) = result["inputs"].values()
    assert summary["rows"] == 60 and summary["columns"]["species"] == {"distinct": 3}
    assert result["algoCustomData"] == {"requestedBy": "make demo"}
    types = sorted(item["type"] for item in outcome["status"]["results"])
    assert types == ["algorithmLog", "configurationLog", "output", "publishLog"]


def test_demo_paid_node_run_locks_then_claims_from_escrow(local_stack):
    """`make demo`'s second run: the same job paid through Ocean Node's escrow at /node."""
    from devstack.demo import run_paid

    outcome = run_paid(local_stack, poll_seconds=0.3, timeout=120)
    payment = outcome["payment"]
    assert outcome["status"]["status"] == 70 and payment["status"] == "claimed"
    assert payment["lock"]["status"] == payment["claim"]["status"] == "mined"
    assert payment["claim"]["nonce"] > payment["lock"]["nonce"]
    claim = int(payment["claimed"])
    assert 0 < claim <= int(payment["amount"])
    before, after = outcome["before"], outcome["after"]
    assert list(after) == [before[0] - claim, before[1]]
