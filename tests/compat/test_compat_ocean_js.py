"""ocean.js 8.6.2 (`@oceanprotocol/lib` from npm, unchanged) runs Ocean Node's compute flow against
`make run`'s stack at `<api>/node`, with only its public `ProviderInstance` API: environments, a
token, a free job of raw code to status 70 with its log streamed while it runs and its output
downloaded (URL and stream), free jobs of the published algorithm and of raw file inputs
(`fileObject` dataset and algorithm), a free job with `metadata` and an `additionalViewers`
address whose own ocean.js reads its status, result and log but cannot stop it, a token-authorised start, its stop, the token's
invalidation and refusal after it;
and its paid flow through Ocean Node's escrow (paid.mjs): initializeCompute's payment, the
EscrowContract's deposit and authorize, the datatoken orders, computeStart, status 70, the result,
with the provider's Lock and Claimed events on chain and the consumer's escrow funds after.

tests/compat/oceanjs/driver.mjs runs in the test's own node project (node_projects) and writes
what every call answered; this test checks it. Its `@oceanprotocol/ddo-js` is pinned to 0.2.0 (the
registry lacks the 0.3.0 ocean.js asks for; no provider call uses it).
"""
from __future__ import annotations

import json
import sys

import pytest

from node_projects import INSTALL_TIMEOUT, OCEAN_JS, installed, run_driver

pytestmark = pytest.mark.timeout(INSTALL_TIMEOUT + 400)


@pytest.fixture(scope="module")
def ocean_js_report(local_stack, tmp_path_factory) -> dict:
    took = installed(OCEAN_JS)
    if took:
        print(f"ocean.js node project installed in {took:.0f} s", file=sys.stderr)
    return run_driver(OCEAN_JS, "driver.mjs", local_stack, tmp_path_factory.mktemp("ocean_js"))


def test_ocean_js_discovers_the_node_protocol(ocean_js_report, local_stack):
    report = ocean_js_report
    assert report["validProvider"] is True and report["nodeUri"] == local_stack["providerUrl"] + "/node"
    (environment, *_) = [env for env in report["environments"] if env.get("free")]
    assert environment["consumerAddress"] == local_stack["providerAddress"]
    assert {r["id"] for r in environment["resources"]} >= {"cpu", "ram", "disk"}
    assert str(local_stack["chainId"]) in environment["fees"]


STARTING = (1, 10, 20, 30, 40)  # the statuses a job can have when its start answers


def test_ocean_js_free_job_with_streamed_log_and_downloaded_output(ocean_js_report, local_stack):
    report = ocean_js_report
    started, finished = report["freeStart"], report["freeFinished"]
    # the answer is the record as it stands after dispatch: the local backend may have moved it on
    assert started["status"] in STARTING and started["owner"] == _consumer(local_stack)
    assert finished["status"] == 70 and 40 in report["statusesSeen"]
    running = [chunk["text"] for chunk in report["logChunksWhileRunning"]]
    assert running and any("tick 0" in text and "done" not in text for text in running), \
        "the log is read while the algorithm still runs"
    assert "tick 15" in report["logAfter"] and "done" in report["logAfter"]
    for downloaded in (report["resultByUrl"]["text"], report["resultByStream"]):
        assert json.loads(downloaded) == {"dids": [local_stack["dataset"]["did"]], "ticks": 16}
    assert report["resultByUrl"]["status"] == 200


def test_ocean_js_job_options_metadata_and_a_viewer_s_own_client(ocean_js_report, local_stack):
    """freeComputeStart(..., resources, metadata, additionalViewers) as ocean.js 8.6.2 sends them."""
    report = ocean_js_report
    metadata = {"purpose": "compat", "run": 1, "final": True}
    assert report["optionsStart"]["metadata"] == metadata
    seen = report["viewerStatus"]
    assert seen["jobId"] == report["optionsStart"]["jobId"] and seen["owner"] == _consumer(local_stack)
    assert seen["status"] == 70 and seen["metadata"] == metadata
    assert seen["terminationDetails"]["OOMKilled"] is False and seen["terminationDetails"]["exitCode"] == 0
    assert json.loads(report["viewerResult"]) == {"dids": [local_stack["dataset"]["did"]], "ticks": 1}
    assert "tick 0" in report["viewerLog"] and "done" in report["viewerLog"]
    assert report["viewerStop"] != "accepted", "a viewer cannot stop the job"


def test_ocean_js_free_job_of_the_published_algorithm(ocean_js_report, local_stack):
    """algorithm {documentId, serviceId}, as ocean.js's own docs start free jobs."""
    run = ocean_js_report["freePublished"]
    assert run["finished"]["status"] == 70, run["finished"]
    assert run["finished"]["algoDID"] == local_stack["algorithm"]["did"]
    summary = json.loads(run["output"])["inputs"][local_stack["dataset"]["did"] + "/0"]
    assert summary["rows"] == 60, summary


def test_ocean_js_free_job_of_raw_file_inputs(ocean_js_report):
    """A dataset as `fileObject` (no DID) and the algorithm as `algorithm.fileObject`."""
    run = ocean_js_report["freeRawFiles"]
    assert run["finished"]["status"] == 70, run["finished"]
    assert run["finished"]["inputDID"] == ["raw-0"]
    summary = json.loads(run["output"])["inputs"]["raw-0/0"]
    assert summary["rows"] == 60 and summary["columns"]["species"] == {"distinct": 3}, summary


def test_ocean_js_token_start_stop_and_invalidation(ocean_js_report):
    report = ocean_js_report
    assert report["token"].count(".") == 2
    assert report["tokenStart"]["status"] in STARTING
    assert report["tokenStop"]["status"] == 7 and report["afterStop"]["status"] == 7
    assert report["invalidate"] == {"success": True}
    assert "Token is deleted." in report["afterInvalidation"]
    assert report["logsAfterInvalidation"] is None


@pytest.fixture(scope="module")
def paid_report(ocean_js_report, local_stack, tmp_path_factory) -> dict:
    """After the free flow (one consumer, one nonce sequence at a time)."""
    return run_driver(OCEAN_JS, "paid.mjs", local_stack, tmp_path_factory.mktemp("ocean_js_paid"))


def test_ocean_js_paid_flow_locks_in_escrow_and_claims_what_ran(paid_report, local_stack):
    report = paid_report
    payment = report["initialize"]["payment"]
    environment = report["environment"]
    assert payment["escrowAddress"] == local_stack["contracts"]["Escrow"]
    assert payment["payee"] == local_stack["providerAddress"] == environment["consumerAddress"]
    assert payment["token"] == local_stack["contracts"]["OceanToken"] and payment["chainId"] == local_stack["chainId"]
    per_minute = sum(p["price"] for p in environment["fees"][str(local_stack["chainId"])][0]["prices"]
                     if p["id"] == "cpu") * next(r["min"] for r in environment["resources"] if r["id"] == "cpu")
    minutes = environment["maxJobDuration"] // 60  # ocean.js sends its validUntil: capped at the maximum
    assert int(payment["amount"]) == round(per_minute * minutes * 10**18)  # the smallest unit
    assert payment["minLockSeconds"] >= environment["maxJobDuration"]
    assert report["authorizations"], "EscrowContract.authorize went through"
    finished = report["finished"]
    assert report["started"]["status"] in STARTING and finished["status"] == 70
    assert json.loads(report["result"])["inputs"], report["result"]
    # the provider's own Lock and Claimed events for this job, nothing else in the run's blocks
    events = report["events"]
    assert len(events["Lock"]) == len(events["Claimed"]) == 1, json.dumps(events, indent=1)
    [lock], [claimed] = events["Lock"], events["Claimed"]
    assert report["events"]["Canceled"] == [] and lock["jobId"] == claimed["jobId"]
    locked_amount, claim = int(lock["amount"]), int(claimed["amount"])
    assert 0 < claim <= locked_amount
    assert locked_amount == round(per_minute * 5 * 10**18)  # computeStart's maxJobDuration: 300 s
    view = finished["payment"]
    assert view["status"] == "claimed" and view["lock"]["hash"] == lock["tx"] and view["claim"]["hash"] == claimed["tx"]
    assert int(view["claimed"]) == claim == round(per_minute * 10**18) * -(-view["billedSeconds"] // 60)
    # the lock took the amount from the available funds while the job ran; the claim is all that left
    deposited = [int(x) for x in report["fundsAfterDeposit"]]
    assert [int(x) for x in report["fundsAfterStart"]] == [deposited[0] - locked_amount, deposited[1] + locked_amount]
    assert [int(x) for x in report["fundsAfter"]] == [deposited[0] - claim, deposited[1]]
    print(f"ocean.js paid computeStart answered in {report['startMs']} ms (lock mined before dispatch)", file=sys.stderr)


def _consumer(stack: dict) -> str:
    from chalicelib.auth.signatures import address_of_key

    return address_of_key(stack["consumerPrivateKey"])
