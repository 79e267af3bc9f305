"""ocean.js 3.x (`@oceanprotocol/lib` 3.4.6 from npm, unchanged) runs the compute flow against the
provider's root, the v4 protocol, on `make run`'s stack.

It lives in its own node project (tests/compat/oceanjs3, ethers 5), installed once with `npm ci`
from its lock file and reused; `driver.cjs` makes every call through `ProviderInstance` and the
orders through ocean.js's `Datatoken`, and writes what each call answered for this test to check.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

PROJECT = Path(__file__).with_name("oceanjs3")
INSTALL_TIMEOUT = 600
pytestmark = pytest.mark.timeout(INSTALL_TIMEOUT + 300)


def installed_project() -> Path:
    """The node project with its dependencies (npm ci once; a marker says it is complete)."""
    marker = PROJECT / "node_modules" / ".installed"
    lock_path = PROJECT.parents[2] / ".local" / "oceanjs3-install.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            npm = shutil.which("npm")
            assert npm, "npm is needed for the ocean.js compatibility test"
            done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PROJECT,
                                  capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
            assert done.returncode == 0, f"npm ci of ocean.js 3.4.6 failed:\n{done.stderr[-3000:]}"
            marker.write_text("installed\n")
    return PROJECT


@pytest.fixture(scope="module")
def ocean_js3_report(local_stack, tmp_path_factory) -> dict:
    project = installed_project()
    work = tmp_path_factory.mktemp("ocean_js3")
    (work / "stack.json").write_text(json.dumps(local_stack))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", str(work))}
    done = subprocess.run(["node", str(project / "driver.cjs"), str(work / "stack.json"), str(work / "report.json")],
                          capture_output=True, text=True, timeout=240, env=env, cwd=project)
    assert done.returncode == 0, f"ocean.js 3.4.6 driver failed:\n{done.stderr[-6000:]}"
    return json.loads((work / "report.json").read_text())


def test_ocean_js3_runs_a_job_and_downloads_its_result(ocean_js3_report, local_stack):
    report = ocean_js3_report
    assert report["validProvider"] is True and "ocean-c2d-cpu" in report["environments"]
    fee = report["initialize"]["datasets"][0]["providerFee"]
    assert fee["providerFeeAddress"] == local_stack["providerAddress"] and int(fee["providerFeeAmount"]) > 0
    assert report["orders"] == ["startOrder", "startOrder"]
    assert report["start"]["status"] in (1, 10, 20, 30, 40) and report["start"]["jobId"]
    assert report["statusesSeen"][-1] == 70 and report["status"]["jobId"] == report["start"]["jobId"]
    assert "resultsUrls" not in report["status"] or not report["status"]["resultsUrls"], \
        "the unsigned status ocean.js reads carries no URL"
    assert report["resultStatus"] == 200
    (summary,) = json.loads(report["result"])["inputs"].values()
    assert summary["rows"] == 60


def test_ocean_js3_reuses_orders_stops_and_deletes(ocean_js3_report):
    report = ocean_js3_report
    assert report["ordersAgain"] == ["reuseOrder", "reuseOrder"]
    assert report["statusAfterStop"]["status"] == 7
    (deleted,) = report["delete"] if isinstance(report["delete"], list) else [report["delete"]]
    assert deleted["status"] == 8
