"""What the canary concludes from its probes' results: a job that did not complete fails the run;
two sealed probes prove "no other job's listener" only when they ran on one host at one time and
each reached its own; contact seen from either side fails; a network-allowed probe on a sealed
probe's host fails; and what the probe is told and run as."""
from __future__ import annotations

import random

import pytest

from canary.client import result_index
from canary.plan import algorithm_meta, container, plan_jobs
from canary.verdict import FAIL, PASS, SKIP, Outcome, failed, pair_row, placement_row, render, rows_for

OWN = "connected, answered 'c2d-canary r {role}'"


def probe(role: str, *, boot: str = "boot-1", started: float = 100.0, ended: float = 160.0, reached=None, heard=None,
          rows=None, environment: str = "cpu") -> Outcome:
    job = next(j for j in plan_jobs([(environment, True)], where="aws", run="r", window=60,
                                    rng=random.Random(1)) if j.role == role)
    facts = {"bootId": boot, "peers": {"started": started, "ended": ended, "reached": reached or {}, "heard": heard or {},
                                       "selfTest": {"tcp": OWN.format(role=role), "abstract": OWN.format(role=role)}}}
    return Outcome(job, f"job-{role}", {"status": 70}, {"rows": rows or [], "facts": facts})


def test_two_sealed_probes_on_one_host_at_one_time_that_reached_nothing_pass():
    row = pair_row("cpu", probe("a"), probe("b", started=130, ended=190))
    assert row.status == PASS and "30 s side by side" in row.detail


@pytest.mark.parametrize("a, b, words", [
    (probe("a"), probe("b", boot="boot-2"), "different hosts"),
    (probe("a", ended=120), probe("b", started=130, ended=190), "not at the same time"),
])
def test_a_pair_that_could_not_meet_proves_nothing(a, b, words):
    row = pair_row("cpu", a, b)
    assert row.status == SKIP and words in row.detail


def test_contact_seen_from_either_side_fails_even_across_hosts():
    assert pair_row("cpu", probe("a", reached={"b": ["abstract"]}), probe("b", boot="boot-2")).status == FAIL
    heard_only = pair_row("cpu", probe("a"), probe("b", heard={"a": ["tcp"]}))
    assert heard_only.status == FAIL and "a->b tcp (heard by b)" in heard_only.detail


def test_a_probe_that_cannot_reach_its_own_listener_proves_nothing():
    broken = probe("b")
    broken.result["facts"]["peers"]["selfTest"]["abstract"] = "ECONNREFUSED"
    row = pair_row("cpu", probe("a"), broken)
    assert row.status == SKIP and "its own listeners" in row.detail


def test_a_network_allowed_probe_must_run_on_a_host_of_its_own():
    sealed = [probe("a"), probe("b")]
    assert placement_row("cpu", probe("n", boot="boot-9"), sealed).status == PASS
    shared = placement_row("cpu", probe("n", boot="boot-1"), sealed)
    assert shared.status == FAIL and "host of sealed probe a, b" in shared.detail
    assert placement_row("cpu", probe("n", boot="boot-9", reached={"a": ["tcp"]}), sealed).status == FAIL


def test_a_job_that_did_not_complete_fails_the_run_and_the_table_counts():
    done = probe("a", rows=[{"check": "caps.bounding", "status": PASS, "detail": "CapBnd 0x0"}])
    lost = Outcome(probe("b").job, problem="did not end within 3600 s")
    rows = rows_for([done, lost])
    assert [(r.job, r.check, r.status) for r in rows] == [
        ("sealed-a", "job.completed", PASS), ("sealed-a", "caps.bounding", PASS), ("sealed-a", "logs.while_running", SKIP),
        ("sealed-b", "job.completed", FAIL)]
    assert failed(rows) and "2 PASS, 1 FAIL, 1 SKIP: FAILED" in render(rows)
    assert not failed(rows[:3]) and "no escape found" in render(rows[:3])


def test_the_log_must_show_while_the_job_runs():
    seen, blind, brief = probe("a"), probe("a"), probe("a")
    seen.log_polls, seen.log_seen = 2, "status 40"
    blind.log_polls = 5
    brief.log_polls = 1
    assert [o.log_row().status for o in (seen, blind, brief)] == [PASS, FAIL, SKIP]


def test_each_environment_gets_a_sealed_pair_and_a_network_probe_only_with_a_network_queue():
    jobs = plan_jobs([("cpu", True), ("gpu", False)], where="aws", run="r1", window=90)
    assert [(j.environment, j.role, j.mode) for j in jobs] == [
        ("cpu", "a", "sealed"), ("cpu", "b", "sealed"), ("cpu", "n", "network"), ("gpu", "a", "sealed"), ("gpu", "b", "sealed")]
    ports = [port for j in jobs for port in j.config["listen"]["ports"]]
    assert len(set(ports)) == len(ports) == 3 * len(jobs)
    a = jobs[0].algocustomdata()["c2dCanary"]
    assert {p["role"] for p in a["peers"]} == {"b", "n"} and a["where"] == "aws" and a["window"] == 90
    assert {p["role"] for p in jobs[3].config["peers"]} == {"b"}
    assert plan_jobs([("gpu", False)], where="aws", run="r2", window=9, gpus={"gpu": 1})[0].config["gpus"] == 1


def test_the_probe_runs_as_a_raw_algorithm_in_an_image_pinned_by_digest():
    digest = "sha256:" + "ab" * 32
    assert container(f"python:3.13-slim@{digest}") == {"image": "python", "tag": "3.13-slim", "checksum": digest,
                                                       "entrypoint": "python $ALGO"}
    assert container(f"ghcr.io/org/probe@{digest}")["image"] == "ghcr.io/org/probe"
    assert container(f"registry.example.com:5000/probe:1@{digest}")["tag"] == "1"
    with pytest.raises(ValueError, match="pin the probe's image by digest"):
        container("python:3.13-slim")
    assert container("python:3.13-slim", local=True)["checksum"].startswith("sha256:")
    with pytest.raises(ValueError, match="sha256"):
        container("python@sha256:short")
    meta = algorithm_meta(f"python:3.13-slim@{digest}")
    assert "def main()" in meta["rawcode"] and meta["language"] == "python"


def test_the_result_is_found_by_its_filename_among_the_outputs():
    status = {"results": [{"type": "algorithmLog", "filename": "algorithm.log", "index": 0},
                          {"type": "output", "filename": "canary.txt", "index": 1},
                          {"type": "output", "filename": "canary.json", "index": 2}]}
    assert result_index(status) == 2 and result_index({"results": []}) is None


def test_a_canary_that_cannot_run_says_why_and_exits_2(tmp_path, capsys):
    from canary.__main__ import main

    assert main(["run", "--stage", "dev", "--datasets", str(tmp_path / "none.json")]) == 2
    assert "publish the canary datasets first (python -m canary publish --stage dev)" in capsys.readouterr().err
    assert main(["run", "--stack", str(tmp_path / "stack.json")]) == 2
    assert "start the local stack with `make run` first" in capsys.readouterr().err


def test_publishing_on_a_stage_registers_through_its_function_and_finds_oceans_contracts():
    import io
    import json

    import boto3
    from botocore.stub import Stubber

    from canary.datasets import contracts_of, register_on_stage

    assert contracts_of(11155111).ERC721Factory == "0xEF62FB495266C72a5212A11Dce8baa79Ec0ABeB1"  # Sepolia
    with pytest.raises(ValueError, match="not in ocean-contracts"):
        contracts_of(424242)
    client = boto3.client("lambda", region_name="us-east-1")
    payload = {"chainId": 11155111, "nftAddress": "0x" + "1" * 40, "txHash": "0x" + "2" * 64}
    with Stubber(client) as stub:
        expected = {"FunctionName": "ocean-c2d-provider-dev-register_asset", "Payload": json.dumps(payload).encode()}
        stub.add_response("invoke", {"StatusCode": 200, "Payload": io.BytesIO(b'{"did": "did:op:x"}')}, expected)
        stub.add_response("invoke", {"StatusCode": 200, "FunctionError": "Unhandled",
                                     "Payload": io.BytesIO(b'{"errorMessage": "no such NFT"}')}, expected)
        register = register_on_stage("ocean-c2d-provider-dev-register_asset", client)
        register(11155111, payload["nftAddress"], payload["txHash"])
        with pytest.raises(RuntimeError, match="no such NFT"):
            register(11155111, payload["nftAddress"], payload["txHash"])
