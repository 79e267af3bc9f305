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


def test_demo_release_run_holds_the_results_until_the_publisher_releases_them(local_stack, tmp_path):
    """`make demo`'s third run: the job on the dataset that requires its publisher's release ends
    at 75, the publisher reviews and releases it, the consumer downloads the same bytes and the
    receipt verifies them (with the CLI too, in a process that knows nothing of the provider)."""
    import subprocess
    import sys
    from pathlib import Path

    from devstack.demo import run_release

    outcome = run_release(local_stack, poll_seconds=0.3, timeout=120, folder=tmp_path)
    assert outcome["held"]["status"] == 75 and outcome["held"]["resultsUrls"] == []
    assert outcome["decided"]["status"] == 70 and outcome["decided"]["release"]["state"] == "released"
    assert outcome["output"] == outcome["reviewed"] and json.loads(outcome["output"])["inputs"]
    receipt = outcome["receipt"]["receipt"]
    assert receipt["status"] == 70 and receipt["release"]["state"] == "released"
    assert receipt["provider"] == local_stack["providerAddress"]
    assert receipt["datasets"][0]["did"] == local_stack["heldDataset"]["did"]
    root = Path(__file__).resolve().parent.parent
    outputs = [path for path in tmp_path.iterdir() if path.name != "receipt.json"]
    ran = subprocess.run([sys.executable, "-m", "chalicelib.receipts", "verify", str(tmp_path / "receipt.json"),
                          *map(str, outputs), "--provider", local_stack["providerAddress"]],
                         capture_output=True, text=True, cwd=root, env={"PYTHONPATH": str(root)}, timeout=60)
    assert ran.returncode == 0 and ran.stdout.startswith("OK job"), ran.stdout + ran.stderr
