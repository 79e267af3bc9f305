"""Issue 18, point 3: the algorithm's time limit holds whatever its image does. An image whose
ENTRYPOINT ignores our command skips the in-container limit, and Batch's attempt timeout counts
from RUNNING (publish started), so the reconciler stops the Batch job at the algorithm's start
(configure's signed 30) + its limit + DEADLINE_MARGIN_SECONDS; the job ends 41 "ran out of time"
and is billed its limit, not the wall time. On moto DynamoDB, Batch behind botocore's Stubber,
events shaped as Batch and the runner send them."""
from __future__ import annotations

from chalicelib.compute import status as st
from chalicelib.compute.batch_naming import deadline_reason, is_deadline_reason
from chalicelib.compute.deadlines import (
    DEADLINE_MARGIN_SECONDS,
    IMAGE_PULL_ALLOWANCE_SECONDS,
    OUT_OF_TIME,
    STOP_MARGIN_SECONDS,
    Deadlines,
    algorithm_deadline,
)
from chalicelib.compute.events import JobEvents
from chalicelib.compute.job_placement import STAGE_MARGIN_SECONDS
from chalicelib.compute.reconcile import Reconciler
from chalicelib.models import JobRecord
from chalicelib.payments.settlement import run_seconds
from lifecycle_helpers import StubbedBatch
from test_events import QUEUE, T0, batch_event, load, make_job, runner_event

LIMIT = 600
ENVIRONMENT = QUEUE  # make_job's records name the queue as their environment


def active(job_id: str, status: int, **fields) -> JobRecord:
    record = make_job(job_id, status=status)
    actions = [JobRecord.active_environment.set(ENVIRONMENT), JobRecord.updated_at.set(T0),
               JobRecord.max_seconds.set(LIMIT)]
    actions += [getattr(JobRecord, name).set(value) for name, value in fields.items()]
    record.update(actions=actions)
    return load(job_id)


def reconciler(batch: StubbedBatch, now: int, handler: JobEvents | None = None) -> Reconciler:
    return Reconciler(handler or JobEvents(JobRecord, queues={QUEUE}), batch.client, lambda job: False,
                      [(ENVIRONMENT, QUEUE)], clock=lambda: now, quiet_after=10**9, stuck_after=10**9,
                      deadlines=Deadlines(batch.client, {ENVIRONMENT: 3600}, clock=lambda: now))


def test_the_deadline_counts_from_the_algorithms_start_and_only_while_it_may_run():
    def job(status=st.PROVISIONED, **fields):
        return JobRecord("j", status=status, batch_job_id="b-1", max_seconds=LIMIT, **fields)

    assert algorithm_deadline(job(algorithm_started_at=T0), 3600) == T0 + LIMIT + DEADLINE_MARGIN_SECONDS
    # configure's 30 lost: from when Batch said STARTING, with configure's allowance
    assert algorithm_deadline(job(status=st.CONFIGURING, starting_at=T0), 3600) == (
        T0 + STAGE_MARGIN_SECONDS + LIMIT + DEADLINE_MARGIN_SECONDS)
    assert algorithm_deadline(job(status=st.WARMING_UP), 3600) is None  # RUNNABLE for hours: no deadline yet
    # configure's 40: the algorithm runs, the deadline holds
    assert algorithm_deadline(job(status=st.RUNNING, algorithm_started_at=T0), 3600) == T0 + LIMIT + DEADLINE_MARGIN_SECONDS
    # Batch's RUNNING or publish's 60: the algorithm container has exited (publish depends on it)
    assert algorithm_deadline(job(status=st.RUNNING, algorithm_started_at=T0, publish_started_at=T0 + 9), 3600) is None
    for later in (st.PUBLISHING, st.COMPLETED, st.STOPPED):
        assert algorithm_deadline(job(status=later, algorithm_started_at=T0), 3600) is None
    old = JobRecord("j", status=st.PROVISIONED, batch_job_id="b-1", algorithm_started_at=T0)  # no limit of its own
    assert algorithm_deadline(old, 3600) == T0 + 3600 + DEADLINE_MARGIN_SECONDS
    # the stated margin (README "How a job is sealed"): the image's pull after configure, then the stop
    assert (IMAGE_PULL_ALLOWANCE_SECONDS, STOP_MARGIN_SECONDS, DEADLINE_MARGIN_SECONDS) == (600, 120, 720)


def test_an_image_that_ignores_the_command_is_stopped_at_its_deadline_and_billed_its_limit(aws):
    handler = JobEvents(JobRecord, queues={QUEUE})
    make_job("hostile", status=st.WARMING_UP)
    active("hostile", st.WARMING_UP)
    for event in (batch_event("hostile", "STARTING"), runner_event("hostile", 20, at=T0 - 30),
                  runner_event("hostile", 30, at=T0), runner_event("hostile", 40, at=T0)):
        handler.handle(event)  # configure exits: the image starts and ignores our command
    assert (load("hostile").algorithm_started_at, load("hostile").status) == (T0, st.RUNNING)
    deadline = T0 + LIMIT + DEADLINE_MARGIN_SECONDS
    batch = StubbedBatch()
    assert reconciler(batch, deadline - 1, handler).run().as_dict()["terminated"] == []  # nothing asked of Batch
    batch.stubber.add_response("terminate_job", {}, {"jobId": "b-1", "reason": deadline_reason(OUT_OF_TIME)})
    report = reconciler(batch, deadline, handler).run()
    assert report.terminated == ["hostile"] and report.errors == 0
    batch.stubber.assert_no_pending_responses()
    assert is_deadline_reason(deadline_reason(OUT_OF_TIME))

    # Batch stops the task: the algorithm container killed, publish never started
    stopped = batch_event("hostile", "FAILED", reason=deadline_reason(OUT_OF_TIME), exits={"configure": 0, "algorithm": 137},
                          reasons={"publish": "CannotStartContainerError: dependency graph: failed to resolve container "
                                              "ordering dependency [algorithm] for target [publish]"})
    stopped["detail"]["stoppedAt"] = (deadline + 35) * 1000
    assert handler.handle(stopped).status == st.ALGORITHM_FAILED
    record = load("hostile")
    assert record.termination_details.as_dict() == {
        "exitCode": 137, "reason": "Algorithm ran out of time (maxJobDuration) and was stopped", "OOMKilled": False}
    assert record.date_finished == deadline + 35
    assert run_seconds(record) == LIMIT  # billed its limit, not the wall time until Batch stopped it
    # ended: not a candidate any more, nothing asked of Batch
    assert reconciler(batch, deadline + 3600, handler).run().terminated == []


def test_without_configures_event_the_deadline_counts_from_batchs_starting(aws):
    make_job("quiet", status=st.WARMING_UP)
    active("quiet", st.WARMING_UP)
    handler = JobEvents(JobRecord, queues={QUEUE}, clock=lambda: T0)
    assert handler.handle(batch_event("quiet", "STARTING")).status == st.STARTED
    assert load("quiet").starting_at == T0  # the handler's clock: STARTING carries no time of its own
    deadline = T0 + STAGE_MARGIN_SECONDS + LIMIT + DEADLINE_MARGIN_SECONDS
    batch = StubbedBatch()
    assert reconciler(batch, deadline - 1).run().terminated == []
    batch.stubber.add_response("terminate_job", {}, {"jobId": "b-1", "reason": deadline_reason(OUT_OF_TIME)})
    assert reconciler(batch, deadline).run().terminated == ["quiet"]
    batch.stubber.assert_no_pending_responses()


def test_a_job_whose_algorithm_ended_or_that_waits_for_an_instance_is_left_alone(aws):
    active("publishing", st.PUBLISHING, algorithm_started_at=T0 - 10 * LIMIT, publish_started_at=T0 - 9 * LIMIT)
    active("runnable", st.WARMING_UP)
    batch = StubbedBatch()
    assert reconciler(batch, T0 + 10**6).run().terminated == []  # the Stubber would refuse any call


def test_batch_refusing_the_stop_is_counted_and_retried_next_run(aws):
    active("hostile", st.PROVISIONED, algorithm_started_at=T0)
    batch = StubbedBatch()
    batch.stubber.add_client_error("terminate_job", "ServerException", "Batch is down", 500)
    report = reconciler(batch, T0 + LIMIT + DEADLINE_MARGIN_SECONDS).run()
    assert report.terminated == [] and report.errors == 1
    batch.stubber.add_response("terminate_job", {}, {"jobId": "b-1", "reason": deadline_reason(OUT_OF_TIME)})
    assert reconciler(batch, T0 + LIMIT + DEADLINE_MARGIN_SECONDS + 60).run().terminated == ["hostile"]


def test_billed_time_is_the_algorithms_own(aws):
    """Publish's signed 60 carries the algorithm container's StartedAt/FinishedAt (the ECS
    agent's): a 200 s algorithm is billed 200 s, though Batch's RUNNING (publish's start) and
    the job's end (a long upload) say nothing of it; without that report, configure's 30 to
    publish's 60; a stop during the algorithm bills start -> stop."""
    handler = JobEvents(JobRecord, queues={QUEUE})
    active("j", st.WARMING_UP)
    done = batch_event("j", "SUCCEEDED", exits={"configure": 0, "algorithm": 0, "publish": 0})
    done["detail"]["stoppedAt"] = (T0 + 900) * 1000  # publish uploaded for ten minutes
    for event in (batch_event("j", "STARTING"), runner_event("j", 20, at=T0 - 40), runner_event("j", 30, at=T0),
                  runner_event("j", 60, at=T0 + 205, algorithm={"startedAt": T0 + 1.5, "finishedAt": T0 + 201.5,
                                                                 "exitCode": 0}),
                  batch_event("j", "RUNNING"), runner_event("j", 70), done):
        handler.handle(event)
    record = load("j")
    assert record.status == 70 and record.algorithm_run == {"startedAt": T0 + 1.5, "finishedAt": T0 + 201.5,
                                                            "exitCode": 0}
    assert run_seconds(record) == 200.0
    record.algorithm_run = None  # publish could not read the task metadata
    assert run_seconds(record) == 205.0  # configure's 30 -> publish's 60
    record.publish_started_at = None  # and its 60 was lost: to the end, never past the limit
    assert run_seconds(record) == LIMIT
    # stopped by its owner while the algorithm ran
    active("s", st.WARMING_UP)
    for event in (batch_event("s", "STARTING"), runner_event("s", 30, at=T0)):
        handler.handle(event)
    stopped = batch_event("s", "FAILED", reason="c2d-stop: Job stopped by its owner", exits={"configure": 0, "algorithm": 143})
    stopped["detail"]["stoppedAt"] = (T0 + 90) * 1000
    handler.handle(stopped)
    assert load("s").status == st.STOPPED and run_seconds(load("s")) == 90.0


def test_forged_times_are_not_taken(aws):
    """Only the job's own key signs the times billing reads; another's, or none, changes nothing."""
    from chalicelib.job_key import new_job_key

    handler = JobEvents(JobRecord, queues={QUEUE})
    make_job("j", status=st.PROVISIONED)
    for forged in (runner_event("j", 60, at=T0, algorithm={"startedAt": T0, "finishedAt": T0 + 1}, key=new_job_key()),
                   runner_event("j", 30, at=T0 + 10**6, key="")):
        assert handler.handle(forged).action == "ignored"
    record = load("j")
    assert record.algorithm_run is None and record.algorithm_started_at is None
    # implausible reports of our own runner are not kept either
    assert handler.handle(runner_event("j", 60, at=T0, algorithm={"startedAt": T0 + 5, "finishedAt": T0})).status == 60
    assert load("j").algorithm_run is None and load("j").publish_started_at == T0
