"""ocean.js 8.6.2 (`@oceanprotocol/lib` from npm, unchanged) runs Ocean Node's compute flow against
`make run`'s stack at `<api>/node`, with only its public `ProviderInstance` API: environments, a
token, a free job to status 70 with its log streamed while it runs and its output downloaded (URL
and stream), a token-authorised start, its stop, the token's invalidation and refusal after it.

tests/compat/oceanjs/driver.mjs runs in the test's own node project (oceanjs_project) and writes
what every call answered; this test checks it. Its `@oceanprotocol/ddo-js` is pinned to 0.2.0 (the
registry lacks the 0.3.0 ocean.js asks for; no provider call uses it).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from oceanjs_project import INSTALL_TIMEOUT, PROJECT, installed

pytestmark = pytest.mark.timeout(INSTALL_TIMEOUT + 400)


@pytest.fixture(scope="module")
def ocean_js_report(local_stack, tmp_path_factory) -> dict:
    took = installed()
    if took:
        print(f"ocean.js node project installed in {took:.0f} s", file=sys.stderr)
    work = tmp_path_factory.mktemp("ocean_js")
    (work / "stack.json").write_text(json.dumps(local_stack))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", str(work))}
    done = subprocess.run(["node", str(PROJECT / "driver.mjs"), str(work / "stack.json"), str(work / "report.json")],
                          capture_output=True, text=True, timeout=300, env=env, cwd=PROJECT)
    assert done.returncode == 0, f"ocean.js driver failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return json.loads((work / "report.json").read_text())


def test_ocean_js_discovers_the_node_protocol(ocean_js_report, local_stack):
    report = ocean_js_report
    assert report["validProvider"] is True and report["nodeUri"] == local_stack["providerUrl"] + "/node"
    (environment, *_) = [env for env in report["environments"] if env.get("free")]
    assert environment["consumerAddress"] == local_stack["providerAddress"]
    assert {r["id"] for r in environment["resources"]} >= {"cpu", "ram", "disk"}
    assert str(local_stack["chainId"]) in environment["fees"]


def test_ocean_js_free_job_with_streamed_log_and_downloaded_output(ocean_js_report, local_stack):
    report = ocean_js_report
    started, finished = report["freeStart"], report["freeFinished"]
    assert started["status"] == 1 and started["owner"] == _consumer(local_stack)
    assert finished["status"] == 70 and 40 in report["statusesSeen"]
    running = [chunk["text"] for chunk in report["logChunksWhileRunning"]]
    assert running and any("tick 0" in text and "done" not in text for text in running), \
        "the log is read while the algorithm still runs"
    assert "tick 15" in report["logAfter"] and "done" in report["logAfter"]
    for downloaded in (report["resultByUrl"]["text"], report["resultByStream"]):
        assert json.loads(downloaded) == {"dids": [local_stack["dataset"]["did"]], "ticks": 16}
    assert report["resultByUrl"]["status"] == 200


def test_ocean_js_token_start_stop_and_invalidation(ocean_js_report):
    report = ocean_js_report
    assert report["token"].count(".") == 2
    assert report["tokenStart"]["status"] == 1
    assert report["tokenStop"]["status"] == 7 and report["afterStop"]["status"] == 7
    assert report["invalidate"] == {"success": True}
    assert "Token is deleted." in report["afterInvalidation"]
    assert report["logsAfterInvalidation"] is None


def _consumer(stack: dict) -> str:
    from chalicelib.auth.signatures import address_of_key

    return address_of_key(stack["consumerPrivateKey"])
