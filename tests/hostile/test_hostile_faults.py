"""Faults of every dependency, in process: DynamoDB (throttling, server errors, conditional
failures), S3, Batch (through botocore's Stubber), the chain RPC (never answers, answers for
another chain) and the metadata service (down).

Every fault must give a clear 503 (or the 4xx the request deserves), never a 500, and leave
nothing half made: no job record that is not terminal, no order marked used (OrderUse), no
environment slot taken, no manifest in S3, and no nonce consumed but the failed request's own
(a fault in front of the nonce consumes none, so the same signed request can simply be retried).

The provider (real orders on anvil, Batch behind a Stubber) is the lifecycle suite's fixture.
"""
from __future__ import annotations

import dataclasses
import json
import time
import uuid

from fakes import black_hole
from hostile_faults import AwsFault, aws_fault, dynamodb_clients, json_rpc_stub, table_is, table_is_not
from lifecycle_helpers import consumer_key, initialize, order_both, post_start, start_body
from signing import CONSUMER_KEY, address, sign
from test_events import batch_event
from test_lifecycle_compute import JOB_QUEUE_ARN, provider, signed_query, started_job  # noqa: F401 (fixture)

CONSUMER = address(CONSUMER_KEY)
THROTTLED = "ProvisionedThroughputExceededException"


def _tables():
    from chalicelib import services

    return services.settings()


def _nonce(who: str) -> int:
    from chalicelib import services

    return services.nonce_store().current(who)


def _token_query(nonce: int) -> str:
    return (f"/api/services/createAuthToken?address={CONSUMER}&nonce={nonce}&expiration={int(time.time()) + 600}"
            f"&signature={sign(CONSUMER_KEY, CONSUMER + str(nonce))}")


def _status_query(nonce: int) -> str:
    return f"/api/services/compute?consumerAddress={CONSUMER}&nonce={nonce}"


def _unavailable(response) -> str:
    """The 503's message; fails on anything else, on a traceback and on a leaked AWS error code."""
    assert response.status_code == 503, (response.status_code, response.body)
    body = json.loads(response.body)
    assert isinstance(body.get("error"), str) and "Traceback" not in body["error"]
    assert "injected" not in body["error"] and "Exception" not in body["error"], body
    return body["error"]


# -- the nonce and token stores (no chain needed) ------------------------------------------------

def test_nonce_and_token_store_faults_are_503_and_consume_nothing(client):
    tables = _tables()
    for code, status in ((THROTTLED, 400), ("InternalServerError", 500), ("ThrottlingException", 400)):
        nonce = time.time_ns()
        # the nonce and, in the same transaction, the check that the message was never used split
        # elsewhere (auth.nonces): a multi-digit nonce is spent by TransactWriteItems
        with aws_fault(dynamodb_clients(), "dynamodb.TransactWriteItems",
                       AwsFault(code, status, table_is(tables.nonces_table))) as fault:
            assert "Nonce store" in _unavailable(client.http.get(_token_query(nonce)))
            assert "Nonce store" in _unavailable(client.http.get(_status_query(nonce) + "&signature="
                                                                 + sign(CONSUMER_KEY, CONSUMER + str(nonce))))
        assert len(fault.failed) == 2 and _nonce(CONSUMER) < nonce
        retried = client.http.get(_token_query(nonce))  # the very same signed request, once the store is back
        assert retried.status_code == 200 and _nonce(CONSUMER) == nonce

    with aws_fault(dynamodb_clients(), "dynamodb.GetItem", AwsFault(THROTTLED, when=table_is(tables.nonces_table))):
        _unavailable(client.http.get(f"/api/services/nonce?userAddress={CONSUMER}"))

    token = json.loads(client.http.get(_token_query(time.time_ns())).body)["token"]
    # A revocation check that cannot be made must refuse the token, not let it through.
    before = _nonce(CONSUMER)
    with aws_fault(dynamodb_clients(), "dynamodb.GetItem", AwsFault(THROTTLED, when=table_is(tables.revoked_tokens_table))):
        _unavailable(client.http.get(_status_query(time.time_ns()), headers={"AuthToken": token}))
    assert _nonce(CONSUMER) == before

    # Revocation that cannot be stored: 503, the token still works, only that request's nonce is used.
    nonce = time.time_ns()
    revoke = (f"/api/services/deleteAuthToken?address={CONSUMER}&nonce={nonce}&token={token}"
              f"&signature={sign(CONSUMER_KEY, CONSUMER + str(nonce))}")
    with aws_fault(dynamodb_clients(), "dynamodb.PutItem", AwsFault(THROTTLED, when=table_is(tables.revoked_tokens_table))):
        _unavailable(client.http.delete(revoke))
    assert _nonce(CONSUMER) == nonce
    assert client.http.get(_status_query(time.time_ns()), headers={"AuthToken": token}).status_code == 200
    nonce = time.time_ns()
    revoke = (f"/api/services/deleteAuthToken?address={CONSUMER}&nonce={nonce}&token={token}"
              f"&signature={sign(CONSUMER_KEY, CONSUMER + str(nonce))}")
    assert client.http.delete(revoke).status_code == 200
    refused = client.http.get(_status_query(time.time_ns()), headers={"AuthToken": token})
    assert refused.status_code == 400 and "deleted" in refused.body.decode()


# -- compute start: every dependency after the nonce -------------------------------------------

def _assert_nothing_half_made(consumer: str) -> None:
    from chalicelib import aws, services
    from chalicelib.compute import status as st
    from chalicelib.models import EnvironmentUsage, JobRecord, OrderUse

    assert list(OrderUse.scan()) == [], "a failed start left an order marked used"
    assert services.usage_counter().current(["ocean-c2d-cpu"]) == {"ocean-c2d-cpu": 0}
    jobs = [job for job in JobRecord.scan() if job.owner == consumer]
    assert all(int(job.status) == st.DATA_FAILED and job.date_finished for job in jobs), [
        (job.job_id, job.status) for job in jobs]
    listed = aws.client("s3").list_objects_v2(Bucket=services.settings().bucket, Prefix="jobs/")
    assert listed.get("KeyCount", 0) == 0, "a failed start left its manifest behind"
    assert [usage.running for usage in EnvironmentUsage.scan()] in ([], [0])


def test_compute_start_survives_every_dependency_fault(client, provider, monkeypatch):
    chain, batch, published = provider
    from chalicelib import aws, services

    tables = services.settings()
    account = chain.consumer
    quote = initialize(client, published, account.address)
    dataset_tx, algorithm_tx = order_both(chain, published, quote)
    s3 = aws.client("s3")

    def attempt(expected: int = 503, consumed: bool = True) -> dict:
        nonce = time.time_ns()
        status, body = post_start(client, start_body(published, account, nonce, dataset_tx, algorithm_tx))
        assert status == expected, body
        assert "Traceback" not in json.dumps(body)
        assert (_nonce(account.address) == nonce) if consumed else (_nonce(account.address) < nonce)
        _assert_nothing_half_made(account.address)
        return body

    faults = [
        # (client list, operation, fault, nonce consumed?)
        (dynamodb_clients(), "dynamodb.TransactWriteItems", AwsFault(THROTTLED, when=table_is(tables.nonces_table)), False),
        (dynamodb_clients(), "dynamodb.GetItem", AwsFault(THROTTLED, when=table_is(tables.assets_table)), True),
        (dynamodb_clients(), "dynamodb.TransactWriteItems", AwsFault(THROTTLED, when=table_is_not(tables.nonces_table)), True),
        (dynamodb_clients(), "dynamodb.TransactWriteItems",
         AwsFault("InternalServerError", 500, when=table_is_not(tables.nonces_table)), True),
        ([s3], "s3.PutObject", AwsFault("SlowDown", 503), True),
    ]
    for clients, operation, fault, consumed in faults:
        with aws_fault(clients, operation, fault):
            attempt(consumed=consumed)
        assert fault.failed, operation

    # The job's id is already taken (a conditional failure inside the transaction): nothing is kept.
    from chalicelib.models import JobRecord

    taken = uuid.uuid4()
    JobRecord(taken.hex, owner="0x" + "0" * 40, document_id="did:op:x", date_created=1, status=70,
              status_text="Job completed", environment="ocean-c2d-cpu", chain_id=chain.chain_id, date_finished=2).save()
    with monkeypatch.context() as patch:
        patch.setattr(uuid, "uuid4", lambda: taken)
        assert "concurrent" in attempt()["error"]
    JobRecord(taken.hex).delete()

    # Batch: the definition cannot be registered, then SubmitJob is throttled, then Batch is down.
    batch.stubber.add_response("describe_job_definitions", {"jobDefinitions": []})
    batch.stubber.add_client_error("register_job_definition", "ClientException", "not authorized", 400)
    attempt()
    batch.expect_new_definition()
    batch.stubber.add_client_error("submit_job", "TooManyRequestsException", "slow down", 429)
    attempt()
    batch.stubber.add_client_error("submit_job", "ServerException", "Batch is down", 500)
    assert "Batch is down" not in json.dumps(attempt())

    # Everything back: the very same orders start the job.
    batch.expect_submit("batch-ok")
    nonce = time.time_ns()
    status, body = post_start(client, start_body(published, account, nonce, dataset_tx, algorithm_tx))
    assert status == 200 and body[0]["status"] == 1, body
    batch.stubber.assert_no_pending_responses()


def test_chain_and_metadata_faults_are_503_before_anything_is_reserved(client, provider, monkeypatch):
    chain, batch, published = provider
    from chalicelib import services
    from chalicelib.assets.resolver import build_resolver
    from chalicelib.chain.web3access import Chains

    account = chain.consumer
    quote = initialize(client, published, account.address)
    dataset_tx, algorithm_tx = order_both(chain, published, quote)

    def with_chain(url: str):
        patch.setattr(services, "chains", lambda: Chains({chain.chain_id: url}, timeout=1.0))
        services.compute_workflow.cache_clear()

    for peer, words in ((black_hole, "not reachable"), (lambda: json_rpc_stub(1), "misconfigured")):
        with peer() as url, monkeypatch.context() as patch:
            with_chain(url)
            began = time.monotonic()
            nonce = time.time_ns()
            status, body = post_start(client, start_body(published, account, nonce, dataset_tx, algorithm_tx))
            assert status == 503 and words in body["error"], body
            assert time.monotonic() - began < 10, "a chain that never answers must not hold the request"
            assert _nonce(account.address) == nonce
            _assert_nothing_half_made(account.address)
            fee_request = client.http.post("/api/services/initializeCompute", headers={"Content-Type": "application/json"},
                                           body=json.dumps({"datasets": [{"documentId": published.dataset.did,
                                                                          "serviceId": published.dataset.serviceId,
                                                                          "transferTxId": dataset_tx}],
                                                            "algorithm": {"documentId": published.algorithm.did,
                                                                          "serviceId": published.algorithm.serviceId},
                                                            "compute": {"env": "ocean-c2d-cpu",
                                                                        "validUntil": int(time.time()) + 600},
                                                            "consumerAddress": account.address}))
            assert fee_request.status_code == 503 and words in json.loads(fee_request.body)["error"]
        services.compute_workflow.cache_clear()

    # The metadata service is down: an asset it would have to resolve is a 503; known ones still work.
    with black_hole() as url, monkeypatch.context() as patch:
        settings = dataclasses.replace(services.settings(), metadata_url=url, rpc_timeout=1.0)
        patch.setattr(services, "asset_resolver", lambda: build_resolver(settings, services.chains()))
        services.compute_workflow.cache_clear()
        unknown = "did:op:" + uuid.uuid4().hex * 2
        body = start_body(published, account, time.time_ns(), dataset_tx, algorithm_tx)
        body["dataset"]["documentId"] = unknown
        body["signature"] = sign(consumer_key(account), account.address + unknown + str(body["nonce"]))
        status, answer = post_start(client, body)
        assert status == 503 and "metadata service" in answer["error"], answer
        _assert_nothing_half_made(account.address)
        assert initialize(client, published, account.address)["datasets"][0]["providerFee"]
    services.compute_workflow.cache_clear()

    batch.expect_new_definition()
    batch.expect_submit()
    status, body = post_start(client, start_body(published, account, time.time_ns(), dataset_tx, algorithm_tx))
    assert status == 200, body


# -- stop and delete ------------------------------------------------------------------------------

def test_stop_and_delete_faults_leave_the_job_as_it_was(client, provider):
    chain, batch, published = provider
    from chalicelib import aws, services
    from chalicelib.models import JobRecord

    job, _, _ = started_job(client, provider)
    job_id, consumer = job["jobId"], chain.consumer
    bucket = services.settings().bucket
    s3 = aws.client("s3")
    s3.put_object(Bucket=bucket, Key=f"jobs/{job_id}/outputs/out.txt", Body=b"x")

    def running() -> None:
        assert int(JobRecord.get(job_id, consistent_read=True).status) == 1
        assert services.usage_counter().current(["ocean-c2d-cpu"]) == {"ocean-c2d-cpu": 1}

    batch.stubber.add_client_error("terminate_job", "ServerException", "Batch is down", 500)
    _unavailable(client.http.put("/api/services/compute" + signed_query(consumer, job_id)))
    running()

    with aws_fault(dynamodb_clients(), "dynamodb.GetItem", AwsFault(THROTTLED, when=table_is(services.settings().jobs_table))):
        _unavailable(client.http.get("/api/services/compute" + signed_query(consumer, job_id)))
        _unavailable(client.http.put("/api/services/compute" + signed_query(consumer, job_id)))
    running()

    # Batch stops the job but the results cannot be deleted: not "deleted", the results stay.
    batch.expect_terminate()
    with aws_fault([s3], "s3.ListObjectVersions", AwsFault("InternalError", 500)):  # every version goes
        _unavailable(client.http.delete("/api/services/compute" + signed_query(consumer, job_id)))
    running()
    # S3 refuses some keys of a DeleteObjects (an HTTP 200 with Errors): still not "deleted".
    partial = AwsFault("-", 200, Deleted=[], Errors=[{"Key": f"jobs/{job_id}/outputs/out.txt", "Code": "AccessDenied",
                                                       "Message": "Access Denied"}])
    batch.expect_terminate()
    with aws_fault([s3], "s3.DeleteObjects", partial):
        _unavailable(client.http.delete("/api/services/compute" + signed_query(consumer, job_id)))
    assert partial.failed
    running()

    # Batch's own stop event ends it; then the delete goes through.
    response = client.lambda_.invoke("batch_job_events", batch_event(job_id, "FAILED", batch_job_id="batch-1",
                                                                        queue=JOB_QUEUE_ARN, reason="c2d-stop: Job stopped"))
    assert response.payload["status"] == 7
    deleted = client.http.delete("/api/services/compute" + signed_query(consumer, job_id))
    assert deleted.status_code == 200 and json.loads(deleted.body)[0]["status"] == 8
    assert s3.list_objects_v2(Bucket=bucket, Prefix=f"jobs/{job_id}/").get("KeyCount", 0) == 0
    assert services.usage_counter().current(["ocean-c2d-cpu"]) == {"ocean-c2d-cpu": 0}
    batch.stubber.assert_no_pending_responses()
