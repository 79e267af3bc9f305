"""No provider gas without a paying consumer (issue 20, observation 1), on anvil with real
transactions from the provider's key, moto for the records, Batch behind botocore's Stubber:

- 1a: a lock not mined within the start keeps its job at 1, bound to that lock; the same start
  again never sends a second lock; the job is dispatched once the lock is mined (by the retry or
  by the reconciler), or undone with its lock's failure;
- 1b: six concurrent paid starts with escrow funds for one send exactly one lock; the others are
  refused with a 400 before any transaction (2-second blocks);
- 1c: a lock front-run by the payer's withdraw reverts; the start answers 400, gives the order
  back (it starts a job again only with a new, paying lock), and after ESCROW_LOCK_FAILURES such
  failures within ESCROW_FAILURE_WINDOW the payer is refused with 429 before anything is read
  from the chain or written.
"""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from escrow_fixtures import atomic_moto, automine_off, payment_tables, rpc  # noqa: F401  (fixtures)
from lifecycle_helpers import consumer_key, order_both
from test_events import batch_event, runner_event
from test_node_escrow import PER_MINUTE, _datasets, _algorithm, _funded_quote, _initialize, _payment, _start
from test_node_protocol import API, JOB_QUEUE_ARN, deliver, node, signed  # noqa: F401  (node: fixture)

from devstack.contracts import OCEAN_UNIT
from devstack.orders import mint_datatokens
from escrow_helpers import authorize, deposit, escrow, funds

LOCK = 10 * PER_MINUTE  # what _start's 600 s on the cpu environment locks


@pytest.fixture
def paid(monkeypatch, chain, node, payment_tables):  # noqa: F811
    monkeypatch.setenv("ESCROW_CONTRACTS", json.dumps({str(chain.chain_id): chain.contracts.Escrow}))
    monkeypatch.setenv("ESCROW_FAILURE_WINDOW", "600")
    return node


def _transactions():
    from chalicelib.payments.models import ChainTransaction

    return {t.purpose: t for t in ChainTransaction.scan()}


def _gas(purposes) -> int:
    """The provider's gas for these transactions, from their receipts on chain."""
    return sum(int(t.gas_used or 0) for p, t in _transactions().items() if p in purposes)


def _reconciler(batch, stuck_after: int = 0):
    """The deployment's reconciler (escrow included), looking at jobs at once (stuck_after 0)."""
    from chalicelib import services
    from chalicelib.compute.environments import environments
    from chalicelib.compute.reconcile import Reconciler
    from chalicelib.payments.settlement import settle_job

    return Reconciler(services.job_events(), batch.client, services.job_service().finish_stored,
                      [(e.id, e.job_queue) for e in environments().values()], stuck_after=stuck_after,
                      payments=services.payments(), settle=settle_job, chain_ids=[services.settings().chain_ids[0]])


def _no_batch_job_named(batch, job_id: str) -> None:
    from chalicelib.compute.batch_naming import job_name

    batch.stubber.add_response("list_jobs", {"jobSummaryList": []},
                               {"jobQueue": "ocean-c2d-cpu", "filters": [{"name": "JOB_NAME", "values": [job_name(job_id)]}]})


def _more_datatokens(chain, published, count: int) -> None:
    for asset in (published.dataset, published.algorithm):
        mint_datatokens(chain.w3, chain.publisher, asset.datatoken, chain.consumer.address, count * OCEAN_UNIT)


def _job(job_id: str):
    from chalicelib.models import JobRecord

    return JobRecord.get(job_id, consistent_read=True)


def _orders_used() -> dict[str, str]:
    from chalicelib.models import OrderUse

    return {use.order_id: use.job_id for use in OrderUse.scan()}


# -- 1a: a lock not mined within the request ---------------------------------------------------

def test_a_lock_not_mined_in_time_keeps_its_job_bound_and_is_dispatched_once_mined(client, paid, monkeypatch):
    from chalicelib import services
    from chalicelib.payments import paid_start

    chain, batch, published = paid
    before, quote = _funded_quote(client, chain, published)
    _more_datatokens(chain, published, 2)
    first_orders = order_both(chain, published, quote)
    second_orders = order_both(chain, published, quote)
    monkeypatch.setattr(paid_start, "MAX_LOCK_WAIT", 0.5)
    with automine_off(chain) as paused:
        (status, answer), _ = _start(client, chain, published, quote, orders=first_orders)
        assert status == 200 and answer[0]["status"] == 1, answer  # not 503: the job waits for its lock
        job_id = answer[0]["jobId"]
        assert services.payments().get(job_id).status == "locking" and batch.submitted == []
        # the same start again while the lock is still pending: the same job, no second lock
        (status, again), _ = _start(client, chain, published, quote, orders=first_orders)
        assert status == 200 and [j["jobId"] for j in again] == [job_id]
        (status, other), _ = _start(client, chain, published, quote, orders=second_orders)
        assert status == 200 and other[0]["jobId"] != job_id and other[0]["status"] == 1
        other_id = other[0]["jobId"]
        assert sorted(_transactions()) == sorted([f"lock:{job_id}", f"lock:{other_id}"])
        paused.mine()
    # the second: the consumer's own retry dispatches it as soon as its lock is mined
    batch.expect_new_definition()
    batch.expect_submit("batch-second")
    (status, again), _ = _start(client, chain, published, quote, orders=second_orders)
    assert status == 200 and [j["jobId"] for j in again] == [other_id]
    assert _job(other_id).batch_job_id == "batch-second"
    # the first: the reconciler dispatches it from its record
    _no_batch_job_named(batch, job_id)
    batch.expect_submit("batch-first")
    report = _reconciler(batch).run()
    assert report.dispatched == [job_id] and report.errors == 0, report
    assert _job(job_id).batch_job_id == "batch-first" and len(batch.submitted) == 2
    assert funds(chain) == (before[0] - 2 * LOCK, before[1] + 2 * LOCK)
    # both run and are claimed: the provider's locks are paid for
    for job, batch_id in ((job_id, "batch-first"), (other_id, "batch-second")):
        deliver(client, batch_event(job, "RUNNING", batch_job_id=batch_id, queue=JOB_QUEUE_ARN))
        deliver(client, runner_event(job, 70))
        deliver(client, batch_event(job, "SUCCEEDED", batch_job_id=batch_id, queue=JOB_QUEUE_ARN,
                                    exits={"configure": 0, "algorithm": 0, "publish": 0}))
        assert _payment(client, chain, job)["payment"]["status"] == "claimed"
    assert funds(chain) == (before[0] - 2 * PER_MINUTE, before[1])
    sent = _transactions()
    assert sorted(sent) == sorted(f"{kind}:{job}" for kind in ("lock", "claim") for job in (job_id, other_id))
    assert {t.status for t in sent.values()} == {"mined"}
    batch.stubber.assert_no_pending_responses()


def _funded_orders(client, paid, monkeypatch):
    """The payer funded, one pair of orders, and a start's wait for its lock cut to 0.5 s."""
    from chalicelib.payments import paid_start

    chain, _, published = paid
    before, quote = _funded_quote(client, chain, published)
    monkeypatch.setattr(paid_start, "MAX_LOCK_WAIT", 0.5)
    return before, quote, order_both(chain, published, quote)


def _waiting_start(client, paid, quote, orders) -> str:
    """A start whose lock the (paused) chain does not mine in time: its job, answered at 1."""
    chain, _, published = paid
    (status, answer), _ = _start(client, chain, published, quote, orders=orders)
    assert status == 200 and answer[0]["status"] == 1, answer
    return answer[0]["jobId"]


def test_a_lock_that_reverts_while_its_job_waits_is_undone_and_its_order_given_back(client, paid, monkeypatch):
    """The payer withdraws before the lock is mined (1c through 1a's path): the reconciler (or
    the retry) sees the revert, undoes the start, and the order starts a job again only with a
    new lock, paid for."""
    from chalicelib import services

    chain, batch, published = paid
    before, quote, orders = _funded_orders(client, paid, monkeypatch)
    with automine_off(chain) as paused:
        job_id = _waiting_start(client, paid, quote, orders)
        _front_run_withdraw(chain, before[0])
        paused.mine()
    assert funds(chain) == (0, 0)
    _no_batch_job_named(batch, job_id)
    report = _reconciler(batch).run()
    assert report.abandoned == [job_id], report
    ended = _job(job_id)
    assert ended.status == 31 and "escrow lock failed" in ended.termination_details.as_dict()["reason"]
    payment = services.payments().get(job_id)
    assert payment.status == "lock_failed" and payment.reserved is None
    assert _transactions()[f"lock:{job_id}"].status == "reverted"
    assert _orders_used() == {} and services.usage_counter().current(["ocean-c2d-cpu"]) == {"ocean-c2d-cpu": 0}
    # the order starts a job again, with a new lock the consumer pays for
    deposit(chain, before[0])
    batch.expect_new_definition()
    batch.expect_submit("batch-again")
    (status, answer), _ = _start(client, chain, published, quote, orders=orders)
    assert status == 200 and answer[0]["jobId"] != job_id, answer
    assert services.payments().get(answer[0]["jobId"]).status == "locked"
    assert funds(chain) == (before[0] - LOCK, LOCK)


def test_a_lock_still_not_mined_after_the_queue_wait_is_cancelled_and_its_order_given_back(client, paid, monkeypatch):
    """A lock stuck in the pool: past ESCROW_QUEUE_WAIT (the lock's lifetime counts from its
    mining, the job would start too late) the reconciler undoes the start and cancels the lock,
    sent as soon as it is mined; nothing is dispatched and the order is free again."""
    from chalicelib import services

    chain, batch, published = paid
    before, quote, orders = _funded_orders(client, paid, monkeypatch)
    with automine_off(chain) as paused:
        job_id = _waiting_start(client, paid, quote, orders)
        _no_batch_job_named(batch, job_id)
        monkeypatch.setattr(services.payments(), "queue_wait", 0)
        report = _reconciler(batch).run()
        assert report.abandoned == [job_id] and batch.submitted == [], report
        assert services.payments().get(job_id).status == "cancelling"
        assert _orders_used() == {} and _job(job_id).status == 31
        paused.mine()  # the lock is mined at last
    for _ in range(2):
        _reconciler(batch).run()
    payment = services.payments().get(job_id)
    assert payment.status == "cancelled" and payment.claimed == "0" and payment.reserved is None
    assert funds(chain) == before
    assert sorted(_transactions()) == [f"cancel:{job_id}", f"lock:{job_id}"]


# -- 1b: concurrent starts over-committing the escrow ----------------------------------------

def _route(path: str, method: str, body: dict, headers: dict | None = None):
    """One request through the app's own request handling, safe to run from threads (Chalice's
    test client keeps the current request on the app object, shared by threads)."""
    import app as app_module
    from chalicelib.http import handle

    operation = app_module.api._paths[path][method]
    request = SimpleNamespace(raw_body=json.dumps(body).encode(), query_params=None, uri_params=None,
                              headers={"content-type": "application/json", **(headers or {})}, method=method)
    response = handle(operation, request, app_module.api.authenticate)
    return response.status_code, json.loads(response.body)


def _start_body(chain, published, orders, seconds: int = 600) -> dict:
    dataset_tx, algorithm_tx = orders
    return {**signed(chain.consumer, "startCompute"), "environment": "ocean-c2d-cpu", "maxJobDuration": seconds,
            "datasets": _datasets(published, dataset_tx), "algorithm": _algorithm(published, algorithm_tx),
            "chainId": chain.chain_id, "payment": {"chainId": chain.chain_id, "token": chain.contracts.OceanToken,
                                                   "maxJobDuration": seconds, "resources": [{"id": "cpu", "amount": 2}]}}


@pytest.mark.parametrize("limit", ["funds", "lock count"])
def test_six_concurrent_starts_with_room_for_one_send_exactly_one_lock(client, paid, atomic_moto, limit):  # noqa: F811
    from chalicelib import services

    chain, batch, published = paid
    deposit(chain, (LOCK if limit == "funds" else 10 * LOCK))
    authorize(chain, max_locked=100 * LOCK, max_seconds=600 + 1800, max_locks=1 if limit == "lock count" else 6)
    _, quote = _initialize(client, chain, published)
    _more_datatokens(chain, published, 6)
    orders = [order_both(chain, published, quote) for _ in range(6)]
    # one consumer's concurrent starts: with its auth token (concurrent signed nonces would race each other)
    token = services.token_service().create(chain.consumer.address, int(time.time()) + 600)
    bodies = [{key: value for key, value in _start_body(chain, published, pair).items() if key not in ("nonce", "signature")}
              for pair in orders]
    before = funds(chain)
    batch.expect_new_definition()
    batch.expect_submit("batch-winner")
    rpc(chain, "evm_setAutomine", False)
    rpc(chain, "evm_setIntervalMining", 2)  # 2-second blocks
    try:
        gate = threading.Barrier(6)

        def start(body: dict):
            gate.wait()
            return _route("/node/api/services/compute", "POST", body, {"Authorization": token})

        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(start, bodies))
    finally:
        rpc(chain, "evm_setIntervalMining", 0)
        rpc(chain, "evm_setAutomine", True)
    accepted = [body for status, body in answers if status == 200]
    refused = [body for status, body in answers if status != 200]
    assert len(accepted) == 1 and len(refused) == 5, answers
    reason = "insufficient funds" if limit == "funds" else "allows 1 locks"
    assert all(status == 400 and reason in json.dumps(body) for status, body in answers if status != 200), answers
    job_id = accepted[0][0]["jobId"]
    # exactly one lock was sent, nothing reverted; the refused starts left nothing behind
    assert list(_transactions()) == [f"lock:{job_id}"]
    assert services.payments().get(job_id).status == "locked"
    from chalicelib.models import JobRecord

    assert [job.job_id for job in JobRecord.scan()] == [job_id]
    assert set(_orders_used().values()) == {job_id}
    from chalicelib.payments.escrow_accounts import reservation_key
    from chalicelib.payments.models import EscrowAccount

    account = EscrowAccount.get(reservation_key(chain.chain_id, chain.consumer.address, chain.contracts.OceanToken))
    assert (account.pending, account.pending_count) == (0, 0)  # given back once mined
    assert funds(chain) == (before[0] - LOCK, before[1] + LOCK)
    assert len(batch.submitted) == 1
    # the refused starts' orders were never used: initializeCompute offers them again as they are
    used = [pair for pair in orders if services.job_service().order_used(chain.chain_id, pair[0])]
    assert len(used) == 1 and len(_orders_used()) == 2


# -- 1c: a front-run withdraw -----------------------------------------------------------------

def _front_run_withdraw(chain, amount: int) -> str:
    """The payer's withdraw of `amount`, sent with a far higher tip than the provider's pending
    lock (anvil orders its pool by fee): mined first, it makes the lock revert."""
    from eth_account import Account

    account = Account.from_key(consumer_key(chain.consumer))
    call = escrow(chain).functions.withdraw([chain.contracts.OceanToken], [amount])
    tx = call.build_transaction({"from": account.address, "nonce": chain.w3.eth.get_transaction_count(account.address, "pending"),
                                 "gas": 200_000, "gasPrice": 500 * 10**9, "chainId": chain.chain_id})
    return chain.w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction).to_0x_hex()


def _start_front_run(client, chain, published, quote, orders, amount: int):
    """A start whose lock the payer front-runs: the start runs in a thread (its lock pending on a
    paused chain), the withdraw goes in with a higher fee, then one block mines both."""
    from chalicelib.payments.models import ChainTransaction

    result: dict = {}
    with automine_off(chain) as paused:
        sent = len(list(ChainTransaction.scan()))
        worker = threading.Thread(target=lambda: result.update(answer=_start(client, chain, published, quote, orders=orders)[0]))
        worker.start()
        deadline = time.monotonic() + 10
        while len([t for t in ChainTransaction.scan() if t.status == "pending"]) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(list(ChainTransaction.scan())) == sent + 1, "the lock was never sent"
        _front_run_withdraw(chain, amount)
        paused.mine()
        worker.join(timeout=20)
    return result["answer"]


def test_front_run_withdraws_revert_locks_then_the_payer_waits_429(client, paid, atomic_moto, monkeypatch):  # noqa: F811
    from chalicelib import services

    chain, batch, published = paid
    deposit(chain, LOCK)
    authorize(chain, max_locked=100 * LOCK, max_seconds=600 + 1800, max_locks=10)
    _, quote = _initialize(client, chain, published)
    _more_datatokens(chain, published, 2)
    orders = order_both(chain, published, quote)
    reverted_gas = []
    for attempt in range(3):
        status, body = _start_front_run(client, chain, published, quote, orders, LOCK)
        assert status == 400 and body["error"].startswith("lock reverted"), body
        lock = [t for t in _transactions().values() if t.status == "reverted"]
        assert len(lock) == attempt + 1
        reverted_gas.append(int(lock[-1].gas_used))
        # the start is undone: its order is free again, nothing is held; the consumer pays nothing
        assert _orders_used() == {} and funds(chain) == (0, 0)
        deposit(chain, LOCK)  # and funds the next attempt
    assert all(20_000 < gas < 60_000 for gas in reverted_gas), reverted_gas  # ~31k each, the provider's
    jobs = services.job_service().find(chain.consumer.address).jobs
    assert len(jobs) == 3 and {int(job.status) for job in jobs} == {31}
    # the fourth start: 429 before any read of the chain or write (no job, no transaction)
    sent = len(_transactions())
    response = client.http.post(API + "/compute", body=json.dumps(_start_body(chain, published, orders)),
                                headers={"Content-Type": "application/json"})
    assert response.status_code == 429, response.body
    assert "failed on chain" in json.loads(response.body)["error"]
    assert 0 < int(response.headers["Retry-After"]) <= 600
    assert len(_transactions()) == sent and len(services.job_service().find(chain.consumer.address).jobs) == 3
    # the window passes: the same order starts a job with a lock the consumer pays for
    monkeypatch.setattr(services.payments().accounts, "_clock", lambda: time.time() + 601)
    batch.expect_new_definition()
    batch.expect_submit("batch-paid")
    (status, answer), _ = _start(client, chain, published, quote, orders=orders)
    assert status == 200 and answer[0]["status"] == 1, answer
    assert services.payments().get(answer[0]["jobId"]).status == "locked"
    assert funds(chain) == (0, LOCK)
