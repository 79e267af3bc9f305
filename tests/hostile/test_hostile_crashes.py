"""A crash at every step (issue 20), one test per flow: the v4 start, the paid /node start, a stop,
the terminal event and the claim. Real orders and escrow on anvil, moto for DynamoDB and S3, a
real Batch client answered by `FakeBatch` (crash_harness). For every crash point (before and
after each external call, crash_harness.run_crash_points) the reconciler runs, then the
consumer's retry, then every job is driven to its end, and:

- every order is used by at most one job;
- every lock is claimed or cancelled exactly once on chain, never above its amount, and the
  payer's escrow adds up (available + locked = what it had - what was claimed);
- no slot is leaked (the environment's counter = the jobs not ended) and no reservation either;
- no Batch job runs without a record (every Batch job is its record's, or was terminated);
- every job converges (ended, or dispatched and then ended);
- the consumer's retry succeeds or gets a clear 4xx.

Each test prints how many external calls its flow makes, its crash points and the distinct
states run (pytest -s shows them).
"""
from __future__ import annotations

import json
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import pytest

from crash_harness import ExternalCalls, FakeBatch, StateSnapshot, run_crash_points
from escrow_fixtures import payment_tables  # noqa: F401  (fixture)
from lifecycle_helpers import consumer_key, environments_json, initialize, order_both, start_body, stubbed_provider
from signing import sign

from devstack.contracts import OCEAN_UNIT, contract

NODE = "/node/api/services"
PER_MINUTE = OCEAN_UNIT  # the cpu environment: 1 OCEAN a minute for its 2 CPUs
DEPOSIT = 50 * PER_MINUTE


@dataclass
class World:
    chain: Any
    client: Any
    batch: FakeBatch
    published: Any
    dispatcher: Any
    snapshot: StateSnapshot
    calls: ExternalCalls


@pytest.fixture
def world(aws, chain, client, monkeypatch, payment_tables):  # noqa: F811
    from chalicelib import services
    from chalicelib.compute.dispatch import BatchDispatcher
    from chalicelib.payments import progress

    env = {"ESCROW_CONTRACTS": json.dumps({str(chain.chain_id): chain.contracts.Escrow})}
    with stubbed_provider(chain, monkeypatch, environments_json(chain), env=env) as (_, published):
        batch = FakeBatch()
        dispatcher = BatchDispatcher(batch.client, "runner:1", services.settings().bucket)
        monkeypatch.setattr(services, "dispatcher", lambda: dispatcher)
        monkeypatch.setattr(progress, "NO_LOCK_GRACE", -1)  # the reconciler runs "much later"
        # the DDOs stay cached for the whole test: the same calls in every run from the same state
        monkeypatch.setattr(services.asset_resolver(), "_max_age", 10**9)
        yield World(chain, client, batch, published, dispatcher, StateSnapshot(chain, batch, dispatcher), ExternalCalls())


# -- what consumers and the platform do --------------------------------------------------------

def _escrow(chain):
    return contract(chain.w3, "Escrow", chain.contracts.Escrow)


def _fund(world: World) -> None:
    from escrow_helpers import authorize, deposit

    deposit(world.chain, DEPOSIT)
    authorize(world.chain, max_locked=DEPOSIT, max_seconds=600 + 1800, max_locks=5)


def _node_signed(account, command: str) -> dict:
    nonce = time.time_ns()
    return {"consumerAddress": account.address, "nonce": str(nonce),
            "signature": sign(consumer_key(account), account.address + str(nonce) + command)}


def _paid_body(world: World, orders: tuple[str, str]) -> dict:
    chain, published = world.chain, world.published
    return {**_node_signed(chain.consumer, "startCompute"), "environment": "ocean-c2d-cpu", "maxJobDuration": 600,
            "datasets": [{"documentId": published.dataset.did, "serviceId": published.dataset.serviceId,
                          "transferTxId": orders[0]}],
            "algorithm": {"documentId": published.algorithm.did, "serviceId": published.algorithm.serviceId,
                          "transferTxId": orders[1]},
            "chainId": chain.chain_id, "payment": {"chainId": chain.chain_id, "token": chain.contracts.OceanToken,
                                                   "maxJobDuration": 600, "resources": [{"id": "cpu", "amount": 2}]}}


def _post(world: World, path: str, body: dict) -> tuple[int, Any]:
    response = world.client.http.post(path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    return response.status_code, json.loads(response.body)


def _paid_start(world: World, orders: tuple[str, str]) -> tuple[int, Any]:
    return _post(world, NODE + "/compute", _paid_body(world, orders))


def _v4_start(world: World, orders: tuple[str, str]) -> tuple[int, Any]:
    return _post(world, "/api/services/compute", start_body(world.published, world.chain.consumer, time.time_ns(), *orders))


def _stop(world: World, job_id: str) -> tuple[int, Any]:
    query = urllib.parse.urlencode({"jobId": job_id, **_node_signed(world.chain.consumer, "stopCompute")})
    response = world.client.http.put(NODE + "/compute?" + query)
    return response.status_code, json.loads(response.body)


def _reconcile(world: World) -> Any:
    """The reconciler as deployed, run "ten minutes later" (every job quiet, every lease expired)."""
    from chalicelib import services
    from chalicelib.compute.environments import environments
    from chalicelib.compute.reconcile import Reconciler
    from chalicelib.payments.settlement import settle_job

    return Reconciler(services.job_events(), world.batch.client, services.job_service().finish_stored,
                      [(e.id, [q for q in (e.job_queue, e.network_job_queue) if q]) for e in environments().values()],
                      clock=lambda: time.time() + 600, stuck_after=0, quiet_after=0, payments=services.payments(),
                      settle=settle_job, chain_ids=[world.chain.chain_id]).run()


def _batch_event(world: World, batch_job_id: str, status: str) -> None:
    """Batch moves the job and its state-change event is delivered (the events Lambda)."""
    world.batch.set(batch_job_id, status)
    payload = world.client.lambda_.invoke("batch_job_events", world.batch.event(batch_job_id)).payload
    assert payload.get("action") != "error", payload


def _run_to_the_end(world: World) -> None:
    """Every Batch job still running runs and succeeds (its events delivered), then the
    reconciler settles what is left (claims confirmed, held locks of ended jobs)."""
    for batch_job_id, job in list(world.batch.live().items()):
        _batch_event(world, batch_job_id, "RUNNING")
        _batch_event(world, batch_job_id, "SUCCEEDED")
    report = _reconcile(world)
    assert report.errors == 0, report


def _retry_answer(status: int, body: Any) -> None:
    """The consumer's retry succeeds, or gets a clear 4xx in the contract's envelope."""
    assert status == 200 or (400 <= status < 500 and ("error" in body or "errors" in body)), (status, body)


# -- the invariants ----------------------------------------------------------------------------

def _check(world: World, base_funds: tuple[int, int] | None) -> None:
    from chalicelib import services
    from chalicelib.compute import status as st
    from chalicelib.models import EnvironmentUsage, JobRecord, OrderUse
    from chalicelib.payments.models import EscrowAccount, EscrowPayment

    jobs = {job.job_id: job for job in JobRecord.scan()}
    # every order used by at most one job
    for use in OrderUse.scan():
        assert use.order_id in (jobs[use.job_id].orders or []), f"order {use.order_id} points to a job without it"
    holders: dict[str, list[str]] = {}
    for job in jobs.values():
        if job.batch_job_id or not st.is_terminal(int(job.status)):
            for order in job.orders or []:
                holders.setdefault(order, []).append(job.job_id)
    assert all(len(ids) == 1 for ids in holders.values()), f"an order started two jobs: {holders}"
    # no slot leaked
    running = sum(1 for job in jobs.values() if not st.is_terminal(int(job.status)))
    counters = {usage.environment: int(usage.running) for usage in EnvironmentUsage.scan()}
    assert counters.get("ocean-c2d-cpu", 0) == running, (counters, running)
    # no Batch job without a record; every job converged
    by_batch = {job.batch_job_id: job for job in jobs.values() if job.batch_job_id}
    for batch_job_id, batch_job in world.batch.jobs.items():
        record = jobs.get(batch_job["jobId"])
        assert record is not None and record.batch_job_id == batch_job_id or batch_job["status"] == "FAILED" and (
            batch_job["reason"] or "").startswith("c2d-stop"), f"Batch job {batch_job_id} runs without its record"
    assert set(by_batch) <= set(world.batch.jobs), "a record follows a Batch job that does not exist"
    assert all(st.is_terminal(int(job.status)) for job in jobs.values()), [
        (job.job_id, job.status, job.batch_job_id) for job in jobs.values()]
    if base_funds is None:
        return
    # every lock claimed or cancelled exactly once, never above its amount; nothing left reserved
    payments = {p.job_id: p for p in EscrowPayment.scan()}
    assert all(p.status in ("claimed", "cancelled", "lock_failed") for p in payments.values()), [
        (p.job_id, p.status, p.reason) for p in payments.values()]
    escrow = _escrow(world.chain)
    logs = {name: [dict(e["args"]) for e in escrow.events[name].get_logs(from_block=0)]
            for name in ("Lock", "Claimed", "Canceled")}
    locks = {}
    for event in logs["Lock"]:
        assert event["jobId"] not in locks, f"lock {event['jobId']} made twice"
        locks[event["jobId"]] = int(event["amount"])
    settled: dict[int, list[int]] = {}
    for event in logs["Claimed"] + logs["Canceled"]:
        settled.setdefault(event["jobId"], []).append(int(event.get("amount", 0)))
    assert set(settled) == set(locks) and all(len(v) == 1 for v in settled.values()), (locks, settled)
    assert all(settled[job][0] <= amount for job, amount in locks.items())
    claimed = sum(int(e["amount"]) for e in logs["Claimed"])
    available, locked = escrow.functions.getUserFunds(world.chain.consumer.address, world.chain.contracts.OceanToken).call()
    assert locked == 0 and available == base_funds[0] + base_funds[1] - claimed, (available, locked, claimed)
    reserved = [(a.account, a.pending, a.pending_count) for a in EscrowAccount.scan()
                if a.account.startswith("escrow:") and (a.pending or a.pending_count)]
    assert reserved == [], f"reservations left: {reserved}"
    assert services.usage_counter().current(["ocean-c2d-cpu"]) == {"ocean-c2d-cpu": 0}


def _funds(world: World) -> tuple[int, int]:
    available, locked = _escrow(world.chain).functions.getUserFunds(
        world.chain.consumer.address, world.chain.contracts.OceanToken).call()
    return int(available), int(locked)


def _report(report) -> None:
    print("\n" + report.line())


def _start_at_every_crash(world: World, flow: str, start, base: tuple[int, int] | None):
    """A start crashing at each point; recovery: the reconciler, the consumer sending the same
    start again (its answer checked), the jobs' end."""
    def recover() -> None:
        assert _reconcile(world).errors == 0
        _retry_answer(*start())
        _run_to_the_end(world)

    report = run_crash_points(flow, start, recover, lambda: _check(world, base), world.snapshot, world.calls)
    _report(report)
    return report


# -- the flows ---------------------------------------------------------------------------------

def test_a_crash_at_every_step_of_a_v4_start(world):
    quote = initialize(world.client, world.published, world.chain.consumer.address)
    orders = order_both(world.chain, world.published, quote)

    report = _start_at_every_crash(world, "v4 start", lambda: _v4_start(world, orders), None)
    assert "batch:SubmitJob" in report.calls and "dynamodb:TransactWriteItems" in report.calls


def test_a_crash_at_every_step_of_a_paid_node_start(world):
    _fund(world)
    quote = json.loads(world.client.http.post(NODE + "/initializeCompute", headers={"Content-Type": "application/json"}, body=json.dumps({
        "datasets": [{"documentId": world.published.dataset.did, "serviceId": world.published.dataset.serviceId}],
        "algorithm": {"documentId": world.published.algorithm.did, "serviceId": world.published.algorithm.serviceId},
        "environment": "ocean-c2d-cpu", "consumerAddress": world.chain.consumer.address, "maxJobDuration": 600,
        "payment": {"chainId": world.chain.chain_id, "token": world.chain.contracts.OceanToken}})).body)
    orders = order_both(world.chain, world.published, quote)
    base = _funds(world)

    report = _start_at_every_crash(world, "paid /node start", lambda: _paid_start(world, orders), base)
    assert {"chain:eth_sendRawTransaction", "chain:eth_getTransactionReceipt", "batch:SubmitJob"} <= set(report.calls)


def _running_paid_job(world: World) -> tuple[str, str, tuple[int, int]]:
    """A paid job dispatched and running (its lock mined), and the payer's funds before its lock."""
    _fund(world)
    base = _funds(world)
    quote = initialize(world.client, world.published, world.chain.consumer.address)
    orders = order_both(world.chain, world.published, quote)
    status, body = _paid_start(world, orders)
    assert status == 200, body
    job_id = body[0]["jobId"]
    (batch_job_id,) = world.batch.jobs
    _batch_event(world, batch_job_id, "RUNNING")
    return job_id, batch_job_id, base


def test_a_crash_at_every_step_of_a_stop(world):
    job_id, _, base = _running_paid_job(world)

    def recover() -> None:
        assert _reconcile(world).errors == 0
        status, body = _stop(world, job_id)  # the consumer stops it again
        _retry_answer(status, body)
        assert status == 200 and body[0]["status"] in (7, 70), body
        _run_to_the_end(world)

    report = run_crash_points("stop", lambda: _stop(world, job_id), recover, lambda: _check(world, base),
                              world.snapshot, world.calls)
    _report(report)
    assert {"batch:TerminateJob", "chain:eth_sendRawTransaction"} <= set(report.calls)


def test_a_crash_at_every_step_of_the_terminal_event(world):
    job_id, batch_job_id, base = _running_paid_job(world)
    world.batch.set(batch_job_id, "SUCCEEDED")
    event = world.batch.event(batch_job_id)

    def deliver() -> Any:
        return world.client.lambda_.invoke("batch_job_events", event).payload

    def recover() -> None:
        assert _reconcile(world).errors == 0
        payload = deliver()  # Lambda delivers the event again (its asynchronous retry)
        assert payload.get("action") in ("updated", "unchanged"), payload
        _run_to_the_end(world)

    report = run_crash_points("terminal event", deliver, recover, lambda: _check(world, base), world.snapshot,
                              world.calls)
    _report(report)
    assert "chain:eth_sendRawTransaction" in report.calls


def test_a_crash_at_every_step_of_the_claim(world):
    """The job ended but its terminal hook was lost: the reconciler's claim of its held lock."""
    from chalicelib.compute import transitions
    from chalicelib.models import JobRecord

    job_id, batch_job_id, base = _running_paid_job(world)
    world.batch.set(batch_job_id, "SUCCEEDED")
    job = JobRecord.get(job_id)
    now = int(time.time())
    transitions.write(job, [JobRecord.status.set(70), JobRecord.date_finished.set(now),
                            JobRecord.running_at.set(now - 100)], JobRecord.status == int(job.status), ends_job=True)

    def claim() -> Any:
        return _reconcile(world)

    def recover() -> None:
        assert _reconcile(world).errors == 0  # the next run
        _run_to_the_end(world)

    report = run_crash_points("claim", claim, recover, lambda: _check(world, base), world.snapshot, world.calls)
    _report(report)
    assert "chain:eth_sendRawTransaction" in report.calls
