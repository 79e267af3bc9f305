"""The two EventBridge handlers of app.py, invoked through Chalice's test client on moto."""
from __future__ import annotations

import pytest

from chalicelib.compute import status as st
from chalicelib.models import EnvironmentUsage, JobRecord

QUEUE_ARN = "arn:aws:batch:us-east-1:123456789012:job-queue/ocean-c2d-cpu"


def make_job(job_id: str, status: int) -> None:
    JobRecord(job_id=job_id, owner="0x" + "1" * 40, document_id="did:op:data", date_created=1_700_000_000,
              status=status, status_text=st.status_text(status), environment="ocean-c2d-cpu", chain_id=8996,
              batch_job_id="b-1").save()


def batch_detail(job_id: str, status: str, **extra) -> dict:
    detail = {"jobArn": "arn:aws:batch:us-east-1:123456789012:job/b-1", "jobName": f"c2d-{job_id}",
              "jobId": "b-1", "jobQueue": QUEUE_ARN, "status": status, "attempts": [],
              "createdAt": 1_700_000_000_000, "tags": {"c2d:jobId": job_id}, "parameters": {},
              "jobDefinition": "arn:aws:batch:us-east-1:123456789012:job-definition/c2d-algo-1:1"}
    detail.update(extra)
    return detail


def invoke(client, function: str, source: str, detail_type: str, detail: dict):
    event = client.events.generate_cw_event(source=source, detail_type=detail_type, detail=detail,
                                            resources=[], region="us-east-1")
    return client.lambda_.invoke(function, event).payload


def test_batch_and_runner_events_reach_the_job(client):
    make_job("job-1", 1)
    EnvironmentUsage(environment="ocean-c2d-cpu", running=1).save()
    assert invoke(client, "batch_job_events", "aws.batch", "Batch Job State Change",
                  batch_detail("job-1", "RUNNING", startedAt=1_700_000_010_000)) == \
        {"action": "updated", "jobId": "job-1", "status": 40}
    assert invoke(client, "runner_stage_events", "ocean.c2d.runner", "Compute Job Stage Change",
                  {"jobId": "job-1", "status": 31, "reason": "input 0 of did:op:data: HTTP 404"})["status"] == 31
    record = JobRecord.get("job-1")
    assert (record.status, record.status_text) == (31, "Data provisioning failed")
    # The first terminal status gave the environment's slot back, once.
    assert EnvironmentUsage.get("ocean-c2d-cpu").running == 0
    invoke(client, "batch_job_events", "aws.batch", "Batch Job State Change",
           batch_detail("job-1", "FAILED", stoppedAt=1_700_000_020_000,
                        ecsProperties={"taskProperties": [{"containers": [{"name": "configure", "exitCode": 1}]}]}))
    assert JobRecord.get("job-1").status == 31
    assert EnvironmentUsage.get("ocean-c2d-cpu").running == 0


def test_foreign_and_malformed_events_are_absorbed(client):
    make_job("job-2", 10)
    foreign = batch_detail("job-2", "SUCCEEDED")
    foreign["jobQueue"] = "arn:aws:batch:us-east-1:123456789012:job-queue/not-ours"
    assert invoke(client, "batch_job_events", "aws.batch", "Batch Job State Change", foreign)["action"] == "ignored"
    assert invoke(client, "runner_stage_events", "ocean.c2d.runner", "Compute Job Stage Change",
                  {"status": 70})["action"] == "ignored"
    assert JobRecord.get("job-2").status == 10


def test_a_store_outage_fails_the_invocation_so_lambda_retries(client, monkeypatch):
    from pynamodb.exceptions import GetError

    def down(*args, **kwargs):
        raise GetError("connection refused")

    monkeypatch.setattr(JobRecord, "get", down)
    with pytest.raises(RuntimeError, match="retry"):
        invoke(client, "runner_stage_events", "ocean.c2d.runner", "Compute Job Stage Change",
               {"jobId": "job-3", "status": 20})
