"""`make canary` against `make run`'s stack, as an operator runs it: the canary publishes its own
datasets on the local chain, starts two sealed probe jobs on every environment through the paid
v4 start path (initializeCompute, startOrder, compute start), fetches each one's canary.json
through computeResult, prints the table and exits 0 because nothing escaped. Then the free path
(Ocean Node's freeCompute at /node) on the environment with a free tier, on the sample dataset
(its publisher may be computed on for free)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.local_dispatch import detect_sandbox

REPO = Path(__file__).resolve().parents[2]
SANDBOX, NO_SANDBOX = detect_sandbox()
pytestmark = pytest.mark.timeout(600)
LINE = re.compile(r"^(?P<environment>\S+)\s+(?P<job>\S+)\s+(?P<status>PASS|FAIL|SKIP)\s+(?P<check>\S+)\s+(?P<detail>.*)$")


def table(output: str) -> list[dict[str, str]]:
    return [m.groupdict() for m in map(LINE.match, output.splitlines()) if m]


def state_with(stack: dict, folder: Path) -> dict[str, str]:
    """An environment whose DEVSTACK_STATE_DIR holds the session stack's stack.json."""
    folder.mkdir()
    (folder / "stack.json").write_text(json.dumps(stack))
    env = {k: v for k, v in os.environ.items() if k not in ("STAGE", "CANARY_ARGS", "CANARY_IMAGE")}
    return {**env, "DEVSTACK_STATE_DIR": str(folder)}


def test_make_canary_against_the_local_stack(local_stack, tmp_path):
    done = subprocess.run(["make", "-s", "canary"], cwd=REPO, env=state_with(local_stack, tmp_path / "state"),
                          capture_output=True, text=True, timeout=540)
    rows = table(done.stdout)
    if SANDBOX is None:  # an unsandboxed local job is not sealed, and the canary says so
        assert done.returncode == 1 and any(r["status"] == "FAIL" for r in rows), done.stdout[-3000:]
        return
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    assert not [r for r in rows if r["status"] == "FAIL"]
    assert "(paid start path" in done.stdout and re.search(r"\d+ PASS, 0 FAIL, \d+ SKIP: no escape found", done.stdout)
    environments = {r["environment"] for r in rows} - {"host"}
    assert environments == {"ocean-c2d-cpu", "ocean-c2d-gpu"}
    found = {(r["environment"], r["job"], r["check"]): r for r in rows}
    for environment in environments:
        for job in ("sealed-a", "sealed-b"):
            assert found[(environment, job, "job.completed")]["detail"].endswith("ended 70")
            for check in ("identity.uid", "caps.bounding", "no_new_privs", "net.interfaces", "net.host_loopback",
                          "net.internet", "net.private_ranges", "proc.other_processes", "fs.inputs", "fs.logs",
                          "fs.system", "env.credentials", "logs.while_running"):
                assert found[(environment, job, check)]["status"] == "PASS", found[(environment, job, check)]
            for check in ("imds.v1", "imds.v2_token", "ecs.credentials_uri", "ecs.metadata", "ecs.agent_ports"):
                row = found[(environment, job, check)]
                assert row["status"] == "SKIP" and "local machine" in row["detail"], row
        assert found[(environment, "sealed-a+sealed-b", "jobs.other_job_listeners")]["status"] == "PASS"
        if environment == "ocean-c2d-gpu":
            assert found[(environment, "sealed-a", "gpu.devices")]["status"] == "SKIP"
        assert found[(environment, "network", "jobs.network_mode")]["status"] == "SKIP"
    assert found[("host", "listeners", "host.planted_listeners")]["status"] == "PASS"


@pytest.mark.skipif(SANDBOX is None, reason=f"no sandbox on this machine: {NO_SANDBOX}")
def test_canary_on_the_free_path(local_stack, tmp_path):
    datasets = tmp_path / "datasets.json"
    datasets.write_text(json.dumps({"chainId": local_stack["chainId"], "sealed": local_stack["dataset"], "network": None}))
    done = subprocess.run([sys.executable, "-m", "canary", "run", "--path", "free", "--environment", "ocean-c2d-cpu",
                           "--datasets", str(datasets)], cwd=REPO, env=state_with(local_stack, tmp_path / "state"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    assert "(free start path" in done.stdout
    rows = table(done.stdout)
    assert {r["environment"] for r in rows} == {"ocean-c2d-cpu", "host"}
    assert [r["job"] for r in rows if r["check"] == "job.completed" and r["status"] == "PASS"] == ["sealed-a", "sealed-b"]
