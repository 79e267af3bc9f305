"""Results released only when the data owner agrees (issue 22): a dataset that requires it (its
DDO's compute options, or the operator's RELEASE_REQUIRED) holds a job's results at 75 "Awaiting
release"; its publisher reviews the outputs and logs (computeAuditResult) and releases (70: the
consumer downloads) or refuses (76: outputs deleted, every version, logs kept, the receipt says
so); a request left unanswered past storageExpiry expires."""
from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from lifecycle_helpers import environments_json, initialize, order_both, post_start, start_body, stubbed_provider
from owner_helpers import LOGS, finish, get, node_signed, receipt_of, signed

OUTPUTS = {"result.csv": b"answer,42\n", "summary.json": b'{"rows": 3}\n'}
OWNER_ONLY = "Only the dataset's data NFT owner may read its audit log and decide on its jobs"


def _provider(chain, monkeypatch, **options: Any):
    return stubbed_provider(chain, monkeypatch, environments_json(chain), **options)


@pytest.fixture
def provider(aws, chain, client, monkeypatch):
    with _provider(chain, monkeypatch, compute={"releaseRequired": True}) as (batch, published):
        yield chain, batch, published


def start(client, provider, account=None) -> str:
    chain, batch, published = provider
    account = account or chain.consumer
    quote = initialize(client, published, account.address)
    dataset_tx, algorithm_tx = order_both(chain, published, quote, account)
    if not batch.registered:
        batch.expect_new_definition()
    batch.expect_submit()
    status, body = post_start(client, start_body(published, account, time.time_ns(), dataset_tx, algorithm_tx))
    assert status == 200, body
    return body[0]["jobId"]


def finish_now(client, job_id: str) -> None:
    """`finish`, then its end moved to now: the events carry the suites' fixed T0 (2023), and a
    request expires storageExpiry after the job's end."""
    from chalicelib.models import JobRecord

    finish(client, job_id, OUTPUTS)
    JobRecord.get(job_id).update(actions=[JobRecord.date_finished.set(int(time.time()))])


def storage_expiry() -> int:
    from chalicelib.compute.environments import environments

    return environments()["ocean-c2d-cpu"].storage_expiry


def job_status(client, account, job_id: str) -> dict:
    status, body, _ = get(client, "/api/services/compute", signed(account, job_id, jobId=job_id))
    assert status == 200, body
    return body[0]


def consumer_result(client, account, job_id: str, index: int):
    return get(client, "/api/services/computeResult", signed(account, job_id, str(index), jobId=job_id, index=index))


def review(client, account, did: str, job_id: str, index: int):
    return get(client, "/api/services/computeAuditResult",
               signed(account, did, job_id, str(index), documentId=did, jobId=job_id, index=index))


def decide(client, account, did: str, job_id: str, decision: str, node: bool = False):
    import json

    if node:
        body = node_signed(account, "releaseComputeResults", documentId=did, jobId=job_id, decision=decision)
        path = "/node/api/services/computeRelease"
    else:
        body = signed(account, did, job_id, decision, documentId=did, jobId=job_id, decision=decision)
        path = "/api/services/computeRelease"
    response = client.http.post(path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    return response.status_code, json.loads(response.body)


def _download(headers) -> bytes:
    return requests.get(headers["Location"], timeout=10).content


def test_a_held_job_waits_then_its_publisher_releases_it(client, provider):
    chain, _, published = provider
    did = published.dataset.did
    job_id = start(client, provider)
    # running: nothing of it reaches the consumer, the algorithm's log included
    assert job_status(client, chain.consumer, job_id)["release"]["state"] == "pending"
    logs = get(client, "/node/api/services/computeStreamableLogs",
               node_signed(chain.consumer, "getComputeStreamableLogs", jobId=job_id))
    assert logs[0] == 404 and logs[1]["error"] == "The job's results await its data owner's release"
    assert decide(client, chain.publisher, did, job_id, "release")[0] == 400  # not ended yet

    finish_now(client, job_id)
    held = job_status(client, chain.consumer, job_id)
    assert (held["status"], held["statusText"]) == (75, "Awaiting release")
    assert held["release"]["state"] == "pending" and held["release"]["required"] == [did]
    assert held["release"]["expiresAt"] == int(held["dateFinished"]) + storage_expiry()
    assert held["resultsUrls"] == [] and held["algorithmLogUrl"] is None, "no URL while held"
    assert consumer_result(client, chain.consumer, job_id, 0)[:2] == (
        400, {"error": "The job's results await its data owner's release"})
    receipt = receipt_of(client, chain.consumer, job_id)[1]["receipt"]
    assert receipt["status"] == 75 and receipt["release"]["state"] == "pending"
    assert receipt["release"]["expiresAt"] == held["release"]["expiresAt"]

    # the publisher reviews the outputs and logs; nobody else may
    status, _, headers = review(client, chain.publisher, did, job_id, 0)
    assert status == 302 and _download(headers) == OUTPUTS["result.csv"]
    status, _, headers = review(client, chain.publisher, did, job_id, len(OUTPUTS) + 1)
    assert status == 302 and _download(headers) == list(LOGS.values())[1][1]
    assert review(client, chain.consumer, did, job_id, 0)[:2] == (401, {"error": OWNER_ONLY})
    assert decide(client, chain.consumer, did, job_id, "release") == (401, {"error": OWNER_ONLY})

    status, body = decide(client, chain.publisher, did, job_id, "release")
    assert status == 200 and body[0]["status"] == 70 and body[0]["release"]["state"] == "released"
    assert body[0]["release"]["decisions"][did]["by"] == chain.publisher.address.lower()
    status, _, headers = consumer_result(client, chain.consumer, job_id, 1)
    assert status == 302 and _download(headers) == OUTPUTS["summary.json"]
    released = job_status(client, chain.consumer, job_id)
    assert len(released["resultsUrls"]) == len(OUTPUTS) and released["algorithmLogUrl"]
    receipt = receipt_of(client, chain.consumer, job_id)[1]["receipt"]
    assert receipt["status"] == 70 and receipt["release"]["state"] == "released"
    assert decide(client, chain.publisher, did, job_id, "refuse")[1] == {"error": "The job's results were already released"}


def test_a_refusal_deletes_the_outputs_keeps_the_logs_and_the_receipt_says_so(client, provider):
    from chalicelib import aws, services

    chain, _, published = provider
    did = published.dataset.did
    job_id = start(client, provider)
    finish_now(client, job_id)
    status, body = decide(client, chain.publisher, did, job_id, "refuse", node=True)  # at /node
    assert status == 200 and (body[0]["status"], body[0]["release"]["state"]) == (76, "refused")
    assert body[0]["statusText"] == "Results refused by the data owner"

    versions = aws.client("s3").list_object_versions(Bucket=services.settings().bucket, Prefix=f"jobs/{job_id}/")
    kept = {item["Key"].rsplit("/", 1)[-1] for item in versions.get("Versions", [])}
    assert not kept & set(OUTPUTS) and set(LOGS) <= kept, kept
    assert not versions.get("DeleteMarkers"), "every version deleted, not hidden behind a marker"
    assert consumer_result(client, chain.consumer, job_id, 0)[1] == {
        "error": "The job's data owner refused to release its results; the outputs were deleted"}
    assert review(client, chain.publisher, did, job_id, 0)[0] == 400
    status, _, headers = review(client, chain.publisher, did, job_id, len(OUTPUTS))  # a log, kept
    assert status == 302 and _download(headers) == list(LOGS.values())[0][1]
    receipt = receipt_of(client, chain.consumer, job_id)[1]["receipt"]
    assert receipt["status"] == 76 and receipt["release"]["state"] == "refused"
    assert receipt["release"]["outputsDeleted"] and all(item["deleted"] for item in receipt["outputs"])
    assert len(receipt["logs"]) == len(LOGS)


def test_an_unanswered_request_expires_after_storage_expiry(client, provider):
    from chalicelib.models import JobRecord

    chain, _, published = provider
    did = published.dataset.did
    job_id = start(client, provider)
    finish_now(client, job_id)
    record = JobRecord.get(job_id)
    record.update(actions=[JobRecord.date_finished.set(int(time.time()) - storage_expiry() - 60)])
    assert job_status(client, chain.consumer, job_id)["release"]["state"] == "expired"
    assert decide(client, chain.publisher, did, job_id, "release")[1] == {
        "error": "The job's data owner did not release its results in time; they will not be released"}
    assert consumer_result(client, chain.consumer, job_id, 0)[0] == 400
    assert receipt_of(client, chain.consumer, job_id)[1]["receipt"]["release"]["state"] == "expired"


def test_the_operator_may_require_release_per_dataset_or_publisher(aws, chain, client, monkeypatch):
    """RELEASE_REQUIRED lists the publisher: its datasets' jobs are held though their DDO says nothing."""
    with _provider(chain, monkeypatch, env={"RELEASE_REQUIRED": chain.publisher.address}) as (batch, published):
        job_id = start(client, (chain, batch, published))
        finish_now(client, job_id)
        assert job_status(client, chain.consumer, job_id)["status"] == 75


def test_a_job_on_a_dataset_that_does_not_require_it_is_not_held(aws, chain, client, monkeypatch):
    with _provider(chain, monkeypatch) as (batch, published):
        job_id = start(client, (chain, batch, published))
        finish_now(client, job_id)
        done = job_status(client, chain.consumer, job_id)
        assert done["status"] == 70 and "release" not in done
        assert decide(client, chain.publisher, published.dataset.did, job_id, "release")[1] == {
            "error": "This job's results do not await this dataset's release"}


def test_a_refusal_cut_short_is_finished_by_the_same_refusal_again(client, provider):
    """A Lambda that died between recording the refusal and deleting the outputs: the record
    says refused, the outputs are still there; the publisher's same call deletes them."""
    from chalicelib import aws, services
    from chalicelib.models import JobRecord

    chain, _, published = provider
    did = published.dataset.did
    job_id = start(client, provider)
    finish_now(client, job_id)
    record = JobRecord.get(job_id)
    cut_short = {**record.release, "state": "refused",
                 "decisions": {did: {"decision": "refused", "by": chain.publisher.address.lower(), "at": 1}}}
    record.update(actions=[JobRecord.release.set(cut_short), JobRecord.status.set(76)])
    assert consumer_result(client, chain.consumer, job_id, 0)[0] == 400, "refused: nothing served meanwhile"
    assert decide(client, chain.publisher, did, job_id, "release")[1] == {"error": "The job's results were already refused"}
    assert decide(client, chain.publisher, did, job_id, "refuse")[0] == 200
    versions = aws.client("s3").list_object_versions(Bucket=services.settings().bucket, Prefix=f"jobs/{job_id}/outputs/")
    assert not versions.get("Versions") and JobRecord.get(job_id).release["outputsDeleted"] is True


def test_every_publisher_who_required_it_must_release_and_two_decisions_cannot_both_win(aws):
    """Three inputs, two requiring a release (one in its compute options, one in its service's
    additionalInformation): one release leaves the job at 75; a decision taken on the record as
    it was read before that one is refused, whatever it says; the second release makes it 70."""
    from chalicelib.errors import BusinessError
    from chalicelib.models import JobRecord
    from chalicelib.owner.release import ReleaseDecisions, ReleasePolicy

    now = int(time.time())
    held = ReleasePolicy().held([("did:op:a", "0xa", {"compute": {"releaseRequired": True}}),
                                 ("did:op:b", "0xb", {"additionalInformation": {"releaseRequired": True}}),
                                 ("did:op:c", "0xc", {"compute": {"releaseRequired": "yes"}})])
    assert held == {"required": ["did:op:a", "did:op:b"], "state": "pending", "decisions": {}}
    JobRecord("multi", owner="0xconsumer", document_id="did:op:a", date_created=now - 60, date_finished=now,
              status=75, status_text="Awaiting release", environment="ocean-c2d-cpu", chain_id=8996,
              release=held).save()
    deleted: list[str] = []
    decisions = ReleaseDecisions(lambda job_id: deleted.append(job_id) or 0)
    before = JobRecord.get("multi")
    decisions.decide(JobRecord.get("multi"), "did:op:a", "0xa", "release", 3600)
    record = JobRecord.get("multi")
    assert int(record.status) == 75 and record.release["state"] == "pending"
    with pytest.raises(BusinessError, match="changed meanwhile"):
        decisions.decide(before, "did:op:b", "0xb", "refuse", 3600)
    assert deleted == [] and JobRecord.get("multi").release == record.release
    with pytest.raises(BusinessError, match="do not await this dataset's release"):
        decisions.decide(record, "did:op:c", "0xc", "refuse", 3600)
    decisions.decide(JobRecord.get("multi"), "did:op:b", "0xb", "release", 3600)
    record = JobRecord.get("multi")
    assert (int(record.status), record.status_text, record.release["state"]) == (70, "Job completed", "released")
    assert {did: item["by"] for did, item in record.release["decisions"].items()} == {"did:op:a": "0xa", "did:op:b": "0xb"}
