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
    assert reader(batch=batch).read(job(status=1)) is None, "before Batch places the task, Batch is not asked"
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


ACCOUNT = "123456789012"
TASK_ID = "8f3c2a1b0d9e4f5a6b7c8d9e0f1a2b3c"


def task_arn(task_id: str) -> str:
    return f"arn:aws:ecs:us-east-1:{ACCOUNT}:task/AWSBatch-ocean-c2d-cpu-ce-0f2b6a3c/{task_id}"


def starting_event(job_id: str, task_id: str = TASK_ID) -> dict:
    """Batch's STARTING event of a job's task, as EventBridge delivers it: the task placed (its
    ARN in ecsProperties.taskProperties), no container has a log stream name yet."""
    containers = [{"name": name, "image": "img", "essential": name == "publish", "environment": [],
                   "mountPoints": [], "resourceRequirements": [{"type": "VCPU", "value": "1"}]}
                  for name in ("configure", "algorithm", "publish")]
    return {"version": "0", "id": "c8f9c4b5-76e5-d76a-f980-7011e206042b", "detail-type": "Batch Job State Change",
            "source": "aws.batch", "account": ACCOUNT, "time": "2026-05-01T10:00:00Z", "region": "us-east-1",
            "resources": [f"arn:aws:batch:us-east-1:{ACCOUNT}:job/b-1"],
            "detail": {"jobArn": f"arn:aws:batch:us-east-1:{ACCOUNT}:job/b-1", "jobName": f"c2d-{job_id}",
                       "jobId": "b-1", "jobQueue": QUEUE, "status": "STARTING", "attempts": [],
                       "createdAt": 1777629500000, "retryStrategy": {"attempts": 3}, "dependsOn": [],
                       "jobDefinition": f"arn:aws:batch:us-east-1:{ACCOUNT}:job-definition/c2d-algo-0123:1",
                       "parameters": {}, "tags": {"c2d:jobId": job_id}, "propagateTags": True,
                       "platformCapabilities": ["EC2"],
                       "ecsProperties": {"taskProperties": [{
                           "containerInstanceArn": f"arn:aws:ecs:us-east-1:{ACCOUNT}:container-instance/AWSBatch-"
                                                   f"ocean-c2d-cpu-ce-0f2b6a3c/0123456789abcdef0123456789abcdef",
                           "taskArn": task_arn(task_id), "containers": containers}]}}}


def stream_with(lines: list[str], task_id: str = TASK_ID) -> str:
    logs = boto3.client("logs", region_name="us-east-1")
    if not logs.describe_log_groups(logGroupNamePrefix=GROUP)["logGroups"]:
        logs.create_log_group(logGroupName=GROUP)
    stream = f"c2d/algorithm/{task_id}"
    logs.create_log_stream(logGroupName=GROUP, logStreamName=stream)
    logs.put_log_events(logGroupName=GROUP, logStreamName=stream,
                        logEvents=[{"timestamp": int(time.time() * 1000) + i, "message": line} for i, line in enumerate(lines)])
    return stream


def test_while_the_algorithm_runs_its_log_streams_from_the_task_batch_named(aws):
    """Issue 18, point 5: the job stays STARTING (10, then the runner's 20 and 30) until publish
    starts, so the log is served while the job is below 40, from the stream the STARTING event
    named (awslogs' `<prefix>/<container name>/<task id>`), without asking Batch again."""
    from chalicelib.compute.events import JobEvents

    stream_with(["epoch 1", "epoch 2"])
    record = job(status=1)
    record.save()
    outcome = JobEvents(JobRecord, queues={"q"}).handle(starting_event("job-1"))
    assert outcome.status == 10
    running = JobRecord.get("job-1", consistent_read=True)
    assert running.log_stream == f"c2d/algorithm/{TASK_ID}" and running.starting_at
    running.status = 30  # configure done: the algorithm runs, Batch still says STARTING
    unused, stubber = stubbed_batch(None)
    assert reader(batch=unused).read(running) == b"epoch 1\nepoch 2\n"
    assert len(stubber._queue) == 1, "the stream came from the event: DescribeJobs not asked"


def test_without_the_event_the_stream_comes_from_describe_jobs_task_arn(aws):
    """The STARTING event lost: DescribeJobs of a STARTING job gives the task's ARN (its
    containers have no logStreamName yet); the stream is derived from it."""
    stream_with(["first line"], task_id="0" * 32)
    detail = starting_event("job-1", task_id="0" * 32)["detail"]
    batch, stubber = stubbed_batch({**detail, "status": "STARTING"})
    assert reader(batch=batch).read(job(status=20)) == b"first line\n"
    stubber.assert_no_pending_responses()


def test_the_stream_name_is_awslogs_prefix_container_and_task_id():
    from chalicelib.compute.batch_naming import algorithm_log_stream

    assert algorithm_log_stream(task_arn(TASK_ID)) == f"c2d/algorithm/{TASK_ID}"
    assert algorithm_log_stream(f"arn:aws:ecs:us-east-1:{ACCOUNT}:task/{TASK_ID}") == f"c2d/algorithm/{TASK_ID}"  # old format
    assert algorithm_log_stream(f"arn:aws-us-gov:ecs:us-gov-west-1:{ACCOUNT}:task/c/{TASK_ID}") == f"c2d/algorithm/{TASK_ID}"
    for bad in (None, "", "task/x", f"arn:aws:ecs:us-east-1:{ACCOUNT}:task/c/../../x", f"arn:aws:s3:::{TASK_ID}",
                f"arn:aws:ecs:us-east-1:{ACCOUNT}:container-instance/c/{TASK_ID}"):
        assert algorithm_log_stream(bad) is None, bad
