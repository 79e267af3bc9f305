"""The whole job lifecycle through the API: real orders on anvil, moto for DynamoDB and S3,
Batch through botocore's Stubber, events driven through the Lambda event handlers."""
from __future__ import annotations

import hashlib
import json
import time
import urllib.parse

import pytest
import requests

from lifecycle_helpers import (
    ALGORITHM_CODE, DATA_URL, consumer_key, environments_json, initialize, order_both, post_start, publish_samples,
    start_body, stubbed_provider,
)
from signing import sign
from test_events import batch_event, runner_event

JOB_QUEUE_ARN = "arn:aws:batch:us-east-1:123456789012:job-queue/ocean-c2d-cpu"


@pytest.fixture
def provider(aws, chain, client, monkeypatch):
    with stubbed_provider(chain, monkeypatch, environments_json(chain)) as (batch, published):
        yield chain, batch, published


def signed_query(account, job_id="", document_id="", nonce=None, **extra):
    nonce = nonce or time.time_ns()
    params = {"consumerAddress": account.address, "nonce": nonce,
              "signature": sign(consumer_key(account), account.address + job_id + document_id + str(nonce)), **extra}
    if job_id:
        params["jobId"] = job_id
    if document_id:
        params["documentId"] = document_id
    return "?" + urllib.parse.urlencode(params)


def started_job(client, provider, account=None):
    chain, batch, published = provider
    account = account or chain.consumer
    quote = initialize(client, published, account.address)
    dataset_tx, algorithm_tx = order_both(chain, published, quote, account)
    batch.expect_new_definition()
    batch.expect_submit()
    status, body = post_start(client, start_body(published, account, time.time_ns(), dataset_tx, algorithm_tx))
    assert status == 200, body
    return body[0], dataset_tx, algorithm_tx


def deliver(client, event):
    response = client.lambda_.invoke("batch_job_events" if event["source"] == "aws.batch" else "runner_stage_events", event)
    return response.payload


def test_full_lifecycle(client, provider):
    chain, batch, published = provider
    job, dataset_tx, _ = started_job(client, provider)
    assert job["status"] == 1 and job["owner"] == chain.consumer.address and job["agreementId"] == dataset_tx
    submitted = batch.submitted[0]
    algorithm = submitted["ecsPropertiesOverride"]["taskProperties"][0]["containers"][1]
    algorithm_seconds = int({e["name"]: e["value"] for e in algorithm["environment"]}["C2D_MAX_SECONDS"])
    assert 60 <= algorithm_seconds <= 3600
    assert submitted["timeout"]["attemptDurationSeconds"] == algorithm_seconds + 1800  # + configure/publish margin
    # the only dataset was published with allowNetworkAccess: true (publish_asset's default), so
    # the start path chose the network-allowed UID (tests/compute/test_network_policy.py: the rest),
    # on the environment's network queue, whose instances run no sealed job
    assert published.dataset.ddo["services"][0]["compute"]["allowNetworkAccess"] is True
    assert submitted["jobQueue"] == "ocean-c2d-cpu-net"
    (definition,) = batch.registered
    containers = definition["ecsProperties"]["taskProperties"][0]["containers"]
    assert containers[1]["name"] == "algorithm" and containers[1]["user"] == "4001:4001"
    assert {"name": "ALGORITHM_UID", "value": "4001"} in containers[0]["environment"]
    assert {"type": "VCPU", "value": "2"} in algorithm["resourceRequirements"]
    assert {"type": "MEMORY", "value": "4096"} in algorithm["resourceRequirements"]
    assert DATA_URL not in json.dumps(batch.submitted), "decrypted URLs never reach Batch"
    from chalicelib import aws, services

    from chalicelib.job_key import open_manifest
    from chalicelib.models import JobRecord

    # the manifest is sealed with the job's own key, which only configure and publish get, and
    # handed to the job at the version the API wrote (issue 18, point 2)
    key = JobRecord.get(job["jobId"]).runner_key
    overrides = {c["name"]: {e["name"]: e["value"] for e in c["environment"]}
                 for c in submitted["ecsPropertiesOverride"]["taskProperties"][0]["containers"]}
    assert overrides["configure"]["C2D_JOB_KEY"] == overrides["publish"]["C2D_JOB_KEY"] == key
    assert "C2D_JOB_KEY" not in overrides["algorithm"]
    uri = overrides["configure"]["MANIFEST_URI"]
    version = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)["versionId"][0]
    sealed = aws.client("s3").get_object(Bucket=services.settings().bucket, Key=f"jobs/{job['jobId']}/manifest.json",
                                         VersionId=version)["Body"].read()
    assert DATA_URL.encode() not in sealed and b"s3cr3t" not in sealed
    manifest = open_manifest(key, job["jobId"], sealed)
    assert manifest["inputs"][0]["files"][0]["url"] == DATA_URL
    assert manifest["algorithm"]["algocustomdata"] == {"threshold": 3}
    # pinned at start: the runner places the algorithm only if it still has this sha256 (C7)
    assert manifest["algorithm"]["checksums"] == [hashlib.sha256(ALGORITHM_CODE).hexdigest()]

    job_id = job["jobId"]
    for event in (batch_event(job_id, "RUNNABLE", batch_job_id="batch-1", queue=JOB_QUEUE_ARN),
                  batch_event(job_id, "RUNNING", batch_job_id="batch-1", queue=JOB_QUEUE_ARN),
                  runner_event(job_id, 60)):
        deliver(client, event)
    s3 = aws.client("s3")
    s3.put_object(Bucket=services.settings().bucket, Key=f"jobs/{job_id}/outputs/result.csv", Body=b"answer,42\n")
    deliver(client, runner_event(job_id, 70, bucket=services.settings().bucket))
    deliver(client, batch_event(job_id, "SUCCEEDED", batch_job_id="batch-1", queue=JOB_QUEUE_ARN,
                                exits={"configure": 0, "algorithm": 0, "publish": 0}))

    response = client.http.get("/api/services/compute" + signed_query(chain.consumer, job_id))
    status = json.loads(response.body)[0]
    assert status["status"] == 70 and status["dateFinished"] and status["results"][0]["filename"] == "result.csv"
    assert key not in response.body.decode(), "the job's key is never shown"
    assert status["resultsUrls"] and status["algorithmLogUrl"]

    nonce = time.time_ns()
    response = client.http.get("/api/services/computeResult?" + urllib.parse.urlencode({
        "consumerAddress": chain.consumer.address, "jobId": job_id, "index": 0, "nonce": nonce,
        "signature": sign(consumer_key(chain.consumer), chain.consumer.address + job_id + "0" + str(nonce))}))
    assert response.status_code == 302
    assert requests.get(response.headers["Location"], timeout=10).content == b"answer,42\n"

    environments_now = json.loads(client.http.get("/api/services/computeEnvironments").body)
    assert environments_now[str(chain.chain_id)][0]["currentJobs"] == 0


def test_unsigned_status_is_reduced_and_others_see_nothing(client, provider):
    chain, batch, published = provider
    job, _, _ = started_job(client, provider)
    unsigned = json.loads(client.http.get(f"/api/services/compute?consumerAddress={chain.consumer.address}").body)
    assert unsigned[0]["jobId"] == job["jobId"] and unsigned[0]["resultsUrls"] == [] and unsigned[0]["algorithmLogUrl"] is None
    other = client.http.get("/api/services/compute" + signed_query(chain.other, job["jobId"]))
    assert other.status_code == 404
    assert json.loads(client.http.get(f"/api/services/compute?consumerAddress={chain.other.address}").body) == []


def test_currentjobs_counts_running_jobs(client, provider):
    chain, _, _ = provider
    started_job(client, provider)
    environments_now = json.loads(client.http.get(f"/api/services/computeEnvironments?chainId={chain.chain_id}").body)
    assert environments_now[str(chain.chain_id)][0]["currentJobs"] == 1


def test_stop_and_delete_own_job_but_not_anothers(client, provider):
    chain, batch, _ = provider
    job, _, _ = started_job(client, provider)
    job_id = job["jobId"]
    assert client.http.put("/api/services/compute" + signed_query(chain.other, job_id)).status_code == 404
    assert client.http.delete("/api/services/compute" + signed_query(chain.other, job_id)).status_code == 404
    batch.expect_terminate()
    stopped = json.loads(client.http.put("/api/services/compute" + signed_query(chain.consumer, job_id)).body)
    assert stopped[0]["status"] == 7 and stopped[0]["dateFinished"]
    from chalicelib import aws, services

    s3 = aws.client("s3")
    bucket = services.settings().bucket
    s3.put_object(Bucket=bucket, Key=f"jobs/{job_id}/outputs/x.txt", Body=b"x")
    deleted = json.loads(client.http.delete("/api/services/compute" + signed_query(chain.consumer, job_id)).body)
    assert deleted[0]["status"] == 8
    assert s3.list_objects_v2(Bucket=bucket, Prefix=f"jobs/{job_id}/").get("KeyCount", 0) == 0
    # a late Batch event never revives a deleted job
    deliver(client, batch_event(job_id, "FAILED", batch_job_id="batch-1", queue=JOB_QUEUE_ARN, reason="c2d-stop: x"))
    again = json.loads(client.http.get("/api/services/compute" + signed_query(chain.consumer, job_id)).body)
    assert again[0]["status"] == 8
    environments_now = json.loads(client.http.get("/api/services/computeEnvironments").body)
    assert environments_now[str(chain.chain_id)][0]["currentJobs"] == 0


def test_order_starts_at_most_one_job(client, provider):
    """The same start again (same owner, same orders, new nonce) answers the job those orders
    made and dispatches nothing more; the dataset's order with another algorithm order is
    another start, and its order is used."""
    chain, batch, published = provider
    job, dataset_tx, algorithm_tx = started_job(client, provider)
    status, body = post_start(client, start_body(published, chain.consumer, time.time_ns(), dataset_tx, algorithm_tx))
    assert status == 200 and [j["jobId"] for j in body] == [job["jobId"]], body
    assert len(batch.submitted) == 1
    from devstack.contracts import OCEAN_UNIT
    from devstack.orders import mint_datatokens, start_order

    quote = initialize(client, published, chain.consumer.address)
    mint_datatokens(chain.w3, chain.publisher, published.algorithm.datatoken, chain.consumer.address, OCEAN_UNIT)
    other_algorithm_tx = start_order(chain.w3, consumer_key(chain.consumer), published.algorithm.datatoken, 0,
                                     quote["algorithm"]["providerFee"])
    status, body = post_start(client, start_body(published, chain.consumer, time.time_ns(), dataset_tx, other_algorithm_tx))
    assert status == 400 and body == {"error": {"dataset.transferTxId": "order_already_used"}}
    assert len(batch.submitted) == 1


def test_failed_submit_releases_the_order_and_ends_the_job(client, provider):
    chain, batch, published = provider
    quote = initialize(client, published, chain.consumer.address)
    dataset_tx, algorithm_tx = order_both(chain, published, quote)
    batch.expect_new_definition()
    batch.expect_submit_failure()
    status, body = post_start(client, start_body(published, chain.consumer, time.time_ns(), dataset_tx, algorithm_tx))
    assert status == 503 and "Batch is down" not in json.dumps(body)
    jobs = json.loads(client.http.get(f"/api/services/compute?consumerAddress={chain.consumer.address}").body)
    assert [job["status"] for job in jobs] == [31], "the job record ends in a failure state"
    environments_now = json.loads(client.http.get("/api/services/computeEnvironments").body)
    assert environments_now[str(chain.chain_id)][0]["currentJobs"] == 0
    batch.expect_submit("batch-2")  # the definition is known now: no second RegisterJobDefinition
    status, body = post_start(client, start_body(published, chain.consumer, time.time_ns(), dataset_tx, algorithm_tx))
    assert status == 200, body


def test_capacity_full(client, provider, monkeypatch):
    chain, batch, published = provider
    from chalicelib import services
    from chalicelib.models import EnvironmentUsage

    EnvironmentUsage("ocean-c2d-cpu", running=5).save()
    quote = initialize(client, published, chain.consumer.address)
    dataset_tx, algorithm_tx = order_both(chain, published, quote)
    status, body = post_start(client, start_body(published, chain.consumer, time.time_ns(), dataset_tx, algorithm_tx))
    assert status == 400 and "capacity" in body["error"]
    assert services.usage_counter().current(["ocean-c2d-cpu"]) == {"ocean-c2d-cpu": 5}


def test_order_of_another_consumer_is_refused(client, provider):
    chain, batch, published = provider
    quote = initialize(client, published, chain.other.address)
    dataset_tx, algorithm_tx = order_both(chain, published, quote, chain.other)
    status, body = post_start(client, start_body(published, chain.consumer, time.time_ns(), dataset_tx, algorithm_tx))
    assert status == 400 and body["error"] == {"dataset.serviceId": "order_invalid"}


def test_initialize_reports_a_valid_order(client, provider):
    chain, batch, published = provider
    quote = initialize(client, published, chain.consumer.address)
    fee = quote["datasets"][0]["providerFee"]
    assert int(fee["providerFeeAmount"]) > 0 and fee["providerFeeToken"] == chain.contracts.OceanToken
    assert int(quote["algorithm"]["providerFee"]["providerFeeAmount"]) == 0
    dataset_tx, _ = order_both(chain, published, quote)
    again = initialize(client, published, chain.consumer.address, valid_until=int(fee["validUntil"]) - 60,
                       transferTxId=dataset_tx)
    assert again["datasets"][0]["validOrder"] == dataset_tx and "providerFee" not in again["datasets"][0]
    later = initialize(client, published, chain.consumer.address, valid_until=int(fee["validUntil"]) + 600,
                       transferTxId=dataset_tx)
    assert later["datasets"][0]["validOrder"] == dataset_tx and "providerFee" in later["datasets"][0]


def test_raw_algorithm_refused_when_not_allowed(client, provider):
    chain, batch, published = provider
    quote = initialize(client, published, chain.consumer.address)
    dataset_tx, _ = order_both(chain, published, quote)
    body = start_body(published, chain.consumer, time.time_ns(), dataset_tx, "0x" + "00" * 32)
    body["algorithm"] = {"meta": {"rawcode": "print(1)", "container": {"entrypoint": "python $ALGO", "image": "python",
                                                                       "tag": "3.11", "checksum": "sha256:" + "cd" * 32}}}
    status, response = post_start(client, body)
    assert status == 400 and response["error"] == {"dataset": "no_raw_algo_allowed"}


@pytest.mark.parametrize("trusted, accepted", [("publisher", True), ("other", False)])
def test_trusted_algorithm_publishers_are_the_algorithm_nft_owner(client, provider, trusted, accepted):
    """publisherTrustedAlgorithmPublishers is checked against the algorithm NFT's owner on chain."""
    from chalicelib import services
    from devstack.publish import ecies_encrypt_for

    chain, batch, _ = provider
    owner = getattr(chain, trusted).address
    published = publish_samples(chain, ecies_encrypt_for(chain.provider_public_key), services.settings().provider_url,
                                trusted_publishers=(owner,))
    for asset in (published.dataset, published.algorithm):
        services.asset_resolver().register(chain.chain_id, asset.nftAddress)
    quote = initialize(client, published, chain.consumer.address) if accepted else None
    if not accepted:
        response = client.http.post("/api/services/initializeCompute", headers={"Content-Type": "application/json"},
                                    body=json.dumps({
            "datasets": [{"documentId": published.dataset.did, "serviceId": published.dataset.serviceId}],
            "algorithm": {"documentId": published.algorithm.did, "serviceId": published.algorithm.serviceId},
            "compute": {"env": "ocean-c2d-cpu", "validUntil": int(time.time()) + 600},
            "consumerAddress": chain.consumer.address}))
        assert response.status_code == 400
        assert json.loads(response.body)["error"] == {"dataset": "not_trusted_algo_publisher"}
        return
    dataset_tx, algorithm_tx = order_both(chain, published, quote)
    batch.expect_new_definition()
    batch.expect_submit()
    status, body = post_start(client, start_body(published, chain.consumer, time.time_ns(), dataset_tx, algorithm_tx))
    assert status == 200, body


def nonceless_stop(account, job_id, nonce=None, sign_for=None):
    """ocean.js 3.x's stop: signed over consumerAddress + jobId, the nonce sent but not signed."""
    params = {"consumerAddress": account.address, "nonce": nonce or time.time_ns(),
              "signature": sign(consumer_key(sign_for or account), account.address + job_id)}
    if job_id:
        params["jobId"] = job_id
    return "?" + urllib.parse.urlencode(params)


def test_ocean_js3_stop_signature_stops_one_named_job_only(client, provider):
    chain, batch, _ = provider
    job, _, _ = started_job(client, provider)
    job_id = job["jobId"]
    # not for delete, not without a jobId, not signed by another key, not with a used nonce
    assert client.http.delete("/api/services/compute" + nonceless_stop(chain.consumer, job_id)).status_code == 400
    assert client.http.put("/api/services/compute" + nonceless_stop(chain.consumer, "")).status_code == 400
    assert client.http.put("/api/services/compute" + nonceless_stop(chain.consumer, job_id, sign_for=chain.other)
                           ).status_code == 400
    batch.expect_terminate()
    nonce = time.time_ns()
    stopped = client.http.put("/api/services/compute" + nonceless_stop(chain.consumer, job_id, nonce))
    assert stopped.status_code == 200 and json.loads(stopped.body)[0]["status"] == 7
    replayed = client.http.put("/api/services/compute" + nonceless_stop(chain.consumer, job_id, nonce))
    assert replayed.status_code == 400, "the nonce is still consumed"


def test_ocean_js3_delete_signs_the_next_nonce_without_sending_it(client, provider):
    chain, batch, published = provider
    job, _, _ = started_job(client, provider)
    job_id, did, account = job["jobId"], published.dataset.did, chain.consumer
    current = json.loads(client.http.get(f"/api/services/nonce?userAddress={account.address}").body)["nonce"]

    def delete_signed_for(nonce: int) -> int:
        signature = sign(consumer_key(account), account.address + job_id + did + str(nonce))
        query = urllib.parse.urlencode({"consumerAddress": account.address, "jobId": job_id, "documentId": did,
                                        "signature": signature})
        return client.http.delete("/api/services/compute?" + query).status_code

    assert delete_signed_for(int(current) + 2) == 400, "only the next nonce is implied"
    batch.expect_terminate()
    assert delete_signed_for(int(current) + 1) == 200
    assert delete_signed_for(int(current) + 1) == 400, "and it is consumed"
    assert json.loads(client.http.get(f"/api/services/nonce?userAddress={account.address}").body)["nonce"] == int(current) + 1
