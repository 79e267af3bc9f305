"""Ocean Node's job options at /node (issue: Ocean Node's job options on AWS): `metadata` stored
and answered in both status views, `additionalViewers` who read a job on both protocols (signed
or with their own token) but never stop or delete it, `terminationDetails {OOMKilled, exitCode}`
from Batch's container reason and exit code, and `policyServer` refused by name.
Real contracts on anvil, moto, Batch through botocore's Stubber, events through the handlers."""
from __future__ import annotations

import json
import time
import urllib.parse

import pytest
import requests

from test_events import batch_event
from test_node_protocol import (  # noqa: F401 - `node` is a fixture
    API, JOB_QUEUE_ARN, _token, deliver, finish, free_body, free_job, get, node, post, signed,
)

METADATA = {"purpose": "audit", "run": 3, "ratio": 0.5, "final": True}
OOM = "OutOfMemoryError: Container killed due to memory usage"


def _v4_status(client, address: str, job_id: str, token: str | None = None) -> list[dict]:
    query = {"consumerAddress": address, "jobId": job_id}
    headers = {}
    if token:
        query["nonce"] = time.time_ns()
        headers["Authorization"] = token
    response = client.http.get("/api/services/compute?" + urllib.parse.urlencode(query), headers=headers)
    assert response.status_code == 200, response.body
    return json.loads(response.body)


def _node_status(client, address: str, job_id: str | None = None) -> list[dict]:
    return json.loads(get(client, "/compute", consumerAddress=address, **({"jobId": job_id} if job_id else {})).body)


def test_metadata_is_stored_and_answered_in_both_views(client, node):
    chain, _, _ = node
    job = free_job(client, node, metadata=METADATA)
    assert job["metadata"] == METADATA, "the start's answer shows it"
    (node_view,) = _node_status(client, chain.consumer.address, job["jobId"])
    (v4_view,) = _v4_status(client, chain.consumer.address, job["jobId"])
    assert node_view["metadata"] == v4_view["metadata"] == METADATA
    (listed,) = _node_status(client, chain.consumer.address)
    assert listed["metadata"] == METADATA, "a listing (its projected attributes) shows it too"
    plain = free_job(client, node, account=chain.other, new_definition=False)
    assert "metadata" not in plain and "metadata" not in _node_status(client, chain.other.address)[0]


@pytest.mark.parametrize("metadata,why", [
    ({f"k{i}": i for i in range(33)}, "at most 32"),
    ({"nested": {"a": 1}}, "string"),
    ({"list": [1]}, "string"),
    ({"big": "x" * 1025}, "1024"),
    ({f"k{i}": "x" * 1000 for i in range(5)}, "4096 bytes"),
    ({"": 1}, "at least 1"),
    ({"a b": 1}, "pattern"),
    ("labels", "dictionary"),
])
def test_metadata_out_of_bounds_is_refused_by_name(client, node, metadata, why):
    chain, _, published = node
    status, body = post(client, "/freeCompute", free_body(published, chain.consumer, metadata=metadata))
    assert status == 400 and "metadata" in " ".join(body["errors"]), body
    assert why in json.dumps(body["errors"]), body


def test_additional_viewers_read_on_both_protocols_but_never_stop_or_delete(client, node):
    chain, batch, published = node
    consumer, viewer, stranger = chain.consumer, chain.other, chain.publisher
    job_id = free_job(client, node, additionalViewers=[viewer.address.lower(), viewer.address])["jobId"]
    finish(client, job_id)

    # status: Ocean Node's (unsigned) by the job's id, v4's signed with the viewer's own token (URLs)
    (seen,) = _node_status(client, viewer.address, job_id)
    assert seen["jobId"] == job_id and seen["owner"] == consumer.address and seen["status"] == 70
    viewer_token = _token(client, viewer)
    (v4,) = _v4_status(client, viewer.address, job_id, token=viewer_token)
    assert v4["jobId"] == job_id and v4["resultsUrls"], "a viewer's authenticated status has the download URLs"
    assert requests.get(v4["resultsUrls"][0], timeout=10).content == b"answer,42\n"
    assert _node_status(client, viewer.address) == [], "a viewer's own listing is its own jobs"
    assert _node_status(client, stranger.address, job_id) == []

    # results and logs: signed, or with the viewer's token (Ocean Node: no nonce, no signature)
    outputs = [r for r in seen["results"] if r["type"] == "output"]
    response = get(client, "/computeResult", jobId=job_id, index=outputs[0]["index"], **signed(viewer, "getComputeResult"))
    assert response.status_code == 302 and requests.get(response.headers["Location"], timeout=10).content == b"answer,42\n"
    response = get(client, "/computeStreamableLogs", headers={"Authorization": viewer_token}, jobId=job_id,
                   consumerAddress=viewer.address)
    assert response.status_code == 200 and b"read 60 rows" in response.body
    v4_result = client.http.get("/api/services/computeResult?" + urllib.parse.urlencode(
        {"consumerAddress": viewer.address, "jobId": job_id, "index": outputs[0]["index"], "nonce": time.time_ns()}),
        headers={"Authorization": viewer_token})
    assert v4_result.status_code == 302
    for forbidden in (get(client, "/computeResult", jobId=job_id, index=0, **signed(stranger, "getComputeResult")),
                      get(client, "/computeStreamableLogs", jobId=job_id, **signed(stranger, "getComputeStreamableLogs"))):
        assert forbidden.status_code == 404

    # never stop or delete, on either protocol: the job is not found for them
    path = API + "/compute?" + urllib.parse.urlencode({"jobId": job_id, **signed(viewer, "stopCompute")})
    assert client.http.put(path).status_code == 404
    for method in (client.http.put, client.http.delete):
        response = method("/api/services/compute?" + urllib.parse.urlencode(
            {"consumerAddress": viewer.address, "jobId": job_id, "nonce": time.time_ns()}),
            headers={"Authorization": viewer_token})
        assert response.status_code == 404, response.body
    assert _node_status(client, consumer.address, job_id)[0]["status"] == 70, "the job is untouched"


def test_additional_viewers_are_bounded_addresses(client, node):
    chain, _, published = node
    for viewers, why in (([f"0x{i:040x}" for i in range(17)], "at most 16"), (["nope"], "pattern"), ("0x" + "1" * 40, "list")):
        status, body = post(client, "/freeCompute", free_body(published, chain.consumer, additionalViewers=viewers))
        assert status == 400 and "additionalViewers" in " ".join(body["errors"]) and why in json.dumps(body), body


def test_termination_details_say_oom_killed_and_exit_code_in_both_views(client, node):
    chain, _, _ = node
    consumer = chain.consumer
    killed = free_job(client, node)["jobId"]
    deliver(client, batch_event(killed, "FAILED", batch_job_id="batch-free", queue=JOB_QUEUE_ARN,
                                exits={"configure": 0, "algorithm": 137, "publish": 0}, reasons={"algorithm": OOM},
                                reason="Essential container in task exited"))
    (node_view,) = _node_status(client, consumer.address, killed)
    (v4_view,) = _v4_status(client, consumer.address, killed)
    assert node_view["status"] == 41
    assert node_view["terminationDetails"] == v4_view["terminationDetails"] == {
        "OOMKilled": True, "exitCode": 137, "reason": "OutOfMemoryError"}

    completed = free_job(client, node, account=chain.other, new_definition=False)["jobId"]
    finish(client, completed)
    (done,) = _node_status(client, chain.other.address, completed)
    assert (done["terminationDetails"]["OOMKilled"], done["terminationDetails"]["exitCode"]) == (False, 0)


def test_a_stopped_job_says_it_was_not_oom_killed(client, node):
    chain, batch, _ = node
    job_id = free_job(client, node)["jobId"]
    batch.expect_terminate()
    path = API + "/compute?" + urllib.parse.urlencode({"jobId": job_id, **signed(chain.consumer, "stopCompute")})
    (stopped,) = json.loads(client.http.put(path).body)
    assert stopped["terminationDetails"] == {"OOMKilled": False, "exitCode": None, "reason": "Job stopped by its owner"}


def test_policy_server_is_refused_by_name_without_one_configured(client, node):
    chain, _, published = node
    status, body = post(client, "/freeCompute", free_body(published, chain.consumer, policyServer={"sessionId": "x"}))
    assert (status, body["errors"]) == (400, {"policyServer": ["not supported: this provider has no policy server configured"]})


def test_spec_documents_the_options_and_what_status_answers(client):
    spec = json.loads(client.http.get("/spec").body)
    for path in ("/node/api/services/compute", "/node/api/services/freeCompute"):
        documented = json.dumps(spec["paths"][path]["post"])
        for field in ("metadata", "additionalViewers", "policyServer"):
            assert field in json.dumps(spec), field
        assert "requestBody" in documented
    text = json.dumps(spec)
    assert "may read the job's status, results and logs" in text and "at most 32 keys" in text
    assert "no policy server configured" in text
    status = spec["components"]["schemas"]["JobStatus"]["properties"]
    assert "OOMKilled" in status["terminationDetails"]["properties"] and "metadata" in status
