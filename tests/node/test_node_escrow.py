"""Ocean Node's escrow payments on the `/node` routes, end to end on anvil (real Escrow, real
transactions from the provider's key) and in-process moto, Batch behind botocore's Stubber:
initializeCompute's `payment`, the consumer's checks before anything is reserved, the lock mined
before the dispatch, the claim from the terminal event, a stop, a failed dispatch, the gas view."""
from __future__ import annotations

import json
import time

import pytest

from escrow_fixtures import payment_tables  # noqa: F401  (fixture)
from lifecycle_helpers import order_both
from test_events import batch_event, runner_event
from test_node_protocol import API, JOB_QUEUE_ARN, deliver, get, node, post, signed  # noqa: F401  (node: fixture)

from devstack.contracts import OCEAN_UNIT
from escrow_helpers import authorize, deposit, funds
from escrow_helpers import events as escrow_events

PER_MINUTE = OCEAN_UNIT  # the cpu environment: priceMin 1 OCEAN/min over its 2 CPUs (0.5 per CPU)


@pytest.fixture
def escrow_env(monkeypatch, chain):
    monkeypatch.setenv("ESCROW_CONTRACTS", json.dumps({str(chain.chain_id): chain.contracts.Escrow}))


@pytest.fixture
def paid(escrow_env, node, payment_tables):  # noqa: F811
    return node


def _datasets(published, tx=None):
    return [{"documentId": published.dataset.did, "serviceId": published.dataset.serviceId,
             **({"transferTxId": tx} if tx else {})}]


def _algorithm(published, tx=None):
    return {"documentId": published.algorithm.did, "serviceId": published.algorithm.serviceId,
            **({"transferTxId": tx} if tx else {})}


def _initialize(client, chain, published, **payment):
    body = {"datasets": _datasets(published), "algorithm": _algorithm(published), "environment": "ocean-c2d-cpu",
            "consumerAddress": chain.consumer.address, "maxJobDuration": int(time.time()) + 900,
            "payment": {"chainId": chain.chain_id, "token": chain.contracts.OceanToken,
                        "resources": [{"id": "cpu", "amount": 1}], **payment}}
    return post(client, "/initializeCompute", body)


def _start(client, chain, published, quote, seconds=600, orders=None):
    dataset_tx, algorithm_tx = orders or order_both(chain, published, quote)
    body = {**signed(chain.consumer, "startCompute"), "environment": "ocean-c2d-cpu", "maxJobDuration": seconds,
            "datasets": _datasets(published, dataset_tx), "algorithm": _algorithm(published, algorithm_tx),
            "chainId": chain.chain_id, "payment": {"chainId": chain.chain_id, "token": chain.contracts.OceanToken,
                                                   "maxJobDuration": seconds, "resources": [{"id": "cpu", "amount": 2}]}}
    return post(client, "/compute", body), (dataset_tx, algorithm_tx)


def _payment(client, chain, job_id):
    from chalicelib import services

    token = services.token_service().create(chain.consumer.address, int(time.time()) + 600)
    jobs = json.loads(get(client, "/compute", headers={"Authorization": token}, consumerAddress=chain.consumer.address,
                          jobId=job_id).body)
    return jobs[0]



def _funded_quote(client, chain, published):
    """The consumer deposits 50 OCEAN and lets the provider lock 30 minutes' worth, 3 times at
    most; its escrow funds before anything is locked, and initializeCompute's payment quote."""
    deposit(chain, 50 * OCEAN_UNIT)
    authorize(chain, max_locked=30 * PER_MINUTE, max_seconds=600 + 1800, max_locks=3)
    before = funds(chain)
    _, quote = _initialize(client, chain, published)
    return before, quote

def test_initialize_answers_the_escrow_payment(client, paid):
    chain, _, published = paid
    status, quote = _initialize(client, chain, published)
    assert status == 200, quote
    payment = quote["payment"]
    assert payment == {"escrowAddress": chain.contracts.Escrow, "payee": chain.provider.address,
                       "chainId": chain.chain_id, "token": chain.contracts.OceanToken,
                       "amount": str(60 * PER_MINUTE),  # maxJobDuration capped at the env's 3600 s
                       "minLockSeconds": 3600 + 900 + 900}
    assert "providerFee" in quote["datasets"][0] and "providerFee" in quote["algorithm"]
    status, body = _initialize(client, chain, published, token="0x" + "12" * 20)
    assert status == 400 and "takes no payment in token" in body["error"]


def test_paid_start_locks_before_dispatch_and_claims_at_the_end(client, paid):
    chain, batch, published = paid
    _, quote = _initialize(client, chain, published)
    # not authorized: a 400 before anything is reserved, the orders stay usable
    (status, body), (dataset_tx, algorithm_tx) = _start(client, chain, published, quote)
    assert status == 400 and "has not authorized" in body["error"], body
    assert json.loads(get(client, "/compute", consumerAddress=chain.consumer.address).body) == []
    deposit(chain, 50 * OCEAN_UNIT)
    authorize(chain, max_locked=20 * PER_MINUTE, max_seconds=600 + 1800, max_locks=2)
    before = funds(chain)
    batch.expect_new_definition()
    batch.expect_submit("batch-paid")
    body = {**signed(chain.consumer, "startCompute"), "environment": "ocean-c2d-cpu", "maxJobDuration": 600,
            "datasets": _datasets(published, dataset_tx), "algorithm": _algorithm(published, algorithm_tx),
            "chainId": chain.chain_id, "payment": {"chainId": chain.chain_id, "token": chain.contracts.OceanToken,
                                                   "maxJobDuration": 600}}
    began = time.monotonic()
    status, answer = post(client, "/compute", body)
    took = time.monotonic() - began
    assert status == 200, answer
    job_id = answer[0]["jobId"]
    assert answer[0]["status"] == 1 and len(batch.submitted) == 1 and took < 10
    assert batch.submitted[0]["timeout"]["attemptDurationSeconds"] >= 600
    locked = funds(chain)
    assert locked == (before[0] - 10 * PER_MINUTE, before[1] + 10 * PER_MINUTE)
    view = _payment(client, chain, job_id)["payment"]
    assert view["status"] == "locked" and view["amount"] == str(10 * PER_MINUTE) and view["lock"]["status"] == "mined"
    [lock] = escrow_events(chain, view["lock"]["hash"], "Lock")
    assert lock["payer"] == chain.consumer.address and int(lock["amount"]) == 10 * PER_MINUTE
    # the status call without the owner's token does not show the payment
    assert "payment" not in json.loads(get(client, "/compute", consumerAddress=chain.consumer.address).body)[0]
    # a replay of the same start (a new nonce, the same orders) answers its job and locks nothing more
    status, replay = post(client, "/compute", {**body, **signed(chain.consumer, "startCompute")})
    assert status == 200 and [j["jobId"] for j in replay] == [job_id], replay
    assert funds(chain) == locked and len(batch.submitted) == 1
    # the job runs (Batch's startedAt T0-50, stoppedAt T0: 50 s, billed as minJobDuration 60 s)
    deliver(client, batch_event(job_id, "RUNNING", batch_job_id="batch-paid", queue=JOB_QUEUE_ARN))
    deliver(client, runner_event(job_id, 70))
    deliver(client, batch_event(job_id, "SUCCEEDED", batch_job_id="batch-paid", queue=JOB_QUEUE_ARN,
                                exits={"configure": 0, "algorithm": 0, "publish": 0}))
    deliver(client, batch_event(job_id, "SUCCEEDED", batch_job_id="batch-paid", queue=JOB_QUEUE_ARN,
                                exits={"configure": 0, "algorithm": 0, "publish": 0}))  # duplicated: claims once
    job = _payment(client, chain, job_id)
    assert job["status"] == 70
    view = job["payment"]
    assert view["status"] == "claimed" and view["claimed"] == str(PER_MINUTE) and view["billedSeconds"] == 60
    [claimed] = escrow_events(chain, view["claim"]["hash"], "Claimed")
    assert 0 < int(claimed["amount"]) == PER_MINUTE <= 10 * PER_MINUTE
    assert funds(chain) == (before[0] - PER_MINUTE, before[1])


def test_stopped_job_claims_the_minutes_it_ran_and_a_failed_dispatch_cancels(client, paid, monkeypatch):
    chain, batch, published = paid
    before, quote = _funded_quote(client, chain, published)
    batch.expect_new_definition()
    batch.expect_submit_failure()
    (status, body), orders = _start(client, chain, published, quote)
    assert status == 503, body
    from chalicelib import services

    [failed] = services.job_service().find(chain.consumer.address).jobs
    assert failed.status == 31 and failed.termination_details.as_dict()["reason"]
    assert services.payments().view(failed.job_id)["status"] == "cancelled"
    assert funds(chain) == before and services.usage_counter().current(["ocean-c2d-cpu"]) == {"ocean-c2d-cpu": 0}
    # its orders were given back: a job on them, stopped after 150 s of running, claims 3 minutes
    batch.expect_submit("batch-stop")
    (status, answer), _ = _start(client, chain, published, quote, orders=orders)
    assert status == 200, answer
    job_id = answer[0]["jobId"]
    now = int(time.time())
    from chalicelib.models import JobRecord

    deliver(client, batch_event(job_id, "RUNNING", batch_job_id="batch-stop", queue=JOB_QUEUE_ARN))
    JobRecord(job_id).update(actions=[JobRecord.running_at.set(now - 150)])
    batch.expect_terminate()
    response = client.http.put(API + "/compute?" + "&".join(f"{k}={v}" for k, v in {
        **signed(chain.consumer, "stopCompute"), "jobId": job_id}.items()))
    assert response.status_code == 200, response.body
    view = _payment(client, chain, job_id)["payment"]
    assert view["status"] == "claimed" and view["billedSeconds"] in (150, 151, 152) and view["claimed"] == str(3 * PER_MINUTE)
    assert funds(chain) == (before[0] - 3 * PER_MINUTE, before[1])


def test_environments_show_the_providers_gas_and_the_reconciler_settles_what_was_left(client, paid):
    chain, batch, published = paid
    envs = json.loads(get(client, "/computeEnvironments").body)
    gas = envs[0]["providerGasBalance"][str(chain.chain_id)]
    assert int(gas) == chain.w3.eth.get_balance(chain.provider.address)
    before, quote = _funded_quote(client, chain, published)
    batch.expect_new_definition()
    batch.expect_submit("batch-lost")
    (status, answer), _ = _start(client, chain, published, quote)
    assert status == 200, answer
    job_id = answer[0]["jobId"]
    # the job ends but its terminal hook never ran (a Lambda killed right after the write)
    from chalicelib.compute import transitions
    from chalicelib.models import JobRecord

    job = JobRecord.get(job_id)
    transitions.write(job, [JobRecord.status.set(70), JobRecord.running_at.set(int(time.time()) - 100),
                            JobRecord.date_finished.set(int(time.time()))], JobRecord.status == 1, ends_job=True)
    tick = client.events.generate_cw_event(source="aws.events", detail_type="Scheduled Event", detail={},
                                           resources=["arn:aws:events:us-east-1:123456789012:rule/reconcile"])
    report = client.lambda_.invoke("reconcile_jobs", tick).payload  # the scheduled function, as deployed
    assert report["settled"] == {job_id: "claimed"}, report
    assert funds(chain) == (before[0] - 2 * PER_MINUTE, before[1])
    assert client.lambda_.invoke("reconcile_jobs", tick).payload["settled"] == {}


def test_a_job_whose_algorithm_never_ran_is_cancelled_and_one_that_failed_is_claimed(client, paid):
    chain, batch, published = paid
    before, quote = _funded_quote(client, chain, published)
    batch.expect_new_definition()
    batch.expect_submit("batch-configure")
    (status, answer), _ = _start(client, chain, published, quote)
    assert status == 200, answer
    job_id = answer[0]["jobId"]
    deliver(client, batch_event(job_id, "RUNNING", batch_job_id="batch-configure", queue=JOB_QUEUE_ARN))
    deliver(client, runner_event(job_id, 31, reason="input 0 (did) could not be downloaded"))
    job = _payment(client, chain, job_id)
    assert job["status"] == 31 and job["payment"]["status"] == "cancelled" and job["payment"]["claimed"] == "0"
    assert funds(chain) == before
    # the algorithm ran and failed: the consumer pays the time it ran
    from devstack.orders import mint_datatokens

    for asset in (published.dataset, published.algorithm):  # a datatoken of each for the next orders
        mint_datatokens(chain.w3, chain.publisher, asset.datatoken, chain.consumer.address, OCEAN_UNIT)
    _, quote = _initialize(client, chain, published)
    batch.expect_submit("batch-failing")
    (status, answer), _ = _start(client, chain, published, quote)
    assert status == 200, answer
    job_id = answer[0]["jobId"]
    deliver(client, batch_event(job_id, "RUNNING", batch_job_id="batch-failing", queue=JOB_QUEUE_ARN))
    deliver(client, batch_event(job_id, "FAILED", batch_job_id="batch-failing", queue=JOB_QUEUE_ARN,
                                exits={"configure": 0, "algorithm": 1, "publish": 0}))
    job = _payment(client, chain, job_id)
    assert job["status"] == 41 and job["payment"]["status"] == "claimed" and job["payment"]["claimed"] == str(PER_MINUTE)
    assert funds(chain) == (before[0] - PER_MINUTE, before[1])


def test_no_gas_is_a_503_before_the_job(client, paid):
    from chalicelib import services
    from escrow_fixtures import rpc

    chain, batch, published = paid
    before, quote = _funded_quote(client, chain, published)
    orders = order_both(chain, published, quote)
    provider = chain.provider.address
    balance = chain.w3.eth.get_balance(provider)
    rpc(chain, "anvil_setBalance", provider, hex(10**9))  # far less than a lock and its claim cost
    try:
        (status, body), _ = _start(client, chain, published, quote, orders=orders)
    finally:
        rpc(chain, "anvil_setBalance", provider, hex(balance))
    assert status == 503 and "cannot pay for transactions" in body["error"], body
    assert services.job_service().find(chain.consumer.address).jobs == []  # nothing reserved
    assert funds(chain) == before
