"""Batch and runner events → job record (DESIGN §3.6, §4), on in-process moto DynamoDB.

Events are shaped like the real ones: EventBridge envelopes of "Batch Job State Change" (the
JobDetail of a multi-container ecsProperties job: jobArn, jobQueue ARN, status, statusReason,
attempts with per-container exit codes, epoch-ms times, tags) and of the runner's
"Compute Job Stage Change" (runner/events.py, runner/publish.py).
"""
from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from chalicelib.compute import status as st
from chalicelib.compute.event_planning import JobState, plan
from chalicelib.compute.event_signals import RunnerStage, batch_state_event
from chalicelib.compute.events import JobEvents
from chalicelib.job_key import new_job_key, sign_detail
from chalicelib.models import JobRecord

ACCOUNT = "123456789012"
QUEUE = "ocean-c2d-cpu"
QUEUE_ARN = f"arn:aws:batch:us-east-1:{ACCOUNT}:job-queue/{QUEUE}"
T0 = 1_700_000_000
NOW = T0 + 5_000
KEY = new_job_key()  # what make_job's records hold and runner_event signs with
CLUSTER = "AWSBatch-ocean-c2d-cpu-ce-0f2b6a3c-5d1e-3b8c-9a47-1e2d3c4b5a69"  # the ECS cluster Batch made
TASK_ID = "8f3c2a1b0d9e4f5a6b7c8d9e0f1a2b3c"


# -- event builders -----------------------------------------------------------------------

def envelope(source: str, detail_type: str, detail: dict, resources: list[str] | None = None) -> dict:
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": detail_type, "source": source,
            "account": ACCOUNT, "time": "2023-11-14T22:13:20Z", "region": "us-east-1",
            "resources": resources or [], "detail": detail}


def batch_event(job_id: str, status: str, *, batch_job_id: str = "b-1", reason: str | None = None,
                exits: dict[str, int | None] | None = None, reasons: dict[str, str] | None = None,
                queue: str = QUEUE_ARN, tagged: bool = True, attempts: int = 1, prior_attempts: int = 0) -> dict:
    """A Batch Job State Change for our three-container job; `exits` per container name.
    A final event lists `attempts` attempts (its own last); another lists `prior_attempts`
    attempts already lost to the instance (a retry in progress)."""
    arn = f"arn:aws:batch:us-east-1:{ACCOUNT}:job/{batch_job_id}"
    final = status in ("SUCCEEDED", "FAILED")
    containers = []
    for name in ("configure", "algorithm", "publish"):
        container: dict[str, Any] = {"name": name, "image": "img", "essential": name == "publish",
                                     "resourceRequirements": [{"type": "VCPU", "value": "1"}]}
        if final and exits is not None and exits.get(name) is not None:
            container["exitCode"] = exits[name]
            container["logStreamName"] = f"c2d/default/{name}"
        if reasons and name in reasons:
            container["reason"] = reasons[name]
        containers.append(container)
    task = {"containerInstanceArn": f"arn:aws:ecs:us-east-1:{ACCOUNT}:container-instance/{CLUSTER}/{TASK_ID[::-1]}",
            "taskArn": f"arn:aws:ecs:us-east-1:{ACCOUNT}:task/{CLUSTER}/{TASK_ID}", "containers": containers}
    detail: dict[str, Any] = {
        "jobArn": arn, "jobName": f"c2d-{job_id}", "jobId": batch_job_id, "jobQueue": queue,
        "status": status, "attempts": [], "createdAt": (T0 - 100) * 1000,
        "retryStrategy": {"attempts": 3, "evaluateOnExit": [
            {"onStatusReason": "Host EC2*", "action": "retry"}, {"onReason": "*", "action": "exit"}]},
        "dependsOn": [], "parameters": {},
        "jobDefinition": f"arn:aws:batch:us-east-1:{ACCOUNT}:job-definition/c2d-algo-0123:1",
        "tags": {"c2d:jobId": job_id, "c2d:environment": QUEUE} if tagged else {},
        "propagateTags": True, "platformCapabilities": ["EC2"],
        # a task exists from STARTING on (Batch placed it)
        "ecsProperties": {"taskProperties": [{"containers": containers, **(
            {"taskArn": task["taskArn"], "containerInstanceArn": task["containerInstanceArn"]}
            if status not in ("SUBMITTED", "PENDING", "RUNNABLE") else {})}]},
        "timeout": {"attemptDurationSeconds": 3600},
    }
    if status in ("RUNNING", "SUCCEEDED", "FAILED"):
        detail["startedAt"] = (T0 - 50) * 1000
    if final:
        detail["stoppedAt"] = T0 * 1000
        detail["statusReason"] = reason if reason is not None else "Essential container in task exited"
        detail["attempts"] = [{"container": {}, "startedAt": (T0 - 50) * 1000, "stoppedAt": T0 * 1000,
                               "statusReason": detail["statusReason"],
                               "taskProperties": [task]}] * attempts
    else:
        if reason:
            detail["statusReason"] = reason
        lost = {"container": {}, "startedAt": (T0 - 900) * 1000, "stoppedAt": (T0 - 800) * 1000,
                "statusReason": "Host EC2 (instance i-0lost) terminated.", "taskProperties": [task]}
        detail["attempts"] = [lost] * prior_attempts
    return envelope("aws.batch", "Batch Job State Change", detail, [arn])


def results_for(job_id: str, with_output: bool = True) -> list[dict]:
    prefix = f"jobs/{job_id}/"
    found = [{"filename": "configure.log", "filesize": 210, "type": "configurationLog", "key": prefix + "logs/configure.log"},
             {"filename": "algorithm.log", "filesize": 30, "type": "algorithmLog", "key": prefix + "logs/algorithm.log"},
             {"filename": "publish.log", "filesize": 99, "type": "publishLog", "key": prefix + "logs/publish.log"}]
    if with_output:
        found.insert(0, {"filename": "result.csv", "filesize": 12, "type": "output", "key": prefix + "outputs/result.csv"})
    return found


def record_key(job_id: str) -> str:
    """The job's own key as its record holds it (what its runner signs with), else KEY."""
    try:
        return JobRecord.get(job_id, consistent_read=True).runner_key or KEY
    except Exception:  # noqa: BLE001 - no table or no record yet: the tests' default key
        return KEY


def runner_event(job_id: str, code: int, reason: str = "", results: list | None = None,
                 key: str | None = None, **extra: Any) -> dict:
    """The runner's event as runner/events.py sends it: signed with the job's key (`key`, by
    default the one its record holds; "" sends it unsigned)."""
    detail: dict[str, Any] = {"jobId": job_id, "status": code, "at": T0}
    if reason:
        detail["reason"] = reason
    if code in (62, 70) or results is not None:  # a failed configure reports its own log (31/32)
        detail.update({"results": results if results is not None else results_for(job_id),
                       "resultsTruncated": False, "resultsKey": f"jobs/{job_id}/results.json",
                       "bucket": "test-results"})
    detail.update(extra)
    signing = record_key(job_id) if key is None else key
    if signing:
        detail["signature"] = sign_detail(signing, detail)
    return envelope("ocean.c2d.runner", "Compute Job Stage Change", detail)


# -- fixtures -----------------------------------------------------------------------------

def make_job(job_id: str, status: int = 1, batch_job_id: str | None = "b-1", key: str | None = KEY) -> JobRecord:
    record = JobRecord(job_id=job_id, owner="0x" + "1" * 40, document_id="did:op:data", date_created=T0 - 100,
                       status=status, status_text=st.status_text(status), environment=QUEUE, chain_id=8996,
                       batch_job_id=batch_job_id, runner_key=key)
    record.save()
    return record


def load(job_id: str) -> JobRecord:
    return JobRecord.get(job_id, consistent_read=True)


class Terminals:
    def __init__(self) -> None:
        self.jobs: list[tuple[str, int]] = []

    def __call__(self, record: JobRecord) -> None:
        self.jobs.append((record.job_id, record.status))


@pytest.fixture
def writes(aws):
    """Every UpdateItem PynamoDB sends, as the API parameters botocore received."""
    calls: list[dict] = []
    events = JobRecord._get_connection().connection.client.meta.events

    def record(params: dict, **_: Any) -> None:
        calls.append(params)

    events.register("provide-client-params.dynamodb.UpdateItem", record)
    yield calls
    events.unregister("provide-client-params.dynamodb.UpdateItem", record)


@pytest.fixture
def terminals():
    return Terminals()


@pytest.fixture
def handler(aws, terminals):
    return JobEvents(JobRecord, queues={QUEUE, "ocean-c2d-gpu"}, clock=lambda: NOW,
                     results_bucket="test-results", on_terminal=terminals)


# -- Batch mapping ------------------------------------------------------------------------

@pytest.mark.parametrize("batch_status, expected", [
    ("SUBMITTED", 1), ("PENDING", 1), ("RUNNABLE", 1), ("STARTING", 10), ("RUNNING", 40)])
def test_batch_progress(handler, batch_status, expected):
    make_job("j", status=1)
    handler.handle(batch_event("j", batch_status))
    record = load("j")
    assert (record.status, record.status_text) == (expected, st.STATUS_TEXT[expected])
    assert record.date_finished is None


def test_batch_progress_never_regresses(handler, writes):
    make_job("j", status=30)
    for batch_status in ("SUBMITTED", "RUNNABLE"):
        assert handler.handle(batch_event("j", batch_status)).action == "unchanged"
    assert writes == []
    # a late STARTING moves nothing back; it notes, once, when the task started and its log stream
    assert handler.handle(batch_event("j", "STARTING")).action == "noted"
    assert handler.handle(batch_event("j", "STARTING")).action == "unchanged"
    record = load("j")
    assert (record.status, record.starting_at, record.log_stream) == (30, NOW, f"c2d/algorithm/{TASK_ID}")
    assert len(writes) == 1
    assert handler.handle(batch_event("j", "RUNNING")).status == 40
    make_job("k", status=60)
    assert handler.handle(batch_event("k", "RUNNING")).action == "noted"  # the runner is further: its stream only
    assert handler.handle(batch_event("k", "RUNNING")).action == "unchanged" and load("k").status == 60


@pytest.mark.parametrize("name, event, expected, exit_code", [
    ("all stages exit 0",
     dict(status="SUCCEEDED", exits={"configure": 0, "algorithm": 0, "publish": 0}), 70, 0),
    ("algorithm failed, publish still ran (non-essential algorithm)",
     dict(status="SUCCEEDED", exits={"configure": 0, "algorithm": 2, "publish": 0}), 41, 2),
    ("algorithm failed and Batch says FAILED",
     dict(status="FAILED", exits={"configure": 0, "algorithm": 1, "publish": 0}), 41, 1),
    ("attempt timed out while the algorithm ran",
     dict(status="FAILED", reason="Job attempt duration exceeded timeout",
          exits={"configure": 0, "algorithm": 137}), 41, 137),
    ("out of memory",
     dict(status="FAILED", exits={"configure": 0, "algorithm": 137},
          reasons={"algorithm": "OutOfMemoryError: Container killed due to memory usage"}), 41, 137),
    ("publish failed",
     dict(status="FAILED", exits={"configure": 0, "algorithm": 0, "publish": 1}), 62, 0),
    ("publish failed after the algorithm failed: agrees with the runner's own 62",
     dict(status="FAILED", exits={"configure": 0, "algorithm": 3, "publish": 1}), 62, 3),
    ("configure failed, no runner code known",
     dict(status="FAILED", exits={"configure": 1}), 31, None),
    ("runner could not even read its settings (exit 2, no event)",
     dict(status="FAILED", exits={"configure": 2}), 31, None),
    ("algorithm image cannot be pulled",
     dict(status="FAILED", reasons={"algorithm": "CannotPullContainerError: pull access denied for bad/image"}),
     32, None),
    ("runner image cannot be pulled",
     dict(status="FAILED", reasons={"configure": "CannotPullContainerError: not found"}), 31, None),
    ("stopped by the owner",
     dict(status="FAILED", reason="c2d-stop: Job stopped by owner", exits={"configure": 0, "algorithm": 137}),
     7, 137),
])
def test_batch_final_mapping(handler, name, event, expected, exit_code):
    make_job("j", status=40)
    outcome = handler.handle(batch_event("j", **event))
    record = load("j")
    assert (outcome.action, record.status, record.status_text) == ("updated", expected, st.STATUS_TEXT[expected]), name
    assert record.date_finished == T0  # the event's stoppedAt (epoch ms) in seconds
    assert record.termination_details.as_dict()["exitCode"] == exit_code
    assert record.batch_status == event["status"]


def test_failure_reasons_are_kept(handler):
    make_job("j", status=40)
    handler.handle(batch_event("j", "FAILED", reason="Job attempt duration exceeded timeout",
                               exits={"configure": 0, "algorithm": 137}))
    assert load("j").termination_details.as_dict() == {
        "exitCode": 137, "reason": "Job attempt duration exceeded timeout", "OOMKilled": False}
    make_job("k", status=40)
    handler.handle(batch_event("k", "FAILED", exits={"configure": 0, "algorithm": 137},
                               reasons={"algorithm": "OutOfMemoryError: Container killed due to memory usage"}))
    assert load("k").termination_details.as_dict() == {"exitCode": 137, "reason": "OutOfMemoryError", "OOMKilled": True}


@pytest.mark.parametrize("status_before, stage, expected", [
    (20, 20, 31),      # lost while configuring
    (40, 30, 31),      # lost while the algorithm ran: not "Algorithm failed"
    (60, 60, 31),      # lost while publishing
    (60, 70, 70),      # the runner had finished publishing
])
def test_the_last_attempt_lost_to_the_instance_ends_with_its_own_reason(handler, status_before, stage, expected):
    """The instance vanished on the last attempt (a spot reclaim): no exit codes, only 'Host EC2
    ... terminated'. The job says so; it is not reported as the algorithm's failure."""
    record = make_job("j", status=status_before)
    record.update(actions=[JobRecord.stage.set(stage)])
    handler.handle(batch_event("j", "FAILED", reason="Host EC2 (instance i-0abc) terminated.", attempts=3))
    record = load("j")
    assert record.status == expected and record.batch_attempt == 3
    if expected != 70:
        reason = record.termination_details.as_dict()["reason"]
        assert "instance was lost" in reason and "Host EC2 (instance i-0abc) terminated." in reason


@pytest.mark.parametrize("status_before, expected", [(20, 31), (40, 41), (60, 62)])
def test_failed_without_any_verdict_or_reason_goes_by_how_far_the_job_got(handler, status_before, expected):
    make_job("j", status=status_before)
    handler.handle(batch_event("j", "FAILED", reason=""))
    assert load("j").status == expected


# -- the job definition's shape (dispatch.py): configure → algorithm (COMPLETE) → publish -------

@pytest.mark.parametrize("batch_status", ["SUCCEEDED", "FAILED"])
@pytest.mark.parametrize("code", [31, 32])
def test_configure_failure_from_the_batch_event_alone(handler, terminals, batch_status, code):
    """The runner's own event is lost: configure's exit code (C4) says 31 or 32; the algorithm
    container ran its script, found no ready marker and exited 0 without running anything."""
    make_job("j", status=20)
    handler.handle(batch_event("j", batch_status, exits={"configure": code, "algorithm": 0, "publish": 0}))
    record = load("j")
    assert record.status == code and terminals.jobs == [("j", code)]
    assert record.termination_details.as_dict()["reason"] == st.status_text(code)


@pytest.mark.parametrize("code, expected", [(1, 31), (32, 32)])
def test_a_dependency_stopped_algorithm_did_not_run(handler, code, expected):
    """With the older dependsOn SUCCESS the agent force-stops the algorithm (143, dependency
    graph) and never starts publish: that is configure's failure, not the algorithm's."""
    make_job("j", status=20)
    handler.handle(batch_event("j", "FAILED", exits={"configure": code, "algorithm": 143}, reasons={
        "algorithm": "CannotStartContainerError: dependency graph: container configure exited 1",
        "publish": "CannotStartContainerError: dependency graph: publish will never start"}))
    record = load("j")
    assert record.status == expected and record.termination_details.as_dict()["exitCode"] is None


def test_configure_failure_reports_no_algorithm_exit_code(handler):
    make_job("j", status=20)
    handler.handle(batch_event("j", "SUCCEEDED", exits={"configure": 31, "algorithm": 0, "publish": 0}))
    assert load("j").termination_details.as_dict()["exitCode"] is None  # it exited 0 without running


def test_an_algorithm_container_that_could_not_start_after_a_good_configure_is_32(handler):
    make_job("j", status=30)
    handler.handle(batch_event("j", "FAILED", exits={"configure": 0, "algorithm": 143, "publish": 0}, reasons={
        "algorithm": "CannotStartContainerError: Error response from daemon: exec format error"}))
    record = load("j")
    assert record.status == 32 and record.termination_details.as_dict()["exitCode"] is None


def test_an_algorithm_out_of_time_fails_with_its_reason_and_keeps_its_logs(handler):
    """maxJobDuration is enforced in the algorithm's container (exit 124); publish still ran."""
    make_job("j", status=40)
    handler.handle(runner_event("j", 70, results=results_for("j", with_output=False)))
    handler.handle(batch_event("j", "SUCCEEDED", exits={"configure": 0, "algorithm": 124, "publish": 0}))
    record = load("j")
    assert record.status == 41
    assert record.termination_details.as_dict() == {
        "exitCode": 124, "reason": "Algorithm ran out of time (maxJobDuration) and was stopped", "OOMKilled": False}
    assert {r["type"] for r in record.results} == {"algorithmLog", "configurationLog", "publishLog"}


# -- attempts -----------------------------------------------------------------------------

def test_runner_events_of_an_older_attempt_change_nothing(handler, writes):
    make_job("j", status=20)
    handler.handle(runner_event("j", 20, attempt=1))
    outcome = handler.handle(batch_event("j", "RUNNABLE", prior_attempts=1))  # Batch retries: attempt 2
    assert outcome.action == "attempt" and load("j").batch_attempt == 2 and load("j").status == 20
    before = len(writes)
    for late in (runner_event("j", 31, reason="input 0: connection reset", attempt=1),
                 runner_event("j", 70, attempt=1)):
        assert handler.handle(late).action == "unchanged"
    assert len(writes) == before
    assert handler.handle(runner_event("j", 30, attempt=2)).status == 30
    handler.handle(runner_event("j", 70, attempt=2))
    handler.handle(batch_event("j", "SUCCEEDED", exits={"configure": 0, "algorithm": 0, "publish": 0}, attempts=2))
    record = load("j")
    assert (record.status, record.batch_attempt, record.results) == (70, 2, results_for("j"))


def test_a_newer_runner_attempt_is_recorded_and_old_batch_progress_does_not_lower_it(handler):
    make_job("j", status=20)
    assert handler.handle(runner_event("j", 30, attempt=3)).status == 30
    assert load("j").batch_attempt == 3
    handler.handle(batch_event("j", "RUNNING", prior_attempts=1))  # a late event of attempt 2
    assert load("j").batch_attempt == 3
    assert handler.handle(runner_event("j", 31, reason="x", attempt=2)).action == "unchanged"


def test_the_attempt_write_is_conditional_on_it_rising(handler, writes):
    make_job("j", status=40)
    handler.handle(batch_event("j", "RUNNABLE", prior_attempts=1))
    assert "attribute_not_exists" in writes[-1]["ConditionExpression"] and "<" in writes[-1]["ConditionExpression"]


def test_configure_failure_keeps_the_runner_code(handler):
    """The runner's 32 came first (it sends it before exiting): Batch's FAILED changes nothing."""
    make_job("j", status=10)
    handler.handle(runner_event("j", 20))
    handler.handle(runner_event("j", 32, reason="algorithm: HTTP 404"))
    assert handler.handle(batch_event("j", "FAILED", exits={"configure": 1})).action == "unchanged"
    record = load("j")
    assert (record.status, record.stage_failure) == (32, 32)
    assert record.termination_details.as_dict() == {"exitCode": None, "reason": "algorithm: HTTP 404"}


def test_events_of_another_batch_job_are_ignored(handler, writes):
    make_job("j", status=40, batch_job_id="b-current")
    outcome = handler.handle(batch_event("j", "SUCCEEDED", batch_job_id="b-old",
                                         exits={"configure": 0, "algorithm": 0, "publish": 0}))
    assert outcome.action == "unchanged" and load("j").status == 40 and writes == []


def test_batch_job_id_is_recorded_when_missing(handler):
    make_job("j", status=1, batch_job_id=None)
    handler.handle(batch_event("j", "STARTING", batch_job_id="b-9"))
    assert load("j").batch_job_id == "b-9"


def test_job_found_by_name_when_untagged(handler):
    make_job("j", status=1)
    assert handler.handle(batch_event("j", "STARTING", tagged=False)).status == 10


# -- runner stages and results ------------------------------------------------------------

def test_runner_stages_then_success(handler, terminals):
    make_job("j", status=10)
    seen = []
    for event in (runner_event("j", 20), runner_event("j", 30), batch_event("j", "RUNNING"),
                  runner_event("j", 60), runner_event("j", 70)):
        handler.handle(event)
        seen.append(load("j").status)
    assert seen == [20, 30, 40, 60, 60]  # the runner's 70 waits for Batch's verdict
    record = load("j")
    assert record.results == results_for("j") and record.results_key == "jobs/j/results.json"
    assert record.results_truncated is False and record.date_finished is None
    handler.handle(batch_event("j", "SUCCEEDED", exits={"configure": 0, "algorithm": 0, "publish": 0}))
    record = load("j")
    assert (record.status, record.date_finished, record.results) == (70, T0, results_for("j"))
    assert terminals.jobs == [("j", 70)]


def test_running_at_is_when_the_job_first_ran(handler):
    """Escrow bills from runningAt: Batch's startedAt of the first event at 40..60, never moved
    by later events; a job whose RUNNING was lost takes it from the final event; one that never
    reached 40 has none."""
    make_job("j", status=10)
    handler.handle(runner_event("j", 20))
    assert load("j").running_at is None
    handler.handle(batch_event("j", "RUNNING"))
    assert load("j").running_at == T0 - 50
    handler.handle(runner_event("j", 60))
    handler.handle(batch_event("j", "SUCCEEDED", exits={"configure": 0, "algorithm": 0, "publish": 0}))
    assert (load("j").running_at, load("j").date_finished) == (T0 - 50, T0)
    make_job("lost", status=1)
    handler.handle(batch_event("lost", "SUCCEEDED", exits={"configure": 0, "algorithm": 0, "publish": 0}))
    assert load("lost").running_at == T0 - 50
    make_job("no-batch-time", status=1)
    handler.handle(runner_event("no-batch-time", 40))
    assert load("no-batch-time").running_at == NOW
    make_job("never", status=1)
    handler.handle(runner_event("never", 31, reason="input 0 unavailable"))
    assert load("never").running_at is None
    # the instance was lost: Batch runs attempt 2, billed from its own start
    retry = batch_event("j2", "RUNNING", prior_attempts=1)
    retry["detail"]["startedAt"] = (T0 - 10) * 1000
    make_job("j2", status=1)
    handler.handle(batch_event("j2", "RUNNING"))
    assert load("j2").running_at == T0 - 50
    handler.handle(retry)
    assert (load("j2").running_at, load("j2").batch_attempt) == (T0 - 10, 2)
    handler.handle(batch_event("j2", "RUNNING"))  # a late event of attempt 1 changes nothing
    assert load("j2").running_at == T0 - 10


def test_runner_completion_after_batch_success_attaches_results(handler, writes):
    make_job("j", status=40)
    handler.handle(batch_event("j", "SUCCEEDED", exits={"configure": 0, "algorithm": 0, "publish": 0}))
    assert load("j").results is None
    outcome = handler.handle(runner_event("j", 70))
    assert (outcome.action, outcome.status) == ("attached", 70)
    record = load("j")
    assert (record.status, record.results) == (70, results_for("j"))
    assert len(writes) == 2
    # Write-once: a repeated 70 (even with other results) changes nothing.
    assert handler.handle(runner_event("j", 70, results=results_for("j", with_output=False))).action == "unchanged"
    assert len(writes) == 2 and load("j").results == results_for("j")


def test_algorithm_failure_keeps_its_log(handler):
    make_job("j", status=40)
    handler.handle(runner_event("j", 70, results=results_for("j", with_output=False)))
    handler.handle(batch_event("j", "SUCCEEDED", exits={"configure": 0, "algorithm": 1, "publish": 0}))
    record = load("j")
    assert record.status == 41 and {r["type"] for r in record.results} >= {"algorithmLog"}


@pytest.mark.parametrize("code, text", [(31, "Data provisioning failed"), (32, "Algorithm provisioning failed")])
def test_runner_configure_failures(handler, terminals, code, text):
    make_job("j", status=40)  # Batch said RUNNING while configure was still working
    handler.handle(runner_event("j", code, reason="input 0 of did:op:x: HTTP 403"))
    record = load("j")
    assert (record.status, record.status_text, record.stage_failure, record.date_finished) == (code, text, code, NOW)
    assert record.termination_details.as_dict()["reason"] == "input 0 of did:op:x: HTTP 403"
    assert terminals.jobs == [("j", code)]


def test_runner_publish_failure_keeps_partial_results(handler):
    make_job("j", status=60)
    partial = results_for("j")[:2]
    handler.handle(runner_event("j", 62, reason="upload of publish.log failed (AccessDenied)", results=partial))
    record = load("j")
    assert (record.status, record.results) == (62, partial)


def test_a_runner_event_counts_only_signed_with_the_jobs_own_key(handler, writes):
    """Issue 18, point 2: every job's task role may PutEvents as the runner, so the handler takes
    a runner event only with the HMAC of the job's own key (chalicelib.job_key), which only its
    configure and publish containers hold. Job A's key cannot speak for job B; an unsigned or
    re-signed event changes nothing, not even results pointing at B's own prefix."""
    key_a = new_job_key()
    make_job("job-a", status=30, key=key_a)
    make_job("job-b", status=30, key=new_job_key())
    forged = [runner_event("job-b", 31, reason="forged failure", key=key_a),
              runner_event("job-b", 70, key=key_a),
              runner_event("job-b", 60, key=""),  # unsigned
              runner_event("job-b", 62, reason="x", key=str(new_job_key()))]
    tampered = runner_event("job-b", 60)
    tampered["detail"]["status"] = 31
    for event in [*forged, tampered]:
        outcome = handler.handle(event)
        assert (outcome.action, outcome.detail) == ("ignored", "runner event not signed with the job's key")
    record = load("job-b")
    assert (record.status, record.results, record.stage_failure) == (30, None, None) and writes == []
    assert handler.handle(runner_event("job-a", 60, key=key_a)).status == 60  # its own key: taken
    assert handler.handle(runner_event("job-b", 60)).status == 60


def test_a_record_without_a_key_takes_its_runners_unsigned_events(handler):
    """Jobs started before jobs had keys run an older runner that signs nothing."""
    make_job("old", status=30, key=None)
    assert handler.handle(runner_event("old", 60, key="")).status == 60


def test_results_only_from_the_jobs_outputs_and_logs(handler):
    """Whatever an event says: never the manifest (decrypted URLs), results.json, another job's
    objects, a log type outside logs/ or an output outside outputs/."""
    make_job("j", status=40)
    forged = results_for("j") + [
        {"filename": "manifest.json", "filesize": 1, "type": "output", "key": "jobs/j/manifest.json"},
        {"filename": "manifest.json", "filesize": 1, "type": "configurationLog", "key": "jobs/j/manifest.json"},
        {"filename": "results.json", "filesize": 1, "type": "publishLog", "key": "jobs/j/results.json"},
        {"filename": "m", "filesize": 1, "type": "output", "key": "jobs/j/outputs/../manifest.json"},
        {"filename": "m", "filesize": 1, "type": "output", "key": "jobs/j/outputs//x"},
        {"filename": "m", "filesize": 1, "type": "output", "key": "jobs/j/outputs/"},
        {"filename": "m", "filesize": 1, "type": "output", "key": "jobs/j/logs/configure.log"},
        {"filename": "m", "filesize": 1, "type": "algorithmLog", "key": "jobs/j/outputs/x"},
    ]
    handler.handle(runner_event("j", 70, results=forged))
    assert load("j").results == results_for("j")


def test_results_outside_the_job_are_dropped(handler):
    make_job("j", status=40)
    forged = results_for("j") + [
        {"filename": "x", "filesize": 1, "type": "output", "key": "jobs/other-job/outputs/x"},
        {"filename": "y", "filesize": 1, "type": "output", "key": "jobs/j/../other/y"},
        {"filename": "z", "filesize": -1, "type": "output", "key": "jobs/j/outputs/z"},
        {"filename": "w", "filesize": 1, "type": "secret", "key": "jobs/j/outputs/w"},
        "junk",
    ]
    handler.handle(runner_event("j", 70, results=forged, resultsKey="jobs/other/results.json"))
    record = load("j")
    assert record.results == results_for("j") and record.results_key is None


def test_results_in_another_bucket_are_not_recorded(handler):
    make_job("j", status=40)
    handler.handle(runner_event("j", 70, bucket="someone-elses-bucket"))
    record = load("j")
    assert record.status == 60 and record.results is None


def test_deleted_jobs_take_nothing(handler, writes):
    make_job("j", status=8)
    for event in (runner_event("j", 70), batch_event("j", "FAILED", reason="c2d-stop: Job deleted"),
                  runner_event("j", 62, reason="x")):
        assert handler.handle(event).action == "unchanged"
    assert writes == [] and load("j").status == 8


def test_stopped_job_is_sticky(handler, terminals):
    make_job("j", status=7)
    handler.handle(batch_event("j", "SUCCEEDED", exits={"configure": 0, "algorithm": 0, "publish": 0}))
    assert load("j").status == 7 and terminals.jobs == []


# -- filtering and robustness -------------------------------------------------------------

MALFORMED = [
    None, [], "text", 42, {}, {"source": "aws.batch"},
    {"source": "aws.batch", "detail-type": "Batch Job State Change", "detail": "x"},
    {"source": "aws.batch", "detail-type": "Batch Job State Change", "detail": {"status": "SUCCEEDED"}},
    {"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification", "detail": {"state": "running"}},
    {"source": "ocean.c2d.runner", "detail-type": "Compute Job Stage Change", "detail": {"jobId": "j"}},
    {"source": "ocean.c2d.runner", "detail-type": "Compute Job Stage Change", "detail": {"jobId": "j", "status": "70"}},
    {"source": "ocean.c2d.runner", "detail-type": "Compute Job Stage Change", "detail": {"jobId": "j", "status": True}},
    {"source": "ocean.c2d.runner", "detail-type": "Compute Job Stage Change", "detail": {"jobId": "j", "status": 8}},
    {"source": "ocean.c2d.runner", "detail-type": "Compute Job Stage Change", "detail": {"jobId": "j", "status": 41}},
    {"source": "ocean.c2d.runner", "detail-type": "Compute Job Stage Change",
     "detail": {"jobId": "j", "status": 70, "results": {"not": "a list"}}},
    {"source": "ocean.c2d.runner", "detail-type": "Compute Job Stage Change", "detail": {"jobId": "x" * 5000, "status": 20}},
    {"source": "ocean.c2d.runner", "detail-type": "Compute Job Stage Change", "detail": {"jobId": ["j"], "status": 20}},
    {"source": "ocean.c2d.runner", "detail-type": "Compute Job Stage Change", "detail": {"jobId": "j", "status": 20, "attempt": "2"}},
    {"source": "ocean.c2d.runner", "detail-type": "Compute Job Stage Change", "detail": {"jobId": "j", "status": 20, "attempt": 0}},
    {"source": "ocean.c2d.runner", "detail-type": "Compute Job Stage Change", "detail": {"jobId": "j", "status": 20, "attempt": True}},
]


@pytest.mark.parametrize("event", MALFORMED)
def test_malformed_events_are_ignored(handler, writes, event):
    make_job("j", status=40)
    assert handler.handle(event).action == "ignored"
    assert writes == [] and load("j").status == 40


def test_batch_events_with_broken_parts_are_ignored_or_read_safely(handler):
    make_job("j", status=40)
    event = batch_event("j", "SUCCEEDED", exits={"configure": 0, "algorithm": 0, "publish": 0})
    event["detail"]["ecsProperties"] = {"taskProperties": "oops"}
    event["detail"]["attempts"] = [None, {"taskProperties": [{"containers": [7, {"name": 3}]}]}]
    event["detail"]["stoppedAt"] = "yesterday"
    assert handler.handle(event).status == 70
    assert load("j").date_finished == NOW


def test_foreign_queue_and_unknown_job(handler, writes):
    make_job("j", status=1)
    other_queue = "arn:aws:batch:us-east-1:123456789012:job-queue/someone-else"
    assert handler.handle(batch_event("j", "STARTING", queue=other_queue)).action == "ignored"
    assert handler.handle(batch_event("nobody", "STARTING")).action == "ignored"
    assert handler.handle(runner_event("nobody", 20)).action == "ignored"
    untagged = batch_event("j", "STARTING", tagged=False)
    untagged["detail"]["jobName"] = "someone-elses-job"
    assert handler.handle(untagged).action == "ignored"
    assert writes == [] and load("j").status == 1


def test_plain_queue_names_and_arns_both_match(aws):
    make_job("j", status=1)
    assert JobEvents(queues={QUEUE_ARN}).handle(batch_event("j", "STARTING")).status == 10


def test_events_of_the_network_queues_are_the_provider_s_own(aws, monkeypatch):
    """Network-allowed jobs run on their environment's networkJobQueue: the deployment's handler
    (build_job_events) applies their events, and still ignores queues it does not use."""
    from chalicelib.compute import environments
    from chalicelib.compute.events import build_job_events

    monkeypatch.setenv("COMPUTE_ENVIRONMENTS", json.dumps([
        {"id": "cpu", "chainIds": [8996], "jobQueue": QUEUE, "networkJobQueue": f"{QUEUE}-net", "nCPU": 1,
         "ramGB": 1, "diskGB": 1, "maxJobs": 2, "maxJobDuration": 60}]))
    environments.environments.cache_clear()
    try:
        handler = build_job_events("test-results")
    finally:
        environments.environments.cache_clear()
    make_job("net", status=1)
    make_job("sealed", status=1, batch_job_id="b-2")
    assert handler.handle(batch_event("net", "STARTING", queue=f"{QUEUE_ARN}-net")).status == 10
    assert handler.handle(batch_event("sealed", "STARTING", batch_job_id="b-2")).status == 10
    foreign = batch_event("net", "RUNNING", queue=f"{QUEUE_ARN}-other")
    assert handler.handle(foreign).action == "ignored" and load("net").status == 10


def test_store_outage_is_reported_not_raised(handler, monkeypatch):
    from pynamodb.exceptions import GetError

    def down(*args, **kwargs):
        raise GetError("connection refused")

    monkeypatch.setattr(JobRecord, "get", down)
    outcome = handler.handle(runner_event("j", 20))
    assert outcome.action == "error"


def test_terminal_hook_failure_does_not_undo_the_update(aws):
    def broken(record):
        raise RuntimeError("counter table missing")

    make_job("j", status=40)
    outcome = JobEvents(queues={QUEUE}, on_terminal=broken).handle(runner_event("j", 31, reason="x"))
    assert outcome.status == 31 and load("j").status == 31


# -- one conditional write per event ------------------------------------------------------

def test_each_event_is_one_conditional_update_item(handler, writes):
    make_job("j", status=1)
    sequence = [batch_event("j", "RUNNABLE"), batch_event("j", "STARTING"), runner_event("j", 20),
                batch_event("j", "RUNNING"), runner_event("j", 30), runner_event("j", 60),
                runner_event("j", 70), runner_event("j", 70),
                batch_event("j", "SUCCEEDED", exits={"configure": 0, "algorithm": 0, "publish": 0})]
    counts = []
    for event in sequence:
        before = len(writes)
        handler.handle(event)
        counts.append(len(writes) - before)
    assert counts == [0, 1, 1, 1, 1, 1, 1, 0, 1]  # the late 30 still notes when the algorithm could start
    assert all("ConditionExpression" in call and call.get("Key") == {"jobId": {"S": "j"}} for call in writes)


def test_concurrent_change_between_read_and_write_is_replanned(aws, writes):
    """Batch's SUCCEEDED lands between our read and our write of the runner's 70: the
    conditional write fails, the job is re-read, and the results are attached to the 70."""
    make_job("j", status=40)

    class Racing:
        raced = False

        def __getattr__(self, name):
            return getattr(JobRecord, name)

        def get(self, *args, **kwargs):
            record = JobRecord.get(*args, **kwargs)
            if not Racing.raced:
                Racing.raced = True
                JobEvents(queues={QUEUE}).handle(
                    batch_event("j", "SUCCEEDED", exits={"configure": 0, "algorithm": 0, "publish": 0}))
            return record

    outcome = JobEvents(Racing(), queues={QUEUE}).handle(runner_event("j", 70))
    record = load("j")
    assert (outcome.action, record.status, record.results) == ("attached", 70, results_for("j"))
    assert len(writes) == 3  # the racing SUCCEEDED, our refused write, our re-planned write


def test_synthetic_batch_events_for_the_local_dispatcher(handler):
    """What a Batch-less backend sends must read exactly like Batch's own events."""
    make_job("j", status=1, batch_job_id="local-1")
    handler.handle(batch_state_event("j", "local-1", QUEUE, "RUNNING"))
    handler.handle(runner_event("j", 70))
    assert load("j").status == 60
    handler.handle(batch_state_event("j", "local-1", QUEUE, "SUCCEEDED", stopped_at_ms=T0 * 1000,
                                     exit_codes={"configure": 0, "algorithm": 3, "publish": 0}))
    record = load("j")
    assert (record.status, record.date_finished, record.termination_details.as_dict()["exitCode"]) == (41, T0, 3)
    make_job("k", status=40, batch_job_id="local-2")
    handler.handle(batch_state_event("k", "local-2", QUEUE, "FAILED", status_reason="c2d-stop: Job stopped",
                                     exit_codes={"configure": 0, "algorithm": None}))
    assert load("k").status == 7


def test_oversized_results_are_cut_to_fit_the_item(handler):
    make_job("j", status=40)
    many = [{"filename": f"part-{i:05d}.csv", "filesize": i, "type": "output",
             "key": f"jobs/j/outputs/part-{i:05d}.csv"} for i in range(5000)]
    handler.handle(runner_event("j", 70, results=many))
    record = load("j")
    assert 1000 < len(record.results) < 5000 and record.results == many[:len(record.results)]
    assert record.results_truncated is True and record.results_key == "jobs/j/results.json"


def test_plan_is_pure():
    stage = RunnerStage("j", 70, results=[])
    assert plan(JobState(status=40), stage).status == 60
    assert plan(JobState(status=60, has_results=True, stage=70), stage) is None
    assert plan(JobState(status=70), stage).status is None  # attach only
    assert plan(JobState(status=8), stage) is None


# -- any order, any duplicates ------------------------------------------------------------

def scenario(kind: str, job_id: str) -> tuple[list[dict], Any, bool]:
    """The events one real run of `kind` produces, the final status it must end in (or a function
    of the delivery order) and whether results must be recorded."""
    ok = {"configure": 0, "algorithm": 0, "publish": 0}
    start = [batch_event(job_id, s) for s in ("SUBMITTED", "RUNNABLE", "STARTING", "RUNNING")]
    configured = [runner_event(job_id, 20), runner_event(job_id, 30)]
    published = [runner_event(job_id, 60), runner_event(job_id, 70)]
    if kind == "success":
        return start + configured + published + [batch_event(job_id, "SUCCEEDED", exits=ok)], 70, True
    if kind == "spot_reclaimed_then_success":
        retry = [batch_event(job_id, s) for s in ("RUNNABLE", "STARTING", "RUNNING")]
        return (start + [runner_event(job_id, 20)] + retry + configured + published
                + [batch_event(job_id, "SUCCEEDED", exits=ok, attempts=2)]), 70, True
    if kind == "algorithm_fails":
        final = batch_event(job_id, "SUCCEEDED", exits={**ok, "algorithm": 2})
        return start + configured + published + [final], 41, True
    if kind == "publish_fails":
        return (start + configured
                + [runner_event(job_id, 60), runner_event(job_id, 62, reason="upload failed (AccessDenied)")]
                + [batch_event(job_id, "FAILED", exits={**ok, "publish": 1})]), 62, True
    if kind == "data_fails":
        return (start + [runner_event(job_id, 20), runner_event(job_id, 31, reason="input 0: HTTP 404")]
                + [batch_event(job_id, "FAILED", exits={"configure": 1})]), 31, False
    if kind == "algorithm_download_fails":
        runner_32 = runner_event(job_id, 32, reason="algorithm: HTTP 404")
        failed = batch_event(job_id, "FAILED", exits={"configure": 1})

        def expected(order: list[dict]) -> int:
            # The corner of a configure exiting 1: Batch's verdict first cannot tell 32 from 31.
            return 32 if order.index(runner_32) < order.index(failed) else 31

        return start + [runner_event(job_id, 20), runner_32, failed], expected, False
    if kind == "checksum_mismatch":
        # configure exits 32 (C4); the algorithm container finds no ready marker; publish runs
        final = batch_event(job_id, "SUCCEEDED", exits={"configure": 32, "algorithm": 0, "publish": 0})
        return (start + [runner_event(job_id, 20), runner_event(job_id, 32, reason="algorithm file 0: checksum")]
                + published + [final]), 32, True
    if kind == "out_of_time":
        final = batch_event(job_id, "SUCCEEDED", exits={**ok, "algorithm": 124})
        return start + configured + published + [final], 41, True
    if kind == "stale_attempt":
        stale = runner_event(job_id, 31, reason="input 0: connection reset", attempt=1)
        retry = [batch_event(job_id, s, prior_attempts=1) for s in ("RUNNABLE", "STARTING", "RUNNING")]
        second = [runner_event(job_id, code, attempt=2) for code in (20, 30, 60, 70)]
        final = batch_event(job_id, "SUCCEEDED", exits=ok, attempts=2)
        revealing = [*retry, *second, final]

        def expected(order: list[dict]) -> int:
            # nothing can tell attempt 1's failure is stale before attempt 2 shows itself
            return 31 if order.index(stale) < min(order.index(e) for e in revealing) else 70

        return start + [runner_event(job_id, 20, attempt=1), stale, *revealing], expected, True
    if kind == "stopped":
        final = batch_event(job_id, "FAILED", reason="c2d-stop: Job stopped", exits={"configure": 0, "algorithm": 137})
        return start + configured + [final], 7, False
    if kind == "timeout":
        final = batch_event(job_id, "FAILED", reason="Job attempt duration exceeded timeout",
                            exits={"configure": 0, "algorithm": 137})
        return start + configured + [final], 41, False
    if kind == "image_missing":
        final = batch_event(job_id, "FAILED", reasons={"algorithm": "CannotPullContainerError: manifest unknown"})
        return start[:3] + [final], 32, False
    raise AssertionError(kind)


KINDS = ["success", "spot_reclaimed_then_success", "algorithm_fails", "publish_fails", "data_fails",
         "algorithm_download_fails", "checksum_mismatch", "out_of_time", "stale_attempt", "stopped", "timeout",
         "image_missing"]
NOISE = [
    lambda: batch_event("not-a-job", "RUNNING"),
    lambda: batch_event("x", "SUCCEEDED", queue="arn:aws:batch:us-east-1:1:job-queue/foreign"),
    lambda: runner_event("not-a-job", 70),
    lambda: {"source": "aws.batch", "detail-type": "Batch Job State Change", "detail": {"jobId": 1}},
    lambda: {"garbage": True},
]


@settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=hs.data(), kind=hs.sampled_from(KINDS), recorded_batch_id=hs.booleans())
def test_shuffled_duplicated_events_end_right_and_never_regress(handler, writes, data, kind, recorded_batch_id):
    job_id = "job-" + uuid.uuid4().hex
    make_job(job_id, status=1, batch_job_id="b-1" if recorded_batch_id else None)
    events, expected, with_results = scenario(kind, job_id)
    order = data.draw(hs.permutations(events), label="order")
    for index in data.draw(hs.lists(hs.integers(0, len(events) - 1), max_size=6), label="duplicated"):
        position = data.draw(hs.integers(0, len(order)), label="at")
        order.insert(position, events[index])
    for noise in data.draw(hs.lists(hs.sampled_from(NOISE), max_size=3), label="noise"):
        order.insert(data.draw(hs.integers(0, len(order))), noise())

    current, final = 1, None
    for event in order:
        before = len(writes)
        outcome = handler.handle(event)
        assert outcome.action != "error"
        assert len(writes) - before == (1 if outcome.action in ("updated", "attached", "attempt", "noted") else 0)
        status = load(job_id).status
        assert st.rank(status) >= st.rank(current), (current, status)
        if final is not None:
            assert status == final
        elif st.is_terminal(status):
            final = status
        current = status

    record = load(job_id)
    want = expected(order) if callable(expected) else expected
    assert record.status == want, (kind, [(e["source"], e["detail"].get("status")) for e in order if "detail" in e])
    assert record.date_finished is not None
    assert (record.results is not None) == with_results
    if with_results and kind != "publish_fails":
        assert {r["type"] for r in record.results} >= {"algorithmLog", "configurationLog", "publishLog"}


def test_a_container_reason_shows_the_consumer_its_error_class_only(handler):
    """Docker's message names registries, addresses and presigned layer URLs; the consumer picks
    the image's host, so the message would make the provider a scanner of its own network (C10)."""
    make_job("j", status=30)
    pull = ('CannotPullContainerError: failed to resolve reference "10.0.3.4:5000/x:latest": failed to do '
            'request: Head "https://10.0.3.4:5000/v2/x/manifests/latest": dial tcp 10.0.3.4:5000: connect: '
            'connection refused')
    handler.handle(batch_event("j", "FAILED", exits={"configure": 0, "publish": 0}, reasons={"algorithm": pull}))
    record = load("j")
    assert record.status == 32
    assert record.termination_details.as_dict() == {"exitCode": None, "reason": "CannotPullContainerError", "OOMKilled": False}
    assert "10.0.3.4" not in json.dumps(record.attribute_values, default=str)
