"""The Ocean Node protocol at /node, in process: every route and its errors, with real orders
on anvil, moto for DynamoDB/S3/CloudWatch Logs, Batch through botocore's Stubber, and events
through the Lambda handlers. Signatures are made as ocean.js makes them (address + nonce + command)."""
from __future__ import annotations

import json
import time
import urllib.parse

import pytest
import requests

from lifecycle_helpers import (
    consumer_key, environments_json, order_both, stubbed_provider,
)
from signing import sign

from chalicelib.compute.job_placement import batch_timeout_seconds
from test_events import TASK_ID, batch_event, runner_event

JOB_QUEUE_ARN = "arn:aws:batch:us-east-1:123456789012:job-queue/ocean-c2d-cpu"
API = "/node/api/services"
RAW = {"meta": {"rawcode": "print('hello')", "container": {"entrypoint": "python $ALGO", "image": "python",
                                                          "tag": "3.11", "checksum": "sha256:" + "cd" * 32}}}


def free_environments(chain, per_consumer=1, max_free=2, access=()) -> str:
    configured = json.loads(environments_json(chain))
    configured[0]["freeCompute"] = {"maxJobDuration": 120, "maxJobs": max_free, "maxJobsPerConsumer": per_consumer,
                                    "access": list(access)}
    return json.dumps(configured)


@pytest.fixture
def node(aws, chain, client, monkeypatch):
    """A provider whose cpu environment has a free tier and whose operator allows the chain's
    publisher's datasets for free compute."""
    env = {"FREE_COMPUTE_PUBLISHERS": chain.publisher.address,
           "NFT_FACTORIES": json.dumps({str(chain.chain_id): chain.contracts.ERC721Factory})}
    with stubbed_provider(chain, monkeypatch, free_environments(chain), allow_raw=True, env=env) as (batch, published):
        monkeypatch.setattr("chalicelib.aws.client", _clients(batch.client))
        yield chain, batch, published


def _clients(batch_client):
    """aws.client as it is, except Batch: the Stubber's client (describe_jobs for the log stream)."""
    from chalicelib import aws

    real = aws.client

    def client(service: str):
        return batch_client if service == "batch" else real(service)

    return client


def signed(account, command: str, nonce: int | None = None) -> dict:
    nonce = nonce or time.time_ns()
    return {"consumerAddress": account.address, "nonce": str(nonce),
            "signature": sign(consumer_key(account), account.address + str(nonce) + command)}


def post(client, path: str, body: dict, headers: dict | None = None):
    response = client.http.post(API + path, body=json.dumps(body), headers={"Content-Type": "application/json", **(headers or {})})
    return response.status_code, json.loads(response.body) if response.body else None


def get(client, path: str, headers: dict | None = None, **params):
    response = client.http.get(API + path + ("?" + urllib.parse.urlencode(params) if params else ""), headers=headers or {})
    return response


def free_body(published, account, algorithm=None, **extra) -> dict:
    return {**signed(account, "freeStartCompute"), "environment": "ocean-c2d-cpu",
            "datasets": [{"documentId": published.dataset.did, "serviceId": published.dataset.serviceId}],
            "algorithm": algorithm or {"documentId": published.algorithm.did, "serviceId": published.algorithm.serviceId},
            **extra}


def free_job(client, node, account=None, new_definition=True, **extra) -> dict:
    chain, batch, published = node
    if new_definition:  # the dispatcher registers a job definition once per algorithm container
        batch.expect_new_definition()
    batch.expect_submit("batch-free")
    status, body = post(client, "/freeCompute", free_body(published, account or chain.consumer, **extra))
    assert status == 200, body
    return body[0]


def deliver(client, event):
    return client.lambda_.invoke("batch_job_events" if event["source"] == "aws.batch" else "runner_stage_events", event).payload


def finish(client, job_id: str, batch_job_id: str = "batch-free"):
    from chalicelib import aws, services

    bucket = services.settings().bucket
    s3 = aws.client("s3")
    s3.put_object(Bucket=bucket, Key=f"jobs/{job_id}/outputs/result.csv", Body=b"answer,42\n")
    s3.put_object(Bucket=bucket, Key=f"jobs/{job_id}/logs/algorithm.log", Body=b"read 60 rows\n")
    deliver(client, runner_event(job_id, 70, bucket=bucket))
    deliver(client, batch_event(job_id, "SUCCEEDED", batch_job_id=batch_job_id, queue=JOB_QUEUE_ARN,
                                exits={"configure": 0, "algorithm": 0, "publish": 0}))


# -- discovery -------------------------------------------------------------------------------

def test_root_document_lists_node_services_relative_to_the_prefix(client):
    from chalicelib import services

    root = json.loads(client.http.get("/node").body)
    endpoints = root["serviceEndpoints"]
    assert set(endpoints) == {"nonce", "encrypt", "computeEnvironments", "initializeCompute", "computeStart",
                              "freeCompute", "computeStatus", "computeStop", "computeResult", "computeStreamableLogs",
                              "generateAuthToken", "invalidateAuthToken",
                              # v4's only, for ocean.py (it joins every path to the host's root)
                              "computeDelete", "create_auth_token", "delete_auth_token"}
    assert endpoints["computeDelete"] == ["DELETE", "/api/services/compute"]
    assert endpoints["computeStart"] == ["POST", "/api/services/compute"]
    assert endpoints["generateAuthToken"] == ["POST", "/api/services/auth/token"]
    assert endpoints["invalidateAuthToken"] == ["POST", "/api/services/auth/token/invalidate"]
    assert all(not path.startswith("/node") for _, path in endpoints.values())
    address = services.provider_address()
    assert root["providerAddresses"] == {"8996": address} and root["chainIds"] == [8996]
    key = bytes.fromhex(root["nodePublicKey"][2:])
    from coincurve import PublicKey
    from chalicelib.auth.signatures import keccak256, to_checksum_address

    uncompressed = PublicKey(key).format(compressed=False)
    assert len(key) == 33 and to_checksum_address("0x" + keccak256(uncompressed[1:])[-20:].hex()) == address
    v4 = json.loads(client.http.get("/").body)["serviceEndpoints"]
    assert v4["nonce"] == ["GET", "/api/services/nonce"] and "freeCompute" not in v4
    assert all(path.startswith("/api/services/") for _, path in v4.values())


def test_nonce_is_one_space_for_both_protocols(client, aws):
    """A nonce used on one protocol is used on the other: no replay across the two edges."""
    from signing import CONSUMER_KEY, address

    consumer = address(CONSUMER_KEY)
    nonce = time.time_ns()
    body = {"address": consumer, "nonce": str(nonce),
            "signature": sign(CONSUMER_KEY, consumer + str(nonce) + "createAuthToken")}
    status, answer = post(client, "/auth/token", body)
    assert status == 200 and answer["token"]
    for path in ("/node/api/services/nonce", "/api/services/nonce"):
        assert json.loads(client.http.get(f"{path}?userAddress={consumer}").body) == {"nonce": nonce}
    v4 = client.http.get("/api/services/createAuthToken?" + urllib.parse.urlencode({
        "address": consumer, "nonce": nonce, "expiration": int(time.time()) + 600,
        "signature": sign(CONSUMER_KEY, consumer + str(nonce))}))
    assert v4.status_code == 400 and "nonce" in json.loads(v4.body)["errors"]
    status, answer = post(client, "/auth/token", body)  # the same request again: a replay
    assert status == 400 and "nonce" in answer["errors"]


def test_environments_are_an_array_in_ocean_node_shape(client, node):
    chain, _, _ = node
    free_job(client, node)
    (environment,) = json.loads(get(client, "/computeEnvironments").body)
    assert environment["id"] == "ocean-c2d-cpu" and environment["consumerAddress"] == chain.provider.address
    assert environment["fees"] == {str(chain.chain_id): [{"feeToken": chain.contracts.OceanToken,
                                                          "prices": [{"id": "cpu", "price": 0.5}, {"id": "ram", "price": 0},
                                                                     {"id": "disk", "price": 0}]}]}
    cpu = next(r for r in environment["resources"] if r["id"] == "cpu")
    assert cpu == {"id": "cpu", "total": 10, "min": 2, "max": 2, "inUse": 2, "description": "x"}
    assert {r["id"] for r in environment["resources"]} == {"cpu", "ram", "disk"}
    assert environment["runningJobs"] == 1 and environment["runningfreeJobs"] == 1 and environment["queuedJobs"] == 0
    assert environment["maxJobDuration"] == 3600 and environment["minJobDuration"] == 60 and environment["maxJobs"] == 5
    free = environment["free"]
    assert free["maxJobDuration"] == 120 and free["maxJobs"] == 2 and free["maxJobsPerConsumer"] == 1
    assert next(r for r in free["resources"] if r["id"] == "cpu")["inUse"] == 2
    assert environment["platform"] == {"architecture": "x86_64", "os": "linux"}


# -- auth tokens -----------------------------------------------------------------------------

def _token(client, account) -> str:
    nonce = time.time_ns()
    status, body = post(client, "/auth/token", {"address": account.address, "nonce": str(nonce),
                                                "signature": sign(consumer_key(account), account.address + str(nonce) + "createAuthToken")})
    assert status == 200, body
    return body["token"]


def test_token_create_validates_its_signature_and_expiry(client, aws):
    from signing import CONSUMER_KEY, OTHER_KEY, address

    consumer = address(CONSUMER_KEY)
    nonce = time.time_ns()
    wrong_command = sign(CONSUMER_KEY, consumer + str(nonce) + "startCompute")
    status, body = post(client, "/auth/token", {"address": consumer, "nonce": str(nonce), "signature": wrong_command})
    assert status == 400 and body["errors"]["signature"] == ["Invalid signature provided."]
    by_other = sign(OTHER_KEY, consumer + str(nonce) + "createAuthToken")
    status, body = post(client, "/auth/token", {"address": consumer, "nonce": str(nonce), "signature": by_other})
    assert status == 400
    status, body = post(client, "/auth/token", {"address": consumer, "nonce": str(nonce)})
    assert status == 400 and body["errors"] == {"signature": ["required"]}
    good = sign(CONSUMER_KEY, consumer + str(nonce) + "createAuthToken")
    status, body = post(client, "/auth/token", {"address": consumer, "nonce": str(nonce), "signature": good,
                                                "validUntil": int(time.time()) + 10**8})
    assert status == 400 and "expiration" in body["errors"]
    status, body = post(client, "/auth/token", {"address": consumer, "nonce": str(nonce), "signature": good,
                                                "validUntil": (int(time.time()) + 300) * 1000})
    assert status == 400 and "nonce" in body["errors"], "the refused request spent the nonce: the signature is used"
    nonce += 1
    good = sign(CONSUMER_KEY, consumer + str(nonce) + "createAuthToken")
    status, body = post(client, "/auth/token", {"address": consumer, "nonce": str(nonce), "signature": good,
                                                "validUntil": (int(time.time()) + 300) * 1000})
    assert status == 200
    import jwt

    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["address"] == consumer and abs(claims["exp"] - (time.time() + 300)) < 5


def test_authorization_header_on_both_protocols_and_refusal_after_invalidation(client, node):
    chain, batch, published = node
    consumer, other = chain.consumer, chain.other
    token = _token(client, consumer)
    job = free_job(client, node)
    job_id = job["jobId"]
    # Ocean Node: the token alone (no nonce, no signature) proves the caller
    logs = get(client, "/computeStreamableLogs", headers={"Authorization": token}, jobId=job_id,
               consumerAddress=consumer.address)
    assert logs.status_code == 404 and json.loads(logs.body) == {"error": "No log exists for this job yet"}
    # ... and never another address's (Ocean Node accepts any valid token for any consumerAddress)
    foreign = get(client, "/computeStreamableLogs", headers={"Authorization": _token(client, other)}, jobId=job_id,
                  consumerAddress=consumer.address)
    assert foreign.status_code == 401 and json.loads(foreign.body) == {"error": "Token does not belong to this address."}
    # v4: Authorization beside AuthToken, for the signed status with URLs
    v4 = client.http.get(f"/api/services/compute?consumerAddress={consumer.address}&jobId={job_id}&nonce={time.time_ns()}",
                         headers={"Authorization": "Bearer " + token})
    assert v4.status_code == 200 and json.loads(v4.body)[0]["jobId"] == job_id
    # invalidate: signed over address + nonce
    nonce = time.time_ns()
    status, body = post(client, "/auth/token/invalidate", {
        "address": consumer.address, "nonce": str(nonce), "token": token,
        "signature": sign(consumer_key(consumer), consumer.address + str(nonce) + "createAuthToken")})
    assert status == 400, "a signature over anything but address + nonce is refused"
    status, body = post(client, "/auth/token/invalidate", {
        "address": consumer.address, "nonce": str(nonce), "token": token,
        "signature": sign(consumer_key(consumer), consumer.address + str(nonce))})
    assert (status, body) == (200, {"success": True})
    for response in (
        get(client, "/computeStreamableLogs", headers={"Authorization": token}, jobId=job_id, consumerAddress=consumer.address),
        client.http.get(f"/api/services/compute?consumerAddress={consumer.address}&jobId={job_id}",
                        headers={"Authorization": token}),
    ):
        assert response.status_code == 401 and json.loads(response.body) == {"error": "Token is deleted."}
    status, body = post(client, "/freeCompute", {**free_body(published, consumer), "nonce": None, "signature": None},
                        headers={"Authorization": token})
    assert status == 401
    nonce = time.time_ns()
    status, body = post(client, "/auth/token/invalidate", {
        "address": consumer.address, "nonce": str(nonce), "token": token,
        "signature": sign(consumer_key(consumer), consumer.address + str(nonce))})
    assert (status, body) == (400, {"error": "Token is deleted."})


def test_expired_and_forged_tokens_are_401(client, node):
    import jwt

    chain, _, _ = node
    consumer = chain.consumer.address
    from chalicelib import services

    secret = services.settings().jwt_secret()
    now = int(time.time())
    expired = jwt.encode({"address": consumer, "exp": now - 10, "iat": now - 100, "jti": "e" * 32}, secret, algorithm="HS256")
    forged = jwt.encode({"address": consumer, "exp": now + 100, "iat": now, "jti": "f" * 32}, "x" * 40, algorithm="HS256")
    for token, message in ((expired, "Token is expired."), (forged, "Token is invalid."), ("garbage", "Token is invalid.")):
        response = get(client, "/computeStreamableLogs", headers={"Authorization": token}, jobId="x", consumerAddress=consumer)
        assert response.status_code == 401 and json.loads(response.body) == {"error": message}


# -- free compute ----------------------------------------------------------------------------

def test_free_job_runs_to_completion_with_status_logs_and_results(client, node):
    chain, batch, published = node
    consumer = chain.consumer
    job = free_job(client, node, algorithm={"documentId": published.algorithm.did, "serviceId": published.algorithm.serviceId,
                                            "algocustomdata": {"requestedBy": "ocean.js"}})
    job_id = job["jobId"]
    assert job["status"] == 1 and job["owner"] == consumer.address and job["agreementId"] == ""
    submitted = batch.submitted[-1]
    (algorithm,) = [c for c in submitted["ecsPropertiesOverride"]["taskProperties"][0]["containers"]
                    if c["name"] == "algorithm"]
    limit = int({e["name"]: e["value"] for e in algorithm["environment"]}["C2D_MAX_SECONDS"])
    assert limit <= 120, "the free tier's maxJobDuration bounds the algorithm"
    assert submitted["timeout"]["attemptDurationSeconds"] == batch_timeout_seconds(limit)
    deliver(client, batch_event(job_id, "RUNNING", batch_job_id="batch-free", queue=JOB_QUEUE_ARN))

    # while it runs, the algorithm's log is read from its CloudWatch stream, the one the task
    # that Batch's event named writes (c2d/algorithm/<task id>): Batch is not asked again
    from chalicelib import aws

    logs = aws.client("logs")
    stream = f"c2d/algorithm/{TASK_ID}"
    logs.create_log_group(logGroupName="/aws/batch/job")
    logs.create_log_stream(logGroupName="/aws/batch/job", logStreamName=stream)
    logs.put_log_events(logGroupName="/aws/batch/job", logStreamName=stream,
                        logEvents=[{"timestamp": int(time.time() * 1000), "message": "read 60 rows"}])
    response = get(client, "/computeStreamableLogs", jobId=job_id, **signed(consumer, "getComputeStreamableLogs"))
    assert response.status_code == 200 and response.body == b"read 60 rows\n"
    assert response.headers["Content-Type"].startswith("text/plain")
    other = get(client, "/computeStreamableLogs", jobId=job_id, **signed(chain.other, "getComputeStreamableLogs"))
    assert other.status_code == 404, "another consumer learns nothing of the job"
    wrong = get(client, "/computeStreamableLogs", jobId=job_id, **signed(consumer, "getComputeResult"))
    assert wrong.status_code == 400

    finish(client, job_id)
    (status,) = json.loads(get(client, "/compute", consumerAddress=consumer.address, jobId=job_id).body)
    assert status["status"] == 70 and status["resultsUrls"] == [] and status["algorithmLogUrl"] is None
    outputs = [r for r in status["results"] if r["type"] == "output"]
    assert outputs and outputs[0]["filename"] == "result.csv"
    response = get(client, "/computeResult", jobId=job_id, index=outputs[0]["index"], **signed(consumer, "getComputeResult"))
    assert response.status_code == 302 and requests.get(response.headers["Location"], timeout=10).content == b"answer,42\n"
    # after the job, its published log answers
    response = get(client, "/computeStreamableLogs", jobId=job_id, **signed(consumer, "getComputeStreamableLogs"))
    assert response.status_code == 200 and b"read 60 rows" in response.body
    environment = json.loads(get(client, "/computeEnvironments").body)[0]
    assert environment["runningJobs"] == 0 and environment["runningfreeJobs"] == 0, "slots given back at the end"


def test_free_compute_only_on_datasets_the_operator_allows(client, node, monkeypatch):
    chain, batch, published = node

    monkeypatch.setenv("FREE_COMPUTE_PUBLISHERS", chain.other.address)
    _reread_settings()
    status, body = post(client, "/freeCompute", free_body(published, chain.consumer))
    assert (status, body) == (400, {"error": {"dataset": "not_free_compute_dataset"}})
    monkeypatch.setenv("FREE_COMPUTE_PUBLISHERS", f"{chain.other.address}, {published.dataset.did}")
    _reread_settings()
    free_job(client, node)


def _reread_settings() -> None:
    from chalicelib import config, services

    config.settings.cache_clear()
    services.settings.cache_clear()


def test_free_tier_limits(client, node, monkeypatch):
    chain, batch, published = node
    free_job(client, node)
    status, body = post(client, "/freeCompute", free_body(published, chain.consumer))
    assert status == 400 and "already run 1 free job" in body["error"]
    free_job(client, node, account=chain.other, new_definition=False)
    from chalicelib import services
    from chalicelib.compute import environments

    monkeypatch.setenv("COMPUTE_ENVIRONMENTS", free_environments(chain, per_consumer=5, max_free=2))
    environments.environments.cache_clear()
    status, body = post(client, "/freeCompute", free_body(published, chain.consumer))
    assert status == 400 and "free tier of ocean-c2d-cpu is at capacity" in body["error"]
    assert services.usage_counter().current(["ocean-c2d-cpu", "ocean-c2d-cpu#free"]) == {
        "ocean-c2d-cpu": 2, "ocean-c2d-cpu#free": 2}, "a refused start takes no slot"
    status, body = post(client, "/freeCompute", free_body(published, chain.consumer,
                                                          resources=[{"id": "cpu", "amount": 64}]))
    assert status == 400 and body["error"] == "Not enough cpu resources. Requested 64, but max is 2"
    status, body = post(client, "/freeCompute", free_body(published, chain.consumer, resources=[{"id": "tpu", "amount": 1}]))
    assert status == 400 and "unknown resource" in body["errors"]["resources"][0]
    status, body = post(client, "/freeCompute", free_body(published, chain.consumer, environment="nope"))
    assert (status, body) == (400, {"error": "Compute environment does not exist"})


def test_free_tier_access_list_and_environment_without_free_tier(client, node, monkeypatch):
    chain, batch, published = node
    from chalicelib.compute import environments

    monkeypatch.setenv("COMPUTE_ENVIRONMENTS", free_environments(chain, access=[chain.other.address]))
    environments.environments.cache_clear()
    status, body = post(client, "/freeCompute", free_body(published, chain.consumer))
    assert (status, body) == (403, {"error": "Access denied"}), "as Ocean Node answers"
    monkeypatch.setenv("COMPUTE_ENVIRONMENTS", environments_json(chain))
    environments.environments.cache_clear()
    status, body = post(client, "/freeCompute", free_body(published, chain.consumer))
    assert (status, body) == (400, {"error": "Environment ocean-c2d-cpu offers no free compute"})
    assert "free" not in json.loads(get(client, "/computeEnvironments").body)[0]


def test_free_compute_validates_like_a_paid_job(client, node):
    chain, batch, published = node
    not_trusted = {**RAW, "meta": {**RAW["meta"], "container": {**RAW["meta"]["container"], "checksum": "nope"}}}
    status, body = post(client, "/freeCompute", free_body(published, chain.consumer, algorithm=not_trusted))
    assert (status, body) == (400, {"error": {"algorithm.container": "checksum_prefix"}})
    status, body = post(client, "/freeCompute", {**free_body(published, chain.consumer), "datasets": []})
    assert status == 400 and "datasets" in body["errors"]
    body = free_body(published, chain.consumer)
    body["datasets"][0]["documentId"] = "did:op:" + "0" * 64
    status, answer = post(client, "/freeCompute", body)
    assert status == 400 and answer["error"] == {"dataset.documentId": "did_not_found"}


def test_free_job_with_a_failed_dispatch_gives_its_slots_back(client, node):
    chain, batch, published = node
    batch.expect_new_definition()
    batch.expect_submit_failure()
    status, body = post(client, "/freeCompute", free_body(published, chain.consumer))
    assert status == 503
    from chalicelib import services

    keys = ["ocean-c2d-cpu", "ocean-c2d-cpu#free", "ocean-c2d-cpu#free#" + chain.consumer.address.lower()]
    assert set(services.usage_counter().current(keys).values()) == {0}


# -- status, stop, results, paid start, initialize ---------------------------------------------

def test_status_is_unsigned_reduced_and_filters_by_agreement(client, node):
    chain, batch, published = node
    job = free_job(client, node, datasets=[{"documentId": published.dataset.did, "serviceId": published.dataset.serviceId,
                                            "transferTxId": "0x" + "1" * 64}])
    assert job["agreementId"] == "", "an order sent with a free job is not its agreement"
    jobs = json.loads(get(client, "/compute", consumerAddress=chain.consumer.address).body)
    assert [j["jobId"] for j in jobs] == [job["jobId"]] and jobs[0]["resultsUrls"] == []
    assert json.loads(get(client, "/compute", consumerAddress=chain.other.address, jobId=job["jobId"]).body) == []
    assert json.loads(get(client, "/compute", consumerAddress=chain.consumer.address, agreementId="0x" + "1" * 64).body) == []
    assert get(client, "/compute").status_code == 400
    assert get(client, "/compute", consumerAddress="nope").status_code == 400


def test_stop_from_the_query_string_owner_only(client, node):
    chain, batch, published = node
    job_id = free_job(client, node)["jobId"]
    path = API + "/compute?" + urllib.parse.urlencode({"jobId": job_id, **signed(chain.other, "stopCompute")})
    assert client.http.put(path).status_code == 404
    path = API + "/compute?" + urllib.parse.urlencode({"jobId": job_id, **signed(chain.consumer, "getComputeResult")})
    assert client.http.put(path).status_code == 400
    batch.expect_terminate()
    path = API + "/compute?" + urllib.parse.urlencode({"jobId": job_id, **signed(chain.consumer, "stopCompute")})
    response = client.http.put(path)
    assert response.status_code == 200 and json.loads(response.body)[0]["status"] == 7
    environment = json.loads(get(client, "/computeEnvironments").body)[0]
    assert environment["runningJobs"] == 0 and environment["runningfreeJobs"] == 0


def test_result_errors(client, node):
    chain, batch, published = node
    job_id = free_job(client, node)["jobId"]
    response = get(client, "/computeResult", jobId=job_id, index=0, **signed(chain.consumer, "getComputeResult"))
    assert response.status_code == 400 and json.loads(response.body) == {"error": "Job has no results yet."}
    response = get(client, "/computeResult", jobId=job_id, index=0, **signed(chain.other, "getComputeResult"))
    assert response.status_code == 404
    response = get(client, "/computeResult", jobId=job_id, index="x", **signed(chain.consumer, "getComputeResult"))
    assert response.status_code == 400 and "index" in json.loads(response.body)["errors"]
    response = get(client, "/computeResult", jobId=job_id, index=0, consumerAddress=chain.consumer.address)
    assert response.status_code == 400


def test_paid_start_with_orders_as_v4(client, node):
    chain, batch, published = node
    body = {"datasets": [{"documentId": published.dataset.did, "serviceId": published.dataset.serviceId}],
            "algorithm": {"documentId": published.algorithm.did, "serviceId": published.algorithm.serviceId},
            "environment": "ocean-c2d-cpu", "consumerAddress": chain.consumer.address,
            "maxJobDuration": int(time.time()) + 900,  # ocean.js sends its validUntil here: capped at the env's max
            "payment": {"chainId": chain.chain_id, "token": chain.contracts.OceanToken,
                        "resources": [{"id": "cpu", "amount": 1}]}}
    status, quote = post(client, "/initializeCompute", body)
    assert status == 200, quote
    fee = quote["datasets"][0]["providerFee"]
    assert int(fee["providerFeeAmount"]) > 0 and time.time() + 3590 <= int(fee["validUntil"]) <= time.time() + 3610
    assert "providerFee" in quote["algorithm"]
    dataset_tx, algorithm_tx = order_both(chain, published, quote)
    start = {**signed(chain.consumer, "startCompute"), "environment": "ocean-c2d-cpu", "maxJobDuration": 900,
             "datasets": [{"documentId": published.dataset.did, "serviceId": published.dataset.serviceId,
                           "transferTxId": dataset_tx}],
             "algorithm": {"documentId": published.algorithm.did, "serviceId": published.algorithm.serviceId,
                           "transferTxId": algorithm_tx},
             "chainId": chain.chain_id, "payment": body["payment"]}
    unsigned = {**start, "signature": sign(consumer_key(chain.consumer), chain.consumer.address + start["nonce"] + "freeStartCompute")}
    status, answer = post(client, "/compute", unsigned)
    assert status == 400 and answer["errors"]["signature"] == ["Invalid signature provided."]
    batch.expect_new_definition()
    batch.expect_submit("batch-paid")
    status, answer = post(client, "/compute", {**start, **signed(chain.consumer, "startCompute")})
    assert status == 200, answer
    assert answer[0]["agreementId"] == dataset_tx
    jobs = json.loads(get(client, "/compute", consumerAddress=chain.consumer.address, agreementId=dataset_tx.upper()[2:].join(["0x", ""])).body)
    assert [j["jobId"] for j in jobs] == [answer[0]["jobId"]]
    status, again = post(client, "/compute", {**start, **signed(chain.consumer, "startCompute")})
    assert status == 200 and [j["jobId"] for j in again] == [answer[0]["jobId"]]  # the same start: its job
    no_order = {**start, **signed(chain.consumer, "startCompute")}
    no_order["datasets"] = [{"documentId": published.dataset.did, "serviceId": published.dataset.serviceId}]
    status, answer = post(client, "/compute", no_order)
    assert status == 400 and "datasets.0.transferTxId" in answer["errors"]


def test_initialize_errors(client, node):
    chain, _, published = node
    base = {"datasets": [{"documentId": published.dataset.did, "serviceId": published.dataset.serviceId}],
            "algorithm": {"documentId": published.algorithm.did, "serviceId": published.algorithm.serviceId},
            "environment": "ocean-c2d-cpu", "consumerAddress": chain.consumer.address}
    status, body = post(client, "/initializeCompute", {**base, "environment": "nope"})
    assert (status, body) == (400, {"error": "Compute environment does not exist"})
    status, body = post(client, "/initializeCompute", {**base, "consumerAddress": "0x1"})
    assert status == 400 and "consumerAddress" in body["errors"]
    status, body = post(client, "/initializeCompute", {key: value for key, value in base.items() if key != "algorithm"})
    assert status == 400 and body["errors"] == {"algorithm": ["required"]}
    status, body = post(client, "/initializeCompute", {**base, "payment": {"resources": [{"id": "ram", "amount": 999}]}})
    assert status == 400 and "ram" in body["error"]


# -- CORS ------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/node", "/spec", "/api/services/nonce", "/node/api/services/nonce",
                                  "/node/api/services/compute", "/node/api/services/auth/token"])
def test_cors_on_answers_and_preflights(client, path):
    """Preflights through Chalice's local gateway (what `chalice local` and `make run` serve;
    chalice.test's client cannot read a body-less answer); answers through the test client."""
    from chalice.config import Config
    from chalice.local import LocalGateway

    import app as app_module

    preflight = LocalGateway(app_module.app, Config()).handle_request("OPTIONS", path, {
        "origin": "http://elsewhere.example", "access-control-request-method": "GET",
        "access-control-request-headers": "content-type,authorization"}, b"")
    assert preflight["statusCode"] == 200
    headers = preflight["headers"]
    assert headers["Access-Control-Allow-Origin"] == "*"
    allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"content-type", "authorization", "authtoken"} <= allowed
    assert {"GET", "POST", "PUT", "DELETE"} <= set(headers["Access-Control-Allow-Methods"].split(","))
    answer = client.http.get(path, headers={"Origin": "http://elsewhere.example"})
    assert answer.headers.get("Access-Control-Allow-Origin") == "*", (path, answer.status_code)


def test_cors_on_errors(client, aws):
    answer = client.http.get("/node/api/services/nonce?userAddress=nope", headers={"Origin": "http://x.example"})
    assert answer.status_code == 400 and answer.headers["Access-Control-Allow-Origin"] == "*"
    answer = client.http.request("PATCH", "/node/api/services/nonce")
    assert answer.status_code == 405 and answer.headers["Access-Control-Allow-Origin"] == "*"


def test_encrypt_at_the_node_prefix_as_ocean_js_sends_it(client, aws):
    from chalicelib import services
    from chalicelib.assets import ecies

    response = client.http.post(API + "/encrypt?chainId=8996&nonce=1&consumerAddress=0x" + "1" * 40,
                                body=b'[{"type": "url"}]', headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 201
    assert ecies.decrypt(services.settings().provider_private_key(), response.body.decode()) == b'[{"type": "url"}]'


def test_v4_signed_routes_take_the_authorization_header_and_consume_a_nonce_given(client, node):
    chain, batch, published = node
    consumer = chain.consumer
    token = _token(client, consumer)
    job_id = free_job(client, node)["jobId"]
    nonce = time.time_ns()
    batch.expect_terminate()
    stopped = client.http.put(f"/api/services/compute?consumerAddress={consumer.address}&jobId={job_id}&nonce={nonce}",
                              headers={"Authorization": token})
    assert stopped.status_code == 200 and json.loads(stopped.body)[0]["status"] == 7
    replay = client.http.put(f"/api/services/compute?consumerAddress={consumer.address}&jobId={job_id}&nonce={nonce}",
                             headers={"Authorization": token})
    assert replay.status_code == 400 and "nonce" in json.loads(replay.body)["errors"]
    other = client.http.put(f"/api/services/compute?consumerAddress={chain.other.address}&jobId={job_id}&nonce={nonce + 1}",
                            headers={"Authorization": token})
    assert other.status_code == 401
