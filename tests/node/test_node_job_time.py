"""Issue 18, point 3, with money: time and billing hold whatever the algorithm's image does. Paid
jobs started through `/node` with a real escrow lock on anvil (the provider's own key claims or
cancels), in-process moto, Batch behind botocore's Stubber, events shaped as Batch and the runner
send them (the runner's signed with the job's own key), and the reconciler as deployed:

- an image whose ENTRYPOINT ignores our command is stopped at its maxJobDuration plus the stated
  margin (its image's pull, then the stop) and billed its maxJobDuration, not the wall time;
- a 200 s algorithm whose publish uploads for ten minutes is billed 200 s (the ECS agent's own
  times of the algorithm container, which publish reports), not Batch's RUNNING -> end;
- a configure failure cancels the lock, and its image runs nothing: the algorithm container
  depends on configure SUCCESS, so the agent never starts it, and no deadline stop is needed.
"""
from __future__ import annotations

import time

from escrow_fixtures import payment_tables  # noqa: F401  (fixture)
from escrow_helpers import funds
from test_events import batch_event, runner_event
from test_node_escrow import PER_MINUTE, _funded_quote, _payment, _start, escrow_env, paid  # noqa: F401  (fixtures)
from test_node_protocol import JOB_QUEUE_ARN, deliver, node  # noqa: F401  (fixture)

LIMIT = 600  # the job's maxJobDuration (its lock: 10 minutes' worth)


def started(client, chain, batch, published, batch_job_id):
    before, quote = _funded_quote(client, chain, published)
    batch.expect_new_definition()
    batch.expect_submit(batch_job_id)
    (status, answer), _ = _start(client, chain, published, quote, seconds=LIMIT)
    assert status == 200, answer
    assert funds(chain) == (before[0] - 10 * PER_MINUTE, before[1] + 10 * PER_MINUTE)
    return answer[0]["jobId"], before


def batch_at(job_id, status, batch_job_id, started_at=None, stopped_at=None, **kwargs):
    event = batch_event(job_id, status, batch_job_id=batch_job_id, queue=JOB_QUEUE_ARN, **kwargs)
    if started_at is not None:
        event["detail"]["startedAt"] = started_at * 1000
    if stopped_at is not None:
        event["detail"]["stoppedAt"] = stopped_at * 1000
    return event


def reconcile(batch, now):
    """The deployed reconciler (compute.reconcile.build_reconciler's parts), at `now`."""
    from chalicelib import services
    from chalicelib.compute.deadlines import Deadlines
    from chalicelib.compute.environments import environments
    from chalicelib.compute.reconcile import Reconciler
    from chalicelib.payments.settlement import settle_job

    configured = environments().values()
    return Reconciler(services.job_events(), batch.client, services.job_service().abandon,
                      [(e.id, [q for q in (e.job_queue, e.network_job_queue) if q]) for e in configured],
                      clock=lambda: now, payments=services.payments(), settle=settle_job, chain_ids=[],
                      deadlines=Deadlines(batch.client, {e.id: e.max_job_duration for e in configured},
                                          clock=lambda: now)).run()


def test_an_image_that_ignores_the_command_is_stopped_at_the_deadline_and_billed_its_limit(client, paid):
    from chalicelib.compute.batch_naming import deadline_reason
    from chalicelib.compute.deadlines import DEADLINE_MARGIN_SECONDS, OUT_OF_TIME

    chain, batch, published = paid
    job_id, before = started(client, chain, batch, published, "batch-hostile")
    began = int(time.time())
    for event in (batch_at(job_id, "STARTING", "batch-hostile"), runner_event(job_id, 20, at=began - 20),
                  runner_event(job_id, 30, at=began), runner_event(job_id, 40, at=began)):  # the image ignores our command
        deliver(client, event)
    deadline = began + LIMIT + DEADLINE_MARGIN_SECONDS
    assert reconcile(batch, deadline - 1).terminated == []
    batch.stubber.add_response("terminate_job", {}, {"jobId": "batch-hostile", "reason": deadline_reason(OUT_OF_TIME)})
    assert reconcile(batch, deadline).terminated == [job_id]
    batch.stubber.assert_no_pending_responses()
    # Batch stops the task 40 s later: the algorithm container killed, publish never started
    deliver(client, batch_at(job_id, "FAILED", "batch-hostile", stopped_at=deadline + 40,
                             reason=deadline_reason(OUT_OF_TIME), exits={"configure": 0, "algorithm": 137}))
    job = _payment(client, chain, job_id)
    assert job["status"] == 41 and job["terminationDetails"]["reason"].startswith("Algorithm ran out of time")
    view = job["payment"]
    assert view["status"] == "claimed" and view["billedSeconds"] == LIMIT  # not the wall time it took to stop it
    assert view["claimed"] == str(10 * PER_MINUTE)
    assert funds(chain) == (before[0] - 10 * PER_MINUTE, before[1])


def test_a_200_second_algorithm_is_billed_200_seconds(client, paid):
    chain, batch, published = paid
    job_id, before = started(client, chain, batch, published, "batch-200")
    began = int(time.time()) - 900
    run = {"startedAt": began + 2.25, "finishedAt": began + 202.25, "exitCode": 0}  # the ECS agent's times
    for event in (batch_at(job_id, "STARTING", "batch-200"), runner_event(job_id, 20, at=began - 30),
                  runner_event(job_id, 30, at=began), runner_event(job_id, 40, at=began),
                  runner_event(job_id, 60, at=began + 205, algorithm=run),
                  batch_at(job_id, "RUNNING", "batch-200", started_at=began + 205),  # publish started
                  runner_event(job_id, 70),
                  batch_at(job_id, "SUCCEEDED", "batch-200", started_at=began + 205, stopped_at=began + 900,
                           exits={"configure": 0, "algorithm": 0, "publish": 0})):  # ten minutes of uploads
        deliver(client, event)
    view = _payment(client, chain, job_id)["payment"]
    assert view["status"] == "claimed" and view["billedSeconds"] == 200
    assert view["claimed"] == str(4 * PER_MINUTE)  # 200 s: four minutes started
    assert funds(chain) == (before[0] - 4 * PER_MINUTE, before[1])


def test_a_configure_failure_cancels_the_lock_and_its_image_runs_nothing(client, paid):
    chain, batch, published = paid
    job_id, before = started(client, chain, batch, published, "batch-unready")
    (definition,) = batch.registered
    algorithm = definition["ecsProperties"]["taskProperties"][0]["containers"][1]
    assert algorithm["name"] == "algorithm"
    assert algorithm["dependsOn"] == [{"containerName": "configure", "condition": "SUCCESS"}]
    began = int(time.time())
    for event in (batch_at(job_id, "STARTING", "batch-unready"), runner_event(job_id, 20, at=began),
                  runner_event(job_id, 31, reason="input 0 (did) file 0: HTTP 404", at=began + 3, results=[
                      {"filename": "configure.log", "filesize": 99, "type": "configurationLog",
                       "key": f"jobs/{job_id}/logs/configure.log"}])):
        deliver(client, event)
    job = _payment(client, chain, job_id)
    assert job["status"] == 31 and [r["type"] for r in job["results"]] == ["configurationLog"]
    assert job["payment"]["status"] == "cancelled" and job["payment"]["claimed"] == "0"
    assert funds(chain) == before
    # the agent never starts the algorithm (exit 143, dependency graph) nor publish: the final
    # event changes nothing, and no deadline stop is ever needed
    deliver(client, batch_at(job_id, "FAILED", "batch-unready", exits={"configure": 31, "algorithm": 143}, reasons={
        "algorithm": "CannotStartContainerError: dependency graph: failed to resolve container ordering dependency "
                     "[configure] for target [algorithm] as dependency did not exit successfully.",
        "publish": "CannotStartContainerError: dependency graph: failed to resolve container ordering dependency "
                   "[algorithm] for target [publish] because dependency will never start"}))
    assert _payment(client, chain, job_id)["status"] == 31
    assert reconcile(batch, began + 10 * 86400).terminated == []  # the Stubber would refuse a TerminateJob
    assert funds(chain) == before


def test_an_algorithm_image_that_cannot_be_pulled_ends_32_and_cancels_the_lock(client, paid):
    """Issue 18, point 4 with money: publish never runs, no log exists; the job ends with the
    error class, its slot back, its lock cancelled."""
    from chalicelib import services

    chain, batch, published = paid
    job_id, before = started(client, chain, batch, published, "batch-pull")
    assert services.usage_counter().current(["ocean-c2d-cpu"]) == {"ocean-c2d-cpu": 1}
    began = int(time.time())
    for event in (batch_at(job_id, "STARTING", "batch-pull"), runner_event(job_id, 20, at=began),
                  runner_event(job_id, 30, at=began + 5),
                  batch_at(job_id, "FAILED", "batch-pull", reason="Task failed to start", exits={"configure": 0},
                           reasons={"algorithm": "CannotPullContainerError: Error response from daemon: toomanyrequests: "
                                                 "You have reached your pull rate limit."})):
        deliver(client, event)
    job = _payment(client, chain, job_id)
    assert job["status"] == 32 and job["terminationDetails"] == {"exitCode": None, "reason": "CannotPullContainerError",
                                                                  "OOMKilled": False}
    assert job["results"] == [] and job["payment"]["status"] == "cancelled"
    assert funds(chain) == before
    assert services.usage_counter().current(["ocean-c2d-cpu"]) == {"ocean-c2d-cpu": 0}
