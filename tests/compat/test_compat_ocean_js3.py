"""ocean.js 3.x (`@oceanprotocol/lib` 3.4.6 from npm, unchanged) runs the compute flow against the
provider's root, the v4 protocol, on `make run`'s stack.

It lives in its own node project (tests/compat/oceanjs3, ethers 5), installed once with `npm ci`
from its lock file and reused; `driver.cjs` makes every call through `ProviderInstance` and the
orders through ocean.js's `Datatoken`, and writes what each call answered for this test to check.
"""
from __future__ import annotations

import json

import pytest

from node_projects import INSTALL_TIMEOUT, OCEAN_JS3, installed, run_driver

pytestmark = pytest.mark.timeout(INSTALL_TIMEOUT + 300)


@pytest.fixture(scope="module")
def ocean_js3_report(local_stack, tmp_path_factory) -> dict:
    installed(OCEAN_JS3)
    return run_driver(OCEAN_JS3, "driver.cjs", local_stack, tmp_path_factory.mktemp("ocean_js3"), timeout=240)


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
