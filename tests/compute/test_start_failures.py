"""Issue 18, point 4: every failure to start ends the job with its reason. When the algorithm
container never starts (its image absent or private, Docker Hub's rate limit, no image for this
platform, a runtime that refuses it), publish, which depends on it, never runs either: no
log is published, the task just stops. The job must still end with the reason class the
consumer may see (never Docker's message: it names registries, addresses, layer URLs), its slot
freed and nothing billed (its escrow lock cancelled: payments.settlement never bills a 31/32).

Events are Batch's "Batch Job State Change" for a multi-container job as a task that failed to
start produces it: statusReason "Task failed to start", the container's own reason in
ecsProperties.taskProperties[].containers[] (and the last attempt's), exit codes only for what
ran. On moto DynamoDB through the event handler that frees slots, as deployed."""
from __future__ import annotations

import pytest

from chalicelib.compute import status as st
from chalicelib.compute.events import JobEvents
from chalicelib.compute.usage import UsageCounter
from chalicelib.models import EnvironmentUsage, JobRecord
from chalicelib.payments.settlement import run_seconds
from test_events import QUEUE, T0, batch_event, load, make_job, runner_event

DEPENDENCY = ("CannotStartContainerError: dependency graph: failed to resolve container ordering dependency "
              "[algorithm] for target [publish] because dependency will never start")
PULL_DENIED = ("CannotPullContainerError: Error response from daemon: pull access denied for registry.example.com/"
               "team/private, repository does not exist or may require 'docker login': denied: requested access "
               "to the resource is denied")
RATE_LIMIT = ("CannotPullContainerError: Error response from daemon: toomanyrequests: You have reached your pull "
              "rate limit. You may increase the limit by authenticating and upgrading: "
              "https://www.docker.com/increase-rate-limit")
NO_PLATFORM = ("CannotPullContainerError: Error response from daemon: no matching manifest for linux/arm64/v8 in "
               "the manifest list entries")
MANIFEST = ("CannotPullImageManifestError: Error response from daemon: manifest unknown: manifest unknown: "
            "10.0.3.4:5000/algo:latest")
EXEC_FORMAT = ("CannotStartContainerError: Error response from daemon: failed to create task for container: failed "
               "to create shim task: OCI runtime create failed: runc create failed: unable to start container "
               "process: exec: \"/usr/local/bin/entry\": exec format error: unknown")
CAPPED = ("CannotStartContainerError: Error response from daemon: failed to create task for container: failed to "
          "create shim task: OCI runtime create failed: runc create failed: unable to start container process: "
          "exec: \"/entry\": operation not permitted: unknown")

CASES = {
    # name: (exit codes, container reasons, the status before, the expected status and reason class)
    "image absent or private, after configure succeeded": (
        {"configure": 0}, {"algorithm": PULL_DENIED}, st.PROVISIONED, st.ALGORITHM_PROVISIONING_FAILED,
        "CannotPullContainerError"),
    "Docker Hub's pull rate limit": (
        {"configure": 0}, {"algorithm": RATE_LIMIT, "publish": DEPENDENCY}, st.PROVISIONED,
        st.ALGORITHM_PROVISIONING_FAILED, "CannotPullContainerError"),
    "no image for this instance's platform": (
        {"configure": 0}, {"algorithm": NO_PLATFORM}, st.PROVISIONED, st.ALGORITHM_PROVISIONING_FAILED,
        "CannotPullContainerError"),
    "the manifest fails before configure ends: the task stops configure": (
        {"configure": 137}, {"algorithm": MANIFEST, "publish": DEPENDENCY}, st.CONFIGURING,
        st.ALGORITHM_PROVISIONING_FAILED, "CannotPullImageManifestError"),
    "an image of another architecture: the runtime cannot exec it (Docker's 128)": (
        {"configure": 0, "algorithm": 128}, {"algorithm": EXEC_FORMAT, "publish": DEPENDENCY}, st.PROVISIONED,
        st.ALGORITHM_PROVISIONING_FAILED, "CannotStartContainerError"),
    "a file-capped ENTRYPOINT the instances' runtime refuses (Docker's 126)": (
        {"configure": 0, "algorithm": 126}, {"algorithm": CAPPED}, st.PROVISIONED,
        st.ALGORITHM_PROVISIONING_FAILED, "CannotStartContainerError"),
    "the task failed to start and no container says why": (
        {"configure": 0}, {}, st.PROVISIONED, st.ALGORITHM_PROVISIONING_FAILED, "Task failed to start"),
    "the task never started at all (the runner's image)": (
        {}, {"configure": "CannotPullContainerError: Error response from daemon: manifest for "
                          "123456789012.dkr.ecr.us-east-1.amazonaws.com/runner:latest not found"},
        st.STARTED, st.DATA_FAILED, "CannotPullContainerError"),
}


def failed_to_start(job_id: str, exits: dict, reasons: dict) -> dict:
    event = batch_event(job_id, "FAILED", reason="Task failed to start", exits=exits, reasons=reasons)
    for task in event["detail"]["attempts"][-1]["taskProperties"]:  # the attempt's containers: name, exit, reason
        task["containers"] = [{k: v for k, v in c.items() if k in ("name", "exitCode", "reason", "logStreamName")}
                              for c in task["containers"]]
    return event


@pytest.mark.parametrize("name", list(CASES))
def test_a_job_whose_algorithm_never_starts_ends_with_its_reason_its_slot_freed_nothing_billed(aws, name):
    exits, reasons, before, expected, reason = CASES[name]
    handler = JobEvents(JobRecord, queues={QUEUE}, release_slots=True, on_terminal=lambda job: None)
    make_job("j", status=st.WARMING_UP)
    EnvironmentUsage(QUEUE, running=1).save()
    handler.handle(batch_event("j", "STARTING"))
    if before >= st.CONFIGURING:
        handler.handle(runner_event("j", 20, at=T0 - 60))
    if before == st.PROVISIONED:
        handler.handle(runner_event("j", 30, at=T0 - 30))  # configure succeeded: the algorithm's turn
    assert load("j").status == before
    outcome = handler.handle(failed_to_start("j", exits, reasons))
    record = load("j")
    assert (outcome.action, record.status) == ("updated", expected), name
    assert record.termination_details.as_dict() == {"exitCode": None, "reason": reason, "OOMKilled": False}
    assert record.results is None  # publish never ran: no log, the job ends all the same
    assert UsageCounter().current([QUEUE]) == {QUEUE: 0}  # its slot, in the same transaction
    assert run_seconds(record) is None  # nothing billed: the lock is cancelled
    assert "10.0.3.4" not in str(record.attribute_values) and "registry.example.com" not in str(record.attribute_values)
    # the same verdict from the reconciler's DescribeJobs, or a duplicate, changes nothing
    assert handler.handle(failed_to_start("j", exits, reasons)).action == "unchanged"
    assert UsageCounter().current([QUEUE]) == {QUEUE: 0}


def test_an_algorithm_that_ran_and_failed_is_not_a_start_failure(aws):
    """The boundary: exit codes without a start failure's reason are the algorithm's own."""
    handler = JobEvents(JobRecord, queues={QUEUE})
    make_job("j", status=st.PROVISIONED)
    handler.handle(batch_event("j", "FAILED", exits={"configure": 0, "algorithm": 126, "publish": 0}))
    assert load("j").status == st.ALGORITHM_FAILED and load("j").termination_details.as_dict()["exitCode"] == 126
    make_job("k", status=st.PROVISIONED)
    handler.handle(batch_event("k", "FAILED", exits={"configure": 0, "algorithm": 137, "publish": 0}, reasons={
        "algorithm": "CannotInspectContainerError: Could not transition to inspecting; timed out after waiting 30s"}))
    assert load("k").status == st.ALGORITHM_FAILED  # an inspect error after it ran: it did run
