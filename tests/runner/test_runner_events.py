"""Event transports (stdout, EventBridge) and the settings/CLI contract."""
from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from runner.aws import events_client
from runner.events import (DETAIL_TYPE, SOURCE, EventBridgeEmitter, StdoutEmitter,
                           make_emitter)
from runner.settings import GIB, ConfigError, Settings

from chalicelib.job_key import detail_signed
from runner_test_key import RUNNER_KEY

ROOT = Path(__file__).resolve().parents[2]
AT = 1_700_000_000


def test_stdout_lines() -> None:
    out = io.StringIO()
    StdoutEmitter("job-9", out, clock=lambda: AT).emit(31, "input 0 of did:op:x: HTTP 404")
    StdoutEmitter("job-9", out, clock=lambda: AT).emit(70, results=[{"filename": "a"}])
    lines = out.getvalue().splitlines()
    assert lines[0] == ('C2D-EVENT {"jobId":"job-9","status":31,"at":1700000000,'
                        '"reason":"input 0 of did:op:x: HTTP 404"}')
    assert json.loads(lines[1].removeprefix("C2D-EVENT ")) == {
        "jobId": "job-9", "status": 70, "at": AT, "results": [{"filename": "a"}]}


def test_events_are_signed_with_the_jobs_key() -> None:
    """Issue 18, point 2: with the job's key every detail carries its HMAC (chalicelib.job_key),
    the provider's handler refuses the job's events without it."""
    out = io.StringIO()
    StdoutEmitter("job-9", out, key=RUNNER_KEY, attempt=2).emit(70, results=[{"filename": "a"}])
    detail = json.loads(out.getvalue().removeprefix("C2D-EVENT "))
    assert detail_signed(RUNNER_KEY, detail) and detail["attempt"] == 2
    assert not detail_signed(RUNNER_KEY, {**detail, "jobId": "job-8"})


def test_eventbridge_delivery_through_moto(aws) -> None:
    """moto cannot invoke Lambda, but it forwards matching events to an SQS target."""
    sqs, events = boto3.client("sqs"), boto3.client("events")
    queue = sqs.create_queue(QueueName="stage-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"]
    events.put_rule(Name="runner", EventPattern=json.dumps({"source": [SOURCE]}))
    events.put_targets(Rule="runner", Targets=[{"Id": "q", "Arn": arn}])

    assert EventBridgeEmitter("job-1", "default", lambda: events_client("us-east-1"), key=RUNNER_KEY).emit(60)
    body = json.loads(sqs.receive_message(QueueUrl=queue)["Messages"][0]["Body"])
    assert body["source"] == SOURCE and body["detail-type"] == DETAIL_TYPE
    assert detail_signed(RUNNER_KEY, body["detail"])  # as EventBridge delivers it
    assert {k: v for k, v in body["detail"].items() if k not in ("at", "signature")} == {"jobId": "job-1", "status": 60}


def _stubbed_events() -> tuple[object, Stubber]:
    client = boto3.client("events", region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="x")
    return client, Stubber(client)


def test_eventbridge_retries_failed_entries() -> None:
    client, stub = _stubbed_events()
    expected = {"Entries": [{"Source": SOURCE, "DetailType": DETAIL_TYPE,
                             "EventBusName": "c2d", "Detail": '{"jobId":"j","status":20,"at":1700000000}'}]}
    stub.add_response("put_events", {"FailedEntryCount": 1, "Entries": [
        {"ErrorCode": "ThrottlingException", "ErrorMessage": "slow down"}]}, expected)
    stub.add_response("put_events", {"FailedEntryCount": 0, "Entries": [{"EventId": "1"}]},
                      expected)
    sleeps: list[float] = []
    with stub:
        assert EventBridgeEmitter("j", "c2d", lambda: client, sleep=sleeps.append, clock=lambda: AT).emit(20)
    stub.assert_no_pending_responses()
    assert sleeps == [0.5]


def test_eventbridge_gives_up_loudly_without_raising(caplog) -> None:
    client, stub = _stubbed_events()
    for _ in range(3):
        stub.add_client_error("put_events", "AccessDeniedException", http_status_code=400)
    with stub, caplog.at_level(logging.WARNING, logger="runner"):
        delivered = EventBridgeEmitter("j", "default", lambda: client, attempts=3,
                                       sleep=lambda s: None).emit(70)
    assert delivered is False
    assert "NOT delivered after 3 attempts: AccessDeniedException" in caplog.text


def test_settings_defaults_and_emitter_choice() -> None:
    settings = Settings.from_env({"JOB_ID": "j1", "MANIFEST_URI": "s3://bkt/jobs/j1/m.json",
                                  "AWS_DEFAULT_REGION": "eu-west-1", "C2D_JOB_KEY": RUNNER_KEY})
    assert settings.region == "eu-west-1" and settings.algorithm_uid == 4000
    assert (settings.results_bucket, settings.data_dir, settings.event_bus) == (
        "bkt", Path("/data"), "default")
    assert settings.max_input_bytes == 5 * GIB and settings.allow_private is False
    assert settings.ipfs_gateway == "https://ipfs.io"
    assert isinstance(make_emitter(settings), EventBridgeEmitter)
    stdout = Settings.from_env({"JOB_ID": "j1", "RESULTS_BUCKET": "out", "RUNNER_EVENTS": "stdout",
                                "IPFS_GATEWAY": "http://gw:8080/", "C2D_REGION": "eu-west-1",
                                "AWS_REGION": "us-east-1", "C2D_JOB_KEY": RUNNER_KEY}, need_manifest=False)
    assert stdout.region == "eu-west-1"
    assert stdout.results_bucket == "out" and stdout.ipfs_gateway == "http://gw:8080"
    assert isinstance(make_emitter(stdout), StdoutEmitter)


@pytest.mark.parametrize("env", [
    {},
    {"JOB_ID": "../x", "MANIFEST_URI": "s3://b/k"},
    {"JOB_ID": "j", "MANIFEST_URI": "https://b/k"},
    {"JOB_ID": "j", "MANIFEST_URI": "s3://b/k", "MAX_INPUT_BYTES": "lots", "C2D_REGION": "us-east-1"},
    {"JOB_ID": "j", "MANIFEST_URI": "s3://b/k", "FETCH_TIMEOUT": "0", "C2D_REGION": "us-east-1"},
    {"JOB_ID": "j", "MANIFEST_URI": "s3://b/k", "RUNNER_EVENTS": "kafka", "C2D_REGION": "us-east-1"},
    {"JOB_ID": "j", "MANIFEST_URI": "s3://b/k"},
    {"JOB_ID": "j", "MANIFEST_URI": "s3://b/k", "C2D_REGION": "us-east-1; rm"},
    {"JOB_ID": "j", "MANIFEST_URI": "s3://b/k", "C2D_REGION": "us-east-1", "ALGORITHM_UID": "0"},
    {"JOB_ID": "j", "MANIFEST_URI": "s3://b/k", "C2D_REGION": "us-east-1",
     "AWS_BATCH_JOB_ATTEMPT": "x"},
    {"JOB_ID": "j", "MANIFEST_URI": "s3://b/k?versionId=1&versionId=2", "C2D_REGION": "us-east-1"},
    {"JOB_ID": "j", "MANIFEST_URI": "s3://b/k?other=1", "C2D_REGION": "us-east-1"},
    {"JOB_ID": "j", "MANIFEST_URI": "s3://b/k", "C2D_REGION": "us-east-1", "C2D_JOB_KEY": None},
    {"JOB_ID": "j", "MANIFEST_URI": "s3://b/k", "C2D_REGION": "us-east-1", "C2D_JOB_KEY": "short"},
])
def test_settings_refuse_bad_env(env: dict[str, str]) -> None:
    """Each is refused for its own fault: every other variable, the job key included, is good."""
    env = {"C2D_JOB_KEY": RUNNER_KEY, **env} if env else env
    with pytest.raises(ConfigError):
        Settings.from_env({name: value for name, value in env.items() if value is not None})


def test_cli_exit_code_2_without_env() -> None:
    proc = subprocess.run([sys.executable, "-m", "runner", "publish"], cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2 and "JOB_ID" in proc.stderr and proc.stdout == ""
