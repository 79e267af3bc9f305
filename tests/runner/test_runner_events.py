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

ROOT = Path(__file__).resolve().parents[2]


def test_stdout_lines() -> None:
    out = io.StringIO()
    StdoutEmitter("job-9", out).emit(31, "input 0 of did:op:x: HTTP 404")
    StdoutEmitter("job-9", out).emit(70, results=[{"filename": "a"}])
    lines = out.getvalue().splitlines()
    assert lines[0] == ('C2D-EVENT {"jobId":"job-9","status":31,'
                        '"reason":"input 0 of did:op:x: HTTP 404"}')
    assert json.loads(lines[1].removeprefix("C2D-EVENT ")) == {
        "jobId": "job-9", "status": 70, "results": [{"filename": "a"}]}


def test_eventbridge_delivery_through_moto(aws) -> None:
    """moto cannot invoke Lambda, but it forwards matching events to an SQS target."""
    sqs, events = boto3.client("sqs"), boto3.client("events")
    queue = sqs.create_queue(QueueName="stage-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"]
    events.put_rule(Name="runner", EventPattern=json.dumps({"source": [SOURCE]}))
    events.put_targets(Rule="runner", Targets=[{"Id": "q", "Arn": arn}])

    assert EventBridgeEmitter("job-1", "default", lambda: events_client("us-east-1")).emit(60)
    body = json.loads(sqs.receive_message(QueueUrl=queue)["Messages"][0]["Body"])
    assert body["source"] == SOURCE and body["detail-type"] == DETAIL_TYPE
    assert body["detail"] == {"jobId": "job-1", "status": 60}


def _stubbed_events() -> tuple[object, Stubber]:
    client = boto3.client("events", region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="x")
    return client, Stubber(client)


def test_eventbridge_retries_failed_entries() -> None:
    client, stub = _stubbed_events()
    expected = {"Entries": [{"Source": SOURCE, "DetailType": DETAIL_TYPE,
                             "EventBusName": "c2d", "Detail": '{"jobId":"j","status":20}'}]}
    stub.add_response("put_events", {"FailedEntryCount": 1, "Entries": [
        {"ErrorCode": "ThrottlingException", "ErrorMessage": "slow down"}]}, expected)
    stub.add_response("put_events", {"FailedEntryCount": 0, "Entries": [{"EventId": "1"}]},
                      expected)
    sleeps: list[float] = []
    with stub:
        assert EventBridgeEmitter("j", "c2d", lambda: client, sleep=sleeps.append).emit(20)
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
                                  "AWS_DEFAULT_REGION": "eu-west-1"})
    assert settings.region == "eu-west-1" and settings.algorithm_uid == 4000
    assert (settings.results_bucket, settings.data_dir, settings.event_bus) == (
        "bkt", Path("/data"), "default")
    assert settings.max_input_bytes == 5 * GIB and settings.allow_private is False
    assert settings.ipfs_gateway == "https://ipfs.io"
    assert isinstance(make_emitter(settings), EventBridgeEmitter)
    stdout = Settings.from_env({"JOB_ID": "j1", "RESULTS_BUCKET": "out", "RUNNER_EVENTS": "stdout",
                                "IPFS_GATEWAY": "http://gw:8080/", "C2D_REGION": "eu-west-1",
                                "AWS_REGION": "us-east-1"}, need_manifest=False)
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
])
def test_settings_refuse_bad_env(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env(env)


def test_cli_exit_code_2_without_env() -> None:
    proc = subprocess.run([sys.executable, "-m", "runner", "publish"], cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2 and "JOB_ID" in proc.stderr and proc.stdout == ""
