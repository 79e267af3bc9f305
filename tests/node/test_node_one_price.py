"""One price, paid once, on both protocols (real orders, a real Escrow on anvil): at /node on a
chain with an Escrow the orders' providerFee carries no compute price and the escrow alone pays,
a start without `payment` there is refused and says why, and the start answers Ocean Node's
`payment`; at / (v4) the providerFee carries the price. Each test sums the consumer's OCEAN
(wallet + escrow) before and after a whole job: the difference is initializeCompute's quote."""
from __future__ import annotations

import json
import time

from escrow_fixtures import payment_tables  # noqa: F401  (fixture)
from lifecycle_helpers import consumer_key, initialize, order_both, post_start, start_body
from test_events import batch_event, runner_event
from test_node_escrow import PER_MINUTE, _initialize, _payment, _start, escrow_env, paid  # noqa: F401  (fixtures)
from test_node_protocol import JOB_QUEUE_ARN, deliver, node, post, signed  # noqa: F401  (node: fixture)

from devstack.contracts import OCEAN_UNIT, contract
from escrow_helpers import authorize, deposit, funds

SECONDS = 60  # the job's maxJobDuration, and the least billed: its 50 s run is billed 60 s, the whole quote


def _ocean(chain) -> int:
    """The consumer's OCEAN: its wallet plus its escrow funds (available and locked)."""
    wallet = contract(chain.w3, "OceanToken", chain.contracts.OceanToken).functions.balanceOf(chain.consumer.address).call()
    return int(wallet) + sum(funds(chain))


def _run_to_the_end(client, job_id: str, batch_job_id: str) -> None:
    deliver(client, batch_event(job_id, "RUNNING", batch_job_id=batch_job_id, queue=JOB_QUEUE_ARN))
    deliver(client, runner_event(job_id, 70))
    deliver(client, batch_event(job_id, "SUCCEEDED", batch_job_id=batch_job_id, queue=JOB_QUEUE_ARN,
                                exits={"configure": 0, "algorithm": 0, "publish": 0}))


def test_node_escrow_job_costs_the_escrow_quote_and_nothing_in_the_orders(client, paid):
    chain, batch, published = paid
    deposit(chain, 50 * OCEAN_UNIT)
    authorize(chain, max_locked=20 * PER_MINUTE, max_seconds=SECONDS + 1800, max_locks=2)
    before = _ocean(chain)
    body = {"datasets": [{"documentId": published.dataset.did, "serviceId": published.dataset.serviceId}],
            "algorithm": {"documentId": published.algorithm.did, "serviceId": published.algorithm.serviceId},
            "environment": "ocean-c2d-cpu", "consumerAddress": chain.consumer.address, "maxJobDuration": SECONDS,
            "payment": {"chainId": chain.chain_id, "token": chain.contracts.OceanToken}}
    status, quote = post(client, "/initializeCompute", body)
    assert status == 200, quote
    assert quote["datasets"][0]["providerFee"]["providerFeeAmount"] == "0"
    assert quote["algorithm"]["providerFee"]["providerFeeAmount"] == "0"
    batch.expect_new_definition()
    batch.expect_submit("batch-once")
    (status, answer), _ = _start(client, chain, published, quote, seconds=SECONDS)
    assert status == 200, answer
    job_id, payment = answer[0]["jobId"], answer[0]["payment"]
    assert payment["chainId"] == chain.chain_id and payment["token"] == chain.contracts.OceanToken
    assert payment["lockTx"].startswith("0x") and payment["claimTx"] is None and payment["cancelTx"] is None
    assert payment["cost"] == "0"
    _run_to_the_end(client, job_id, "batch-once")
    kept = _payment(client, chain, job_id)["payment"]  # the owner's status keeps it
    assert kept["lockTx"] == payment["lockTx"] and kept["claimTx"] and kept["cost"] == kept["claimed"]
    assert before - _ocean(chain) == int(kept["cost"]) == int(quote["payment"]["amount"]) == PER_MINUTE


def test_node_start_without_payment_on_an_escrow_chain_is_refused_and_says_why(client, paid):
    chain, _, published = paid
    status, quote = _initialize(client, chain, published)
    dataset_tx, algorithm_tx = order_both(chain, published, quote)
    body = {**signed(chain.consumer, "startCompute"), "environment": "ocean-c2d-cpu", "chainId": chain.chain_id,
            "datasets": [{"documentId": published.dataset.did, "serviceId": published.dataset.serviceId,
                          "transferTxId": dataset_tx}],
            "algorithm": {"documentId": published.algorithm.did, "serviceId": published.algorithm.serviceId,
                          "transferTxId": algorithm_tx}}
    status, answer = post(client, "/compute", body)
    assert status == 400 and "paid for compute through the escrow" in answer["error"], answer


def test_v4_job_costs_the_provider_fee_quote(client, paid):
    chain, batch, published = paid
    before = _ocean(chain)
    quote = initialize(client, published, chain.consumer.address, valid_until=int(time.time()) + SECONDS)
    price = int(quote["datasets"][0]["providerFee"]["providerFeeAmount"])
    assert price > 0 and int(quote["algorithm"]["providerFee"]["providerFeeAmount"]) == 0
    dataset_tx, algorithm_tx = order_both(chain, published, quote)
    batch.expect_new_definition()
    batch.expect_submit("batch-v4")
    status, answer = post_start(client, start_body(published, chain.consumer, time.time_ns(), dataset_tx, algorithm_tx))
    assert status == 200, answer
    _run_to_the_end(client, answer[0]["jobId"], "batch-v4")
    assert "payment" not in answer[0] and before - _ocean(chain) == price
    assert consumer_key(chain.consumer)  # the same consumer paid both ways
