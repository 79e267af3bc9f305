"""The built package serves (issue 17): unzipped into a clean folder and imported by the base
interpreter (no venv, `-I -S -B`), as Lambda's runtime does, it answers one request of every
route family of both protocols and runs every other function once, against a moto server and
anvil (devstack.lambda_package), building each AWS client the code builds. A package pruned of
a model or a module it needs fails here, not in a deploy."""
from __future__ import annotations

import json
import shutil
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import pytest

from devstack.lambda_package import (BATCH_JOB, JOB_FINISHED, JOB_RUNNING, Backends, base_python, bridge_event,
                                     local_backends, proxy_event, unpack)
from infra import lean

pytestmark = pytest.mark.timeout(600)
JSON = {"Content-Type": "application/json"}


def _steps(backends: Backends) -> list[dict[str, Any]]:
    """One request of every route family, v4 and /node, then every other function."""
    consumer, chain, samples = backends.consumer, backends.chain, backends.samples
    dataset = {"documentId": samples.dataset.did, "serviceId": samples.dataset.serviceId}
    algorithm = {"documentId": samples.algorithm.did, "serviceId": samples.algorithm.serviceId}
    queue = json.loads(backends.env["COMPUTE_ENVIRONMENTS"])[0]["jobQueue"]

    def http(label: str, method: str, path: str, query: dict | None = None, body: Any = None,
             headers: dict | None = None) -> dict[str, Any]:
        text = json.dumps(body) if isinstance(body, dict) else body
        return {"kind": "http", "label": label, "event": proxy_event(method, path, query, text, headers)}

    def v4_signed(prefix: str, **query: str) -> dict[str, str]:
        nonce, signature = backends.signed(prefix)
        return {**query, "nonce": nonce, "signature": signature}

    def node_signed(command: str, **query: str) -> dict[str, str]:
        nonce, signature = backends.signed(consumer, command)
        return {"consumerAddress": consumer, **query, "nonce": nonce, "signature": signature}

    steps = [
        http("v4 root", "GET", "/"),
        http("node root", "GET", "/node"),
        http("v4 nonce", "GET", "/api/services/nonce", {"userAddress": consumer}),
        http("node nonce", "GET", "/node/api/services/nonce", {"userAddress": consumer}),
        http("v4 environments", "GET", "/api/services/computeEnvironments"),
        http("node environments", "GET", "/node/api/services/computeEnvironments"),
        http("v4 signed status", "GET", "/api/services/compute",
             v4_signed(consumer + JOB_FINISHED, consumerAddress=consumer, jobId=JOB_FINISHED)),
        http("v4 signed result", "GET", "/api/services/computeResult",
             v4_signed(consumer + JOB_FINISHED + "0", consumerAddress=consumer, jobId=JOB_FINISHED, index="0")),
        http("node status", "GET", "/node/api/services/compute", {"consumerAddress": consumer}),
        http("node signed stop", "PUT", "/node/api/services/compute", node_signed("stopCompute", jobId=JOB_FINISHED)),
        http("node signed logs", "GET", "/node/api/services/computeStreamableLogs",
             node_signed("getComputeStreamableLogs", jobId=JOB_RUNNING)),
        http("v4 auth token", "GET", "/api/services/createAuthToken",
             v4_signed(consumer, address=consumer, expiration=str(int(time.time()) + 600))),
        http("v4 encrypt", "POST", "/api/services/encrypt", {"chainId": str(chain.chain_id)}, b"the files",
             {"Content-Type": "application/octet-stream"}),
        http("node encrypt", "POST", "/node/api/services/encrypt", {"chainId": str(chain.chain_id)}, b"node files",
             {"Content-Type": "application/octet-stream"}),
        http("v4 initializeCompute", "POST", "/api/services/initializeCompute", body={
            "datasets": [dataset], "algorithm": algorithm, "consumerAddress": consumer,
            "compute": {"env": "ocean-c2d-cpu", "validUntil": int(time.time()) + 900}}, headers=JSON),
        http("node initializeCompute", "POST", "/node/api/services/initializeCompute", body={
            "datasets": [dataset], "algorithm": algorithm, "environment": "ocean-c2d-cpu", "consumerAddress": consumer,
            "maxJobDuration": 600, "payment": {"chainId": chain.chain_id, "token": chain.contracts.OceanToken,
                                               "resources": [{"id": "cpu", "amount": 1}]}}, headers=JSON),
        http("node directCommand", "POST", "/node/directCommand", body={"command": "status"}, headers=JSON),
        {"kind": "http", "label": "node ddo", "event": proxy_event(
            "GET", f"/node/api/aquarius/assets/ddo/{samples.dataset.did}", resource="/node/api/aquarius/assets/ddo/{did}",
            path_parameters={"did": samples.dataset.did})},
        http("ocean.py v4 initializeCompute at /node", "POST", "/node/api/services/initializeCompute", body={
            "datasets": [dataset], "algorithm": algorithm, "consumerAddress": consumer,
            "compute": {"env": "ocean-c2d-cpu", "validUntil": int(time.time()) + 900}}, headers=JSON),
        {"kind": "clients", "label": "every client", "services": sorted(lean.AWS_SERVICES)},
        {"kind": "function", "label": "batch_job_events", "name": "batch_job_events", "event": bridge_event(
            "aws.batch", "Batch Job State Change",
            {"jobName": f"c2d-{JOB_RUNNING}", "jobId": BATCH_JOB, "jobQueue": queue, "status": "RUNNING",
             "startedAt": int(time.time() * 1000), "tags": {"c2d:jobId": JOB_RUNNING}})},
        {"kind": "function", "label": "runner_stage_events", "name": "runner_stage_events", "event": bridge_event(
            "ocean.c2d.runner", "Compute Job Stage Change", {"jobId": JOB_RUNNING, "status": 31,
                                                            "reason": "input 0: HTTP 404"})},
        {"kind": "function", "label": "reconcile_jobs", "name": "reconcile_jobs",
         "event": bridge_event("aws.events", "Scheduled Event", {})},
        {"kind": "function", "label": "register_asset", "name": "register_asset",
         "event": {"chainId": chain.chain_id, "nftAddress": samples.dataset.nftAddress}},
        {"kind": "function", "label": "index_assets", "name": "index_assets",
         "event": bridge_event("aws.events", "Scheduled Event", {})},
    ]
    return steps


@pytest.fixture(scope="module")
def backends() -> Any:
    with local_backends("served") as found:
        yield found


@pytest.fixture(scope="module")
def package_folder(packaged, tmp_path_factory) -> Path:
    return unpack(packaged.zip_path, tmp_path_factory.mktemp("served") / "task")


@pytest.fixture(scope="module")
def served(backends, package_folder) -> dict[str, Any]:
    result = backends.serve(package_folder, _steps(backends))
    result["by_label"] = {step["label"]: step for step in result["steps"]}
    print(json.dumps({step["label"]: [step.get("status"), round(step["ms"], 1)] for step in result["steps"]}))
    return result


def _answer(served: dict[str, Any], label: str, status: int = 200) -> Any:
    step = served["by_label"][label]
    assert "error" not in step, f"{label}: {step['error']}\n{served['stderr'][-3000:]}"
    assert step["status"] == status, f"{label}: {step['status']} {step['body']}\n{served['stderr'][-3000:]}"
    body = step["body"]
    try:
        return json.loads(body)
    except (TypeError, ValueError):
        return body


def test_the_package_runs_on_the_base_interpreter_alone(served, package_folder):
    """Nothing came from the venv or any site-packages: only the package and the standard library."""
    assert Path(served["executable"]).resolve() == Path(base_python()).resolve()
    stdlib = Path(sysconfig.get_paths("posix_prefix", vars={"base": sys.base_prefix})["stdlib"]).resolve()
    outside = [name for name in served["files"]
               if not Path(name).resolve().is_relative_to(package_folder.resolve())
               and not Path(name).resolve().is_relative_to(stdlib)]
    assert not outside
    assert not [entry for entry in served["path"] if "site-packages" in entry or entry.startswith(sys.prefix + "/")]
    assert served["import_ms"] > 0


def test_roots_nonces_and_environments_of_both_protocols(served, backends):
    provider = backends.chain.provider.address
    assert _answer(served, "v4 root")["providerAddress"] == provider
    assert _answer(served, "node root")["providerAddress"] == provider
    assert _answer(served, "v4 nonce") == {"nonce": 0}
    assert int(_answer(served, "node nonce")["nonce"]) == 0
    assert [env["id"] for env in _answer(served, "v4 environments")[str(backends.chain.chain_id)]][0] == "ocean-c2d-cpu"
    node_environments = _answer(served, "node environments")
    assert node_environments[0]["id"] == "ocean-c2d-cpu" and "providerGasBalance" in json.dumps(node_environments)


def test_signed_routes_of_both_protocols(served, backends):
    (status,) = _answer(served, "v4 signed status")
    assert (status["jobId"], status["status"], status["owner"]) == (JOB_FINISHED, 70, backends.consumer)
    assert status["resultsUrls"] and status["resultsUrls"][0].startswith(backends.env["AWS_ENDPOINT_URL"])
    step = served["by_label"]["v4 signed result"]
    assert step["status"] == 302 and step["headers"]["Location"].startswith(backends.env["AWS_ENDPOINT_URL"])
    assert [job["jobId"] for job in _answer(served, "node status")] == [JOB_RUNNING, JOB_FINISHED]
    assert _answer(served, "node signed stop")[0]["status"] == 70
    logs = served["by_label"]["node signed logs"]
    assert logs["status"] in (200, 404) and "error" not in logs, logs  # CloudWatch asked; moto has no stream
    assert _answer(served, "v4 auth token")["token"].count(".") == 2


def test_encrypt_of_both_protocols(served, backends):
    import ecies

    for label, plain in (("v4 encrypt", b"the files"), ("node encrypt", b"node files")):
        ciphertext = _answer(served, label, status=201)
        assert ecies.decrypt(backends.env["PROVIDER_PRIVATE_KEY"].removeprefix("0x"), bytes.fromhex(ciphertext[2:])) == plain


def test_chain_routes_of_both_protocols(served, backends):
    provider = backends.chain.provider.address
    quote = _answer(served, "v4 initializeCompute")
    assert quote["datasets"][0]["providerFee"]["providerFeeAddress"] == provider
    node_quote = _answer(served, "node initializeCompute")
    assert node_quote["payment"]["escrowAddress"] == backends.chain.contracts.Escrow
    assert "web3" in served["modules"] and "eth_account" in served["modules"]


def test_every_client_the_code_builds(served):
    step = served["by_label"]["every client"]
    assert "error" not in step, step
    assert step["clients"] == {service: service for service in lean.AWS_SERVICES}


def test_every_other_function_runs_once(served, backends):
    batch, runner = served["by_label"]["batch_job_events"], served["by_label"]["runner_stage_events"]
    assert batch.get("result") == {"action": "updated", "jobId": JOB_RUNNING, "status": 40}, batch
    assert runner.get("result") == {"action": "updated", "jobId": JOB_RUNNING, "status": 31}, runner
    reconciled = served["by_label"]["reconcile_jobs"]
    assert "error" not in reconciled and isinstance(reconciled["result"], dict), reconciled
    registered = served["by_label"]["register_asset"]
    assert "error" not in registered and registered["result"]["did"] == backends.samples.dataset.did, registered
    indexed = served["by_label"]["index_assets"]
    assert "error" not in indexed and [chain.get("error") for chain in indexed["result"]["chains"]] == [None], indexed


def test_ocean_node_s_asset_and_identity_routes_and_ocean_py_at_node(served, backends):
    """base58 (the peer id) and the asset routes are in the package; ocean.py's v4 request at /node
    is answered by the v4 route."""
    status = _answer(served, "node directCommand")
    assert status["id"].startswith("16Uiu2HA") and status["address"] == backends.chain.provider.address
    assert _answer(served, "node ddo")["id"] == backends.samples.dataset.did
    quote = _answer(served, "ocean.py v4 initializeCompute at /node")
    assert quote["datasets"][0]["providerFee"]["providerFeeAddress"] == backends.chain.provider.address


def test_no_function_imports_the_checkout_only_commands(served):
    """infra.lean leaves out iam and ec2, which only `python -m chalicelib.bootstrap --batch` uses."""
    commands = {path.removesuffix(".py").replace("/", ".") for path in lean.CHECKOUT_ONLY_CLIENTS}
    assert not commands & set(served["modules"])


def test_a_package_missing_a_model_or_a_module_fails(backends, package_folder, tmp_path):
    """What this test would see of a package pruned too far: the client or the route fails."""
    broken = tmp_path / "broken"
    shutil.copytree(package_folder, broken)
    shutil.rmtree(broken / "botocore" / "data" / "logs")
    shutil.rmtree(broken / "jwt")
    consumer = backends.consumer
    nonce, signature = backends.signed(consumer)
    result = backends.serve(broken, [
        {"kind": "clients", "label": "clients", "services": sorted(lean.AWS_SERVICES)},
        {"kind": "http", "label": "token", "event": proxy_event("GET", "/api/services/createAuthToken", {
            "address": consumer, "expiration": str(int(time.time()) + 600), "nonce": nonce, "signature": signature})},
    ])
    clients, token = result["steps"]
    assert "UnknownServiceError" in clients["error"]
    assert token["status"] == 500 and "ModuleNotFoundError" in result["stderr"]
