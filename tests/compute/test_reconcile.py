"""The reconciler (compute.reconcile) on in-process moto DynamoDB with real starts (orders on
anvil) and Batch behind botocore's Stubber: a start killed between its reservation and
SubmitJob is ended with 31 and its order and slot given back; a job whose events were lost gets
Batch's answer applied as the event would have been, and late events change nothing after."""
from __future__ import annotations

import json
import time

import pytest
from botocore.stub import ANY

from lifecycle_helpers import StubbedBatch, initialize, order_both, post_start, start_body
from test_events import batch_event, runner_event
from test_lifecycle_compute import JOB_QUEUE_ARN, deliver, provider, signed_query, started_job  # noqa: F401


def described(job_id: str, status: str, **kwargs) -> dict:
    """DescribeJobs' JobDetail of a job: the detail of its Batch event, whose attempts list
    only what AttemptTaskContainerDetails holds (the Stubber checks it against AWS's model)."""
    detail = batch_event(job_id, status, batch_job_id="batch-1", queue=JOB_QUEUE_ARN, **kwargs)["detail"]
    for attempt in detail.get("attempts", []):
        attempt["taskProperties"] = [
            {**task, "containers": [{k: v for k, v in container.items() if k in ("name", "exitCode", "reason", "logStreamName")}
                                    for container in task["containers"]]}
            for task in attempt["taskProperties"]]
    return detail


class Killed(BaseException):
    """The Lambda dying mid-start: no `except Exception` (so no undo) sees it."""


class _Run:
    """A reconciler of the test provider, `later` seconds from now; each run must not scan."""

    def __init__(self, batch, later: int):
        from chalicelib import services
        from chalicelib.compute.environments import environments
        from chalicelib.compute.reconcile import Reconciler

        self._reconciler = Reconciler(services.job_events(), batch.client, services.job_service().finish_stored,
                                      [(e.id, e.job_queue) for e in environments().values()],
                                      clock=lambda: time.time() + later)

    def run(self):
        from chalicelib.models import JobRecord

        client = JobRecord._get_connection().connection.client
        scans: list[dict] = []
        record = lambda params, **_: scans.append(params)  # noqa: E731
        client.meta.events.register("before-call.dynamodb.Scan", record)
        try:
            report = self._reconciler.run()
        finally:
            client.meta.events.unregister("before-call.dynamodb.Scan", record)
        assert scans == [], "the reconciler scanned the jobs table"
        return report


_reconciler = _Run


def _record(job_id: str):
    from chalicelib.models import JobRecord

    return JobRecord.get(job_id, consistent_read=True)


def _slots() -> int:
    from chalicelib import services

    return services.usage_counter().current(["ocean-c2d-cpu"])["ocean-c2d-cpu"]


def _killed_start(client, provider, monkeypatch, target, name: str):
    """A start whose Lambda died when it called `target.<name>`, after its reservation: its job at
    1 with no Batch job, its orders used and its slot taken; (job, dataset order, algorithm order)."""
    chain, _, published = provider
    from chalicelib.models import JobRecord, OrderUse

    quote = initialize(client, published, chain.consumer.address)
    dataset_tx, algorithm_tx = order_both(chain, published, quote)

    def die(*args, **kwargs):
        raise Killed()

    with monkeypatch.context() as patch:
        patch.setattr(target, name, die)
        with pytest.raises(Killed):
            post_start(client, start_body(published, chain.consumer, time.time_ns(), dataset_tx, algorithm_tx))
    (job,) = JobRecord.scan()
    assert int(job.status) == 1 and not job.batch_job_id and len(list(OrderUse.scan())) == 2 and _slots() == 1
    return job, dataset_tx, algorithm_tx


def test_a_start_killed_before_submit_is_dispatched_from_its_record(client, provider, monkeypatch):
    """The start stored its plan (dispatchSpec) and manifest, then died before SubmitJob: the
    reconciler dispatches it from the record (the consumer's orders paid for it), once."""
    chain, batch, published = provider
    from chalicelib import services
    from chalicelib.compute.batch_naming import job_name

    account = chain.consumer
    job, dataset_tx, algorithm_tx = _killed_start(client, provider, monkeypatch, services.dispatcher(), "submit")
    from chalicelib import aws

    listed = aws.client("s3").list_objects_v2(Bucket=services.settings().bucket, Prefix=f"jobs/{job.job_id}/")
    assert listed.get("KeyCount", 0) == 1  # the manifest was written before SubmitJob

    # Too early: the start might still be running. Nothing is asked, nothing changes.
    assert _reconciler(batch, later=60).run().abandoned == []
    assert int(_record(job.job_id).status) == 1

    # Later: Batch knows no job of that name, so the start is finished from its record.
    batch.stubber.add_response("list_jobs", {"jobSummaryList": []},
                               {"jobQueue": "ocean-c2d-cpu", "filters": [{"name": "JOB_NAME", "values": [job_name(job.job_id)]}]})
    batch.expect_new_definition()
    batch.expect_submit("batch-healed")
    report = _reconciler(batch, later=400).run()
    assert report.dispatched == [job.job_id] and report.abandoned == [] and report.errors == 0
    healed = _record(job.job_id)
    assert int(healed.status) == 1 and healed.batch_job_id == "batch-healed" and _slots() == 1
    assert batch.submitted[-1]["jobName"] == job_name(job.job_id)
    assert batch.submitted[-1]["jobQueue"] == "ocean-c2d-cpu-net"  # the plan's network policy, as stored

    # Run again: the job has its Batch job; nothing is submitted twice (no Batch call is stubbed).
    assert _reconciler(batch, later=400).run().as_dict()["dispatched"] == []
    batch.stubber.assert_no_pending_responses()

    # The consumer's retry of the same start answers the job it made (its orders are its own).
    status, body = post_start(client, start_body(published, account, time.time_ns(), dataset_tx, algorithm_tx))
    assert status == 200 and body[0]["jobId"] == job.job_id, body
    assert len(batch.submitted) == 1


def test_a_start_killed_before_its_manifest_is_ended_and_its_order_and_slot_given_back(client, provider, monkeypatch):
    """Without its manifest the record cannot be dispatched (the inputs were decrypted in the
    dead request only): the reconciler undoes the start, and the orders start a job again."""
    chain, batch, published = provider
    from chalicelib.compute.batch_naming import job_name
    from chalicelib.models import OrderUse
    from chalicelib.results import JobObjects

    account = chain.consumer
    job, dataset_tx, algorithm_tx = _killed_start(client, provider, monkeypatch, JobObjects, "write_manifest")

    batch.stubber.add_response("list_jobs", {"jobSummaryList": []},
                               {"jobQueue": "ocean-c2d-cpu", "filters": [{"name": "JOB_NAME", "values": [job_name(job.job_id)]}]})
    report = _reconciler(batch, later=400).run()
    assert report.abandoned == [job.job_id] and report.errors == 0
    ended = _record(job.job_id)
    assert int(ended.status) == 31 and ended.date_finished and ended.termination_details.as_dict()["reason"]
    assert list(OrderUse.scan()) == [] and _slots() == 0
    assert ended.active_environment is None

    # Run again: the job is no longer a candidate (no Batch call is stubbed, so none may be made).
    assert _reconciler(batch, later=400).run().as_dict() == {"abandoned": [], "dispatched": [], "described": 0,
                                                            "applied": {}, "errors": 0}
    batch.stubber.assert_no_pending_responses()

    # The very same orders start a job now.
    batch.expect_new_definition()
    batch.expect_submit("batch-again")
    status, body = post_start(client, start_body(published, account, time.time_ns(), dataset_tx, algorithm_tx))
    assert status == 200 and body[0]["status"] == 1 and body[0]["jobId"] != job.job_id, body
    assert _slots() == 1


def test_a_submitted_job_whose_record_missed_the_batch_id_is_followed_not_ended(client, provider):
    chain, batch, published = provider
    from chalicelib.models import JobRecord

    job, _, _ = started_job(client, provider)
    JobRecord(job["jobId"]).update(actions=[JobRecord.batch_job_id.remove()])  # "submitted but not recorded"
    batch.stubber.add_response("list_jobs", {"jobSummaryList": [{"jobId": "batch-1", "jobName": f"c2d-{job['jobId']}"}]},
                               {"jobQueue": "ocean-c2d-cpu", "filters": ANY})
    running = described(job["jobId"], "RUNNING")
    batch.stubber.add_response("describe_jobs", {"jobs": [running]}, {"jobs": ["batch-1"]})
    report = _reconciler(batch, later=400).run()
    assert report.abandoned == [] and report.applied == {job["jobId"]: "updated"}
    record = _record(job["jobId"])
    assert int(record.status) == 40 and record.batch_job_id == "batch-1" and _slots() == 1
    batch.stubber.assert_no_pending_responses()


def test_a_lost_final_event_is_applied_from_describe_jobs_and_late_events_change_nothing(client, provider):
    chain, batch, published = provider
    from chalicelib import aws, services

    job, _, _ = started_job(client, provider)
    job_id = job["jobId"]
    assert deliver(client, batch_event(job_id, "RUNNING", batch_job_id="batch-1", queue=JOB_QUEUE_ARN))["status"] == 40
    # Quiet, but not for long enough: Batch is not asked.
    assert _reconciler(batch, later=60).run().described == 0

    # Batch's SUCCEEDED event is lost; DescribeJobs tells the reconciler.
    done = batch_event(job_id, "SUCCEEDED", batch_job_id="batch-1", queue=JOB_QUEUE_ARN,
                       exits={"configure": 0, "algorithm": 0, "publish": 0})
    batch.stubber.add_response("describe_jobs", {"jobs": [described(job_id, "SUCCEEDED", exits={"configure": 0, "algorithm": 0,
                                                                                              "publish": 0})]},
                               {"jobs": ["batch-1"]})
    report = _reconciler(batch, later=700).run()
    assert report.described == 1 and report.applied == {job_id: "updated"} and report.errors == 0
    record = _record(job_id)
    assert int(record.status) == 70 and record.termination_details.as_dict()["exitCode"] == 0
    assert _slots() == 0 and record.active_environment is None
    batch.stubber.assert_no_pending_responses()

    # The real event, late, and a duplicate of it: nothing changes, the slot is not given back twice.
    assert deliver(client, done) == {"action": "unchanged", "jobId": job_id, "status": 70}
    assert deliver(client, done)["action"] == "unchanged"
    assert _slots() == 0
    # The runner's late 70 still brings the results.
    s3 = aws.client("s3")
    s3.put_object(Bucket=services.settings().bucket, Key=f"jobs/{job_id}/outputs/result.csv", Body=b"42\n")
    assert deliver(client, runner_event(job_id, 70))["action"] == "attached"
    status = json.loads(client.http.get("/api/services/compute" + signed_query(chain.consumer, job_id)).body)[0]
    assert status["status"] == 70 and status["results"]
    # Ended jobs are no longer candidates: nothing is described again.
    assert _reconciler(batch, later=700).run().described == 0


def test_a_late_event_first_then_the_reconciler_changes_nothing(client, provider):
    chain, batch, published = provider
    job, _, _ = started_job(client, provider)
    job_id = job["jobId"]
    deliver(client, batch_event(job_id, "RUNNING", batch_job_id="batch-1", queue=JOB_QUEUE_ARN))
    # Batch says RUNNING (the record knows): the reconciler writes nothing.
    running = described(job_id, "RUNNING")
    batch.stubber.add_response("describe_jobs", {"jobs": [running]}, {"jobs": ["batch-1"]})
    before = _record(job_id).updated_at
    assert _reconciler(batch, later=700).run().applied == {job_id: "unchanged"}
    assert _record(job_id).updated_at == before and _slots() == 1
    # Batch failed it (the event is in flight); the reconciler sees FAILED first, then the event comes.
    failed = batch_event(job_id, "FAILED", batch_job_id="batch-1", queue=JOB_QUEUE_ARN,
                         exits={"configure": 0, "algorithm": 3, "publish": 0})
    batch.stubber.add_response("describe_jobs", {"jobs": [described(job_id, "FAILED", exits={"configure": 0, "algorithm": 3,
                                                                                           "publish": 0})]},
                               {"jobs": ["batch-1"]})
    assert _reconciler(batch, later=700).run().applied == {job_id: "updated"}
    assert int(_record(job_id).status) == 41 and _slots() == 0
    assert deliver(client, failed)["action"] == "unchanged"
    assert _slots() == 0
    batch.stubber.assert_no_pending_responses()


def test_batch_or_the_store_failing_is_counted_and_changes_nothing(client, provider):
    chain, batch, published = provider
    job, _, _ = started_job(client, provider)
    deliver(client, batch_event(job["jobId"], "RUNNING", batch_job_id="batch-1", queue=JOB_QUEUE_ARN))
    batch.stubber.add_client_error("describe_jobs", "ServerException", "Batch is down", 500)
    report = _reconciler(batch, later=700).run()
    assert report.errors == 1 and report.applied == {}
    assert int(_record(job["jobId"]).status) == 40 and _slots() == 1
    batch.stubber.assert_no_pending_responses()


def test_describe_jobs_is_asked_100_ids_at_a_time(aws):
    from chalicelib.compute.events import JobEvents
    from chalicelib.compute.reconcile import Reconciler
    from chalicelib.models import JobRecord

    now = int(time.time())
    for index in range(150):
        JobRecord(f"job-{index:03d}", owner="0x" + "1" * 40, document_id="did:op:d", date_created=now - 5000,
                  status=40, status_text="Running algorithm", environment="ocean-c2d-cpu", chain_id=8996,
                  batch_job_id=f"b-{index:03d}", updated_at=now - 4000, active_environment="ocean-c2d-cpu").save()

    batch = StubbedBatch()
    asked: list[list[str]] = []
    batch.client.meta.events.register("provide-client-params.batch.DescribeJobs",
                                      lambda params, **_: asked.append(params["jobs"]))
    batch.stubber.add_response("describe_jobs", {"jobs": []}, {"jobs": ANY})
    batch.stubber.add_response("describe_jobs", {"jobs": []}, {"jobs": ANY})
    report = Reconciler(JobEvents(JobRecord, queues={"ocean-c2d-cpu"}), batch.client, lambda job: False,
                        [("ocean-c2d-cpu", "ocean-c2d-cpu")]).run()
    batch.stubber.assert_no_pending_responses()
    assert [len(ids) for ids in asked] == [100, 50] and report.errors == 0 and report.described == 0
    assert sorted(i for ids in asked for i in ids) == [f"b-{index:03d}" for index in range(150)]


def test_an_undispatched_job_is_looked_for_in_the_network_queue_too(aws):
    """The record does not say which queue the dispatcher chose: a job stuck at 1 without a Batch
    id is found in its environment's network queue, and followed, not ended."""
    from chalicelib.compute.events import JobEvents
    from chalicelib.compute.reconcile import Reconciler
    from chalicelib.compute.batch_naming import job_name
    from chalicelib.models import JobRecord

    now = int(time.time())
    JobRecord("job-net", owner="0x" + "1" * 40, document_id="did:op:d", date_created=now - 5000, status=1,
              status_text="Warming up", environment="cpu", chain_id=8996, updated_at=now - 5000,
              active_environment="cpu").save()
    batch = StubbedBatch()
    named = [{"name": "JOB_NAME", "values": [job_name("job-net")]}]
    batch.stubber.add_response("list_jobs", {"jobSummaryList": []}, {"jobQueue": "c2d-cpu", "filters": named})
    batch.stubber.add_response("list_jobs", {"jobSummaryList": [{"jobId": "b-net", "jobName": job_name("job-net")}]},
                               {"jobQueue": "c2d-cpu-net", "filters": named})
    batch.stubber.add_response("describe_jobs", {"jobs": []}, {"jobs": ["b-net"]})
    abandoned: list[str] = []
    report = Reconciler(JobEvents(JobRecord, queues={"c2d-cpu", "c2d-cpu-net"}), batch.client,
                        lambda job, now: abandoned.append(job.job_id) or "abandoned",
                        [("cpu", ["c2d-cpu", "c2d-cpu-net"])]).run()
    batch.stubber.assert_no_pending_responses()
    assert abandoned == [] and report.abandoned == [] and report.described == 0


def test_the_scheduled_function_runs_the_reconciler(client):
    event = client.events.generate_cw_event(source="aws.events", detail_type="Scheduled Event", detail={},
                                            resources=["arn:aws:events:us-east-1:123456789012:rule/reconcile"])
    response = client.lambda_.invoke("reconcile_jobs", event)
    assert response.payload == {"abandoned": [], "dispatched": [], "described": 0, "applied": {}, "errors": 0,
                                "terminated": [], "secretsDeleted": 0}
