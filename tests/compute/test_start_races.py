"""Starts idempotent per order and stops that settle races (issue 20, observations 5 and 6), through
the API with real orders on anvil, moto for DynamoDB and S3, Batch behind botocore's Stubber.

- 5: a start whose store stalls after its reservation answers 503; the same start again (same
  owner, same orders) finishes that very job, never `order_already_used`;
- 6: a stop racing a job's events answers the state the job settled on (not 503); a stop that
  lands between a start's reservation and its SubmitJob is not followed by a dispatch; one that
  lands between SubmitJob and its record gets the Batch job terminated; a dispatcher recording
  its Batch job between a stop's read and write gets it terminated by the stop.
"""
from __future__ import annotations

import json
import time

from botocore.exceptions import ReadTimeoutError

from lifecycle_helpers import initialize, order_both, post_start, start_body
from test_events import batch_event
from test_lifecycle_compute import JOB_QUEUE_ARN, provider, signed_query, started_job  # noqa: F401 (fixture)


def _dynamodb():
    from chalicelib.models import JobRecord

    return JobRecord._get_connection().connection.client


class Stall:
    """Every DynamoDB call fails as a stalled one does (read timeout) once `armed`."""

    def __init__(self) -> None:
        self.armed = False
        self.failed: list[str] = []

    def __call__(self, model, params, **_):
        if self.armed:
            self.failed.append(model.name)
            raise ReadTimeoutError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com")


def _record(job_id: str):
    from chalicelib.models import JobRecord

    return JobRecord.get(job_id, consistent_read=True)


def _slots() -> int:
    from chalicelib import services

    return services.usage_counter().current(["ocean-c2d-cpu"])["ocean-c2d-cpu"]


# -- observation 5 ---------------------------------------------------------------------------

def test_a_start_whose_store_stalls_is_finished_by_the_same_start_again(client, provider):
    chain, batch, published = provider
    from chalicelib.models import JobRecord, OrderUse

    quote = initialize(client, published, chain.consumer.address)
    dataset_tx, algorithm_tx = order_both(chain, published, quote)
    stall = Stall()
    reserving = []

    def note(params, **_):  # the reservation is the transaction that puts the job record
        reserving[:] = [any(item.get("Put", {}).get("TableName", "").endswith("-jobs") for item in params["TransactItems"])]

    arm = lambda **_: reserving[:1] == [True] and setattr(stall, "armed", True)  # noqa: E731  (stalls right after it)
    dynamodb = _dynamodb()
    dynamodb.meta.events.register("before-parameter-build.dynamodb.TransactWriteItems", note)
    dynamodb.meta.events.register("after-call.dynamodb.TransactWriteItems", arm)
    dynamodb.meta.events.register_first("before-call.dynamodb", stall)
    try:
        status, body = post_start(client, start_body(published, chain.consumer, time.time_ns(), dataset_tx, algorithm_tx))
    finally:
        dynamodb.meta.events.unregister("before-parameter-build.dynamodb.TransactWriteItems", note)
        dynamodb.meta.events.unregister("after-call.dynamodb.TransactWriteItems", arm)
        dynamodb.meta.events.unregister("before-call.dynamodb", stall)
    assert status == 503 and "unavailable" in body["error"], body
    assert stall.failed, "the store never stalled"
    (job,) = JobRecord.scan()
    assert int(job.status) == 1 and not job.batch_job_id and len(list(OrderUse.scan())) == 2  # half made
    # the same start again, the store back: that very job, finished (not order_already_used)
    batch.expect_new_definition()
    batch.expect_submit("batch-finished")
    status, body = post_start(client, start_body(published, chain.consumer, time.time_ns(), dataset_tx, algorithm_tx))
    assert status == 200 and [j["jobId"] for j in body] == [job.job_id], body
    assert _record(job.job_id).batch_job_id == "batch-finished" and len(batch.submitted) == 1
    assert _slots() == 1 and {use.job_id for use in OrderUse.scan()} == {job.job_id}
    # and again: the job as it is, nothing submitted twice
    status, body = post_start(client, start_body(published, chain.consumer, time.time_ns(), dataset_tx, algorithm_tx))
    assert status == 200 and [j["jobId"] for j in body] == [job.job_id] and len(batch.submitted) == 1
    batch.stubber.assert_no_pending_responses()


# -- observation 6 ---------------------------------------------------------------------------

def test_a_stop_racing_the_jobs_events_answers_the_state_it_settled_on(client, provider):
    """Four events land between the stop's read and its write, one after each attempt (the old
    stop gave up with 503 after three): the stop answers the job's end, 70."""
    chain, batch, published = provider
    from chalicelib import services

    job, _, _ = started_job(client, provider)
    job_id = job["jobId"]
    events = iter(["STARTING", "RUNNING", "SUCCEEDED"])
    delivered: list[str] = []
    busy = []

    def an_event_lands_first(**_):
        if busy:
            return  # the event's own write
        status = next(events, None)
        if status is None:
            return
        busy.append(True)
        try:
            exits = {"configure": 0, "algorithm": 0, "publish": 0} if status == "SUCCEEDED" else None
            services.job_events().handle(batch_event(job_id, status, batch_job_id="batch-1", queue=JOB_QUEUE_ARN, exits=exits))
            delivered.append(status)
        finally:
            busy.clear()

    dynamodb = _dynamodb()
    for operation in ("UpdateItem", "TransactWriteItems"):
        dynamodb.meta.events.register(f"before-call.dynamodb.{operation}", an_event_lands_first)
    batch.expect_terminate()
    try:
        response = client.http.put("/api/services/compute" + signed_query(chain.consumer, job_id))
    finally:
        for operation in ("UpdateItem", "TransactWriteItems"):
            dynamodb.meta.events.unregister(f"before-call.dynamodb.{operation}", an_event_lands_first)
    assert response.status_code == 200, response.body
    assert delivered == ["STARTING", "RUNNING", "SUCCEEDED"]
    assert [j["status"] for j in json.loads(response.body)] == [70]
    assert _slots() == 0
    batch.stubber.assert_no_pending_responses()


def test_a_stop_between_the_reservation_and_submit_means_no_dispatch(client, provider):
    chain, batch, published = provider
    from chalicelib import aws, services

    quote = initialize(client, published, chain.consumer.address)
    dataset_tx, algorithm_tx = order_both(chain, published, quote)
    s3 = aws.client("s3")
    stopped: list[str] = []

    def stop_now(**_):  # the owner's stop lands right after the manifest is stored
        from chalicelib.models import JobRecord

        (job,) = JobRecord.scan()
        services.job_service().stop(chain.consumer.address, job.job_id, None)
        stopped.append(job.job_id)

    s3.meta.events.register("after-call.s3.PutObject", stop_now)
    try:
        status, body = post_start(client, start_body(published, chain.consumer, time.time_ns(), dataset_tx, algorithm_tx))
    finally:
        s3.meta.events.unregister("after-call.s3.PutObject", stop_now)
    assert status == 200 and [j["status"] for j in body] == [7], body
    assert batch.submitted == [] and batch.registered == []  # nothing dispatched after the stop
    record = _record(stopped[0])
    assert int(record.status) == 7 and not record.batch_job_id and _slots() == 0
    # the same start again answers the stopped job; still nothing dispatched
    status, body = post_start(client, start_body(published, chain.consumer, time.time_ns(), dataset_tx, algorithm_tx))
    assert status == 200 and [j["jobId"] for j in body] == stopped and batch.submitted == []


def test_a_stop_between_submit_and_its_record_gets_the_batch_job_terminated(client, provider):
    chain, batch, published = provider
    from chalicelib import services
    from chalicelib.models import JobRecord

    quote = initialize(client, published, chain.consumer.address)
    dataset_tx, algorithm_tx = order_both(chain, published, quote)
    batch.expect_new_definition()
    batch.expect_submit("batch-late")
    batch.expect_terminate()
    terminated: list[dict] = []
    batch.client.meta.events.register("provide-client-params.batch.TerminateJob", lambda params, **_: terminated.append(params))

    def stop_during_submit(event_name, **_):
        if not event_name.endswith(".SubmitJob"):
            return
        (job,) = JobRecord.scan()
        assert job.dispatch_lease and not job.batch_job_id  # the start holds the dispatch lease
        services.job_service().stop(chain.consumer.address, job.job_id, None)

    # ahead of the Stubber's own handler (on before-call.*.*), which answers the call
    batch.client.meta.events.register_first("before-call.*.*", stop_during_submit)
    status, body = post_start(client, start_body(published, chain.consumer, time.time_ns(), dataset_tx, algorithm_tx))
    assert status == 200 and [j["status"] for j in body] == [7], body
    record = _record(body[0]["jobId"])
    assert int(record.status) == 7 and record.batch_job_id == "batch-late"  # a Batch job never without a record
    assert [t["jobId"] for t in terminated] == ["batch-late"] and _slots() == 0
    batch.stubber.assert_no_pending_responses()


def test_a_dispatch_recorded_between_a_stops_read_and_write_is_terminated_by_the_stop(client, provider):
    chain, batch, published = provider
    from chalicelib import services
    from chalicelib.models import JobRecord

    quote = initialize(client, published, chain.consumer.address)
    dataset_tx, algorithm_tx = order_both(chain, published, quote)
    # a start left at 1 with no Batch job (its Lambda died before SubmitJob)
    job = _half_made_start(client, published, chain, dataset_tx, algorithm_tx)
    recorded = []

    def the_dispatcher_records_first(**_):
        if not recorded:  # between the stop's read (no Batch job) and its write
            recorded.append(True)
            JobRecord(job.job_id).update(actions=[JobRecord.batch_job_id.set("batch-raced")])

    dynamodb = _dynamodb()
    dynamodb.meta.events.register("before-call.dynamodb.TransactWriteItems", the_dispatcher_records_first)
    batch.expect_terminate()
    try:
        page = services.job_service().stop(chain.consumer.address, job.job_id, None)
    finally:
        dynamodb.meta.events.unregister("before-call.dynamodb.TransactWriteItems", the_dispatcher_records_first)
    assert [int(j.status) for j in page.jobs] == [7]
    record = _record(job.job_id)
    assert int(record.status) == 7 and record.batch_job_id == "batch-raced" and _slots() == 0
    batch.stubber.assert_no_pending_responses()  # the stop terminated the Batch job it had not seen at first


def _half_made_start(client, published, chain, dataset_tx, algorithm_tx, target=None, name: str = "submit"):
    """A start whose Lambda died calling `target.<name>` (default: SubmitJob, its manifest stored)."""
    import pytest

    from chalicelib import services
    from chalicelib.models import JobRecord

    class Killed(BaseException):
        pass

    def die(*args, **kwargs):
        raise Killed()

    target = target or services.dispatcher()
    original = getattr(target, name)
    setattr(target, name, die)
    try:
        with pytest.raises(Killed):
            post_start(client, start_body(published, chain.consumer, time.time_ns(), dataset_tx, algorithm_tx))
    finally:
        setattr(target, name, original)
    (job,) = JobRecord.scan()
    return job


def test_the_same_start_again_finishes_its_job_even_once_its_orders_fees_expired(client, provider, monkeypatch):
    """The job was made from orders verified then (its Lambda died storing its manifest); a
    retry after their providerFee's validUntil (which would now refuse the orders) still answers
    and finishes that job."""
    chain, batch, published = provider
    from chalicelib import services
    from chalicelib.errors import BusinessError

    quote = initialize(client, published, chain.consumer.address)
    dataset_tx, algorithm_tx = order_both(chain, published, quote)
    job = _half_made_start(client, published, chain, dataset_tx, algorithm_tx, services.job_service()._starts._objects,
                           "write_manifest")

    def expired(**_):
        raise BusinessError({"dataset": "fees_not_paid"})

    monkeypatch.setattr(services.compute_workflow()._verifier, "verify", expired)
    batch.expect_new_definition()
    batch.expect_submit("batch-finished")
    status, body = post_start(client, start_body(published, chain.consumer, time.time_ns(), dataset_tx, algorithm_tx))
    assert status == 200 and [j["jobId"] for j in body] == [job.job_id], body
    assert _record(job.job_id).batch_job_id == "batch-finished"
    # orders that made no job are still verified: refused
    from devstack.contracts import OCEAN_UNIT
    from devstack.orders import mint_datatokens

    for asset in (published.dataset, published.algorithm):
        mint_datatokens(chain.w3, chain.publisher, asset.datatoken, chain.consumer.address, OCEAN_UNIT)
    quote = initialize(client, published, chain.consumer.address)
    new_dataset_tx, new_algorithm_tx = order_both(chain, published, quote)
    status, body = post_start(client, start_body(published, chain.consumer, time.time_ns(), new_dataset_tx, new_algorithm_tx))
    assert status == 400 and body == {"error": {"dataset": "fees_not_paid"}}
