"""Where computeStreamableLogs finds the algorithm's log: the local dispatcher (C8), CloudWatch
Logs of the algorithm container (C9: awslogs, stream name from DescribeJobs; moto for Logs and
botocore's Stubber for Batch), then the published algorithmLog result in S3."""
from __future__ import annotations

import time

import boto3
import pytest
from botocore.stub import Stubber

from chalicelib.compute.validation import ComputeValidator
from chalicelib.errors import ServiceUnavailable
from chalicelib.models import JobRecord
from chalicelib.node.logs import MAX_LOG_PAGES, AlgorithmLogs

GROUP = "/aws/batch/job"
QUEUE = "arn:aws:batch:us-east-1:123456789012:job-queue/q"


def job(status=40, batch_job_id="b-1", results=None) -> JobRecord:
    return JobRecord("job-1", owner="0x" + "1" * 40, document_id="did:op:1", date_created=1, status=status,
                     status_text="x", environment="e", chain_id=1, batch_job_id=batch_job_id, results=results)


class Local:
    def __init__(self, content):
        self.content = content

    def algorithm_log(self, job_id: str):
        assert job_id == "job-1"
        return self.content


def reader(dispatcher=None, batch=None, cloudwatch=True, max_bytes=1024 * 1024):
    logs = boto3.client("logs", region_name="us-east-1")
    s3 = boto3.client("s3", region_name="us-east-1")
    return AlgorithmLogs(dispatcher, batch=lambda: batch, logs=lambda: logs, s3=lambda: s3, bucket="test-results",
                         log_group=GROUP, max_bytes=max_bytes, cloudwatch=cloudwatch)


def stubbed_batch(detail: dict | None):
    client = boto3.client("batch", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    jobs = [] if detail is None else [{"jobName": "c2d-x", "jobId": "b-1", "jobQueue": QUEUE, "status": "RUNNING",
                                       "startedAt": 1, "jobDefinition": "d", **detail}]
    stubber.add_response("describe_jobs", {"jobs": jobs}, {"jobs": ["b-1"]})
    stubber.activate()
    return client, stubber


def test_the_local_dispatcher_log(aws):
    assert reader(Local(b"tick 0\n")).read(job()) == b"tick 0\n"
    assert reader(Local(None)).read(job()) is None
    assert reader(Local(b"x" * 100), max_bytes=10).read(job()) == b"x" * 10


def test_cloudwatch_stream_of_the_algorithm_container_paged(aws):
    logs = boto3.client("logs", region_name="us-east-1")
    logs.create_log_group(logGroupName=GROUP)
    logs.create_log_stream(logGroupName=GROUP, logStreamName="c2d/default/s1")
    now = int(time.time() * 1000)
    logs.put_log_events(logGroupName=GROUP, logStreamName="c2d/default/s1",
                        logEvents=[{"timestamp": now + i, "message": f"line {i}"} for i in range(30)])
    batch, stubber = stubbed_batch({"ecsProperties": {"taskProperties": [{"containers": [
        {"name": "configure", "logStreamName": "c2d/default/other"}, {"name": "algorithm", "logStreamName": "c2d/default/s1"}]}]}})
    content = reader(batch=batch).read(job())
    assert content == "".join(f"line {i}\n" for i in range(30)).encode()
    stubber.assert_no_pending_responses()
    batch, _ = stubbed_batch({"container": {"logStreamName": "c2d/default/s1"}})
    assert reader(batch=batch, max_bytes=20).read(job()) == b"line 0\nline 1\nline 2"


def test_no_stream_yet_is_no_log(aws):
    batch, _ = stubbed_batch({"ecsProperties": {"taskProperties": [{"containers": [
        {"name": "algorithm", "logStreamName": "c2d/default/missing"}]}]}})
    assert reader(batch=batch).read(job()) is None  # the group does not exist yet either
    batch, _ = stubbed_batch(None)
    assert reader(batch=batch).read(job()) is None
    batch, stubber = stubbed_batch(None)
    assert reader(batch=batch).read(job(status=20)) is None, "before the algorithm runs, Batch is not asked"
    assert len(stubber._queue) == 1
    assert reader(batch=batch, cloudwatch=False).read(job()) is None


def test_batch_down_is_503(aws):
    client = boto3.client("batch", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    stubber.add_client_error("describe_jobs", "ServerException", "down", 500)
    stubber.activate()
    with pytest.raises(ServiceUnavailable) as raised:
        reader(batch=client).read(job())
    assert "down" not in str(raised.value)


def test_the_published_log_wins_once_the_job_published_it(aws):
    boto3.client("s3", region_name="us-east-1").put_object(Bucket="test-results", Key="jobs/job-1/logs/algorithm.log",
                                                           Body=b"read 60 rows\n")
    published = [{"type": "algorithmLog", "key": "jobs/job-1/logs/algorithm.log", "filename": "algorithm.log"}]
    assert reader(Local(b"stale")).read(job(status=70, results=published)) == b"read 60 rows\n"
    gone = [{"type": "algorithmLog", "key": "jobs/job-1/logs/nope.log"}]
    assert reader(Local(None), cloudwatch=False).read(job(status=70, results=gone)) is None


def test_assets_pointing_at_the_node_prefix_are_served_here():
    validator = ComputeValidator("0x" + "1" * 40, {}, provider_url="https://api.example.com/")
    assert validator._served_here({"serviceEndpoint": "https://api.example.com"})
    assert validator._served_here({"serviceEndpoint": "https://API.example.com/node/"})
    assert not validator._served_here({"serviceEndpoint": "https://api.example.com/nodes"})
    assert not validator._served_here({"serviceEndpoint": "https://elsewhere.example.com/node"})


def test_a_log_of_tiny_lines_costs_at_most_max_pages_calls(aws):
    """An algorithm printing one-byte lines must not turn one poll into dozens of GetLogEvents
    calls (the account's quota, the request's time): the head of the log, in MAX_LOG_PAGES pages."""
    logs = boto3.client("logs", region_name="us-east-1")
    if not logs.describe_log_groups(logGroupNamePrefix=GROUP)["logGroups"]:
        logs.create_log_group(logGroupName=GROUP)
    logs.create_log_stream(logGroupName=GROUP, logStreamName="c2d/default/tiny")
    now = int(time.time() * 1000)
    for start in range(0, 60_000, 10_000):  # six pages of GetLogEvents' 10,000 events
        logs.put_log_events(logGroupName=GROUP, logStreamName="c2d/default/tiny",
                            logEvents=[{"timestamp": now + i, "message": "x"} for i in range(start, start + 10_000)])
    calls = []
    reading = reader(batch=stubbed_batch({"container": {"logStreamName": "c2d/default/tiny"}})[0])
    reading._logs().meta.events.register("before-call.logs.GetLogEvents", lambda **kwargs: calls.append(1))
    content = reading.read(job())
    assert len(calls) == MAX_LOG_PAGES == 5
    assert content == b"x\n" * 50_000
