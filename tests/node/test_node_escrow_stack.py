"""Concurrent paid starts at `/node` against `make run`'s stack (its API server over HTTP, moto
server, anvil, the local backend): every start locks through the provider's one transaction path
per chain, so every lock and every claim is mined with its own nonce, none lost or reused, and the
consumer's escrow ends at what it held minus the claims."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import requests
from web3 import Web3

from devstack.anvil import dev_accounts
from devstack.contracts import contract, send
from devstack.demo import Consumer, _node_token
from devstack.orders import mint_datatokens, start_order

STARTS = 20  # the environment's maxJobs locally: every slot taken at once
SECONDS = 60  # one minute locked per job


def test_concurrent_paid_starts_each_lock_and_claim_with_their_own_nonce(local_stack):
    stack, consumer = local_stack, Consumer(local_stack)
    chain_id, ocean = stack["chainId"], stack["contracts"]["OceanToken"]
    w3 = Web3(Web3.HTTPProvider(stack["rpcUrl"]))
    key = stack["consumerPrivateKey"]
    publisher = dev_accounts(1)[0]  # the samples' publisher: it mints their datatokens
    dataset, algorithm = stack["dataset"], stack["algorithm"]
    for asset in (dataset, algorithm):
        mint_datatokens(w3, publisher, asset["datatoken"], consumer.address, STARTS * 10**18)
    inputs = [{"documentId": dataset["did"], "serviceId": dataset["serviceId"]}]
    algo = {"documentId": algorithm["did"], "serviceId": algorithm["serviceId"]}
    payment = {"chainId": chain_id, "token": ocean}
    quotes = [consumer.call("POST", "/node/api/services/initializeCompute", json={
        "datasets": inputs, "algorithm": algo, "environment": "ocean-c2d-cpu", "consumerAddress": consumer.address,
        "maxJobDuration": SECONDS, "payment": payment}).json() for _ in range(STARTS)]
    amount = int(quotes[0]["payment"]["amount"])
    escrow = contract(w3, "Escrow", stack["contracts"]["Escrow"])
    send(w3, key, contract(w3, "OceanToken", ocean).functions.approve(escrow.address, STARTS * amount))
    send(w3, key, escrow.functions.deposit(ocean, STARTS * amount))
    send(w3, key, escrow.functions.authorize(ocean, stack["providerAddress"], STARTS * amount,
                                             quotes[0]["payment"]["minLockSeconds"], STARTS))
    before = escrow.functions.getUserFunds(consumer.address, ocean).call()
    orders = [(start_order(w3, key, dataset["datatoken"], dataset["serviceIndex"], q["datasets"][0]["providerFee"]),
               start_order(w3, key, algorithm["datatoken"], algorithm["serviceIndex"], q["algorithm"]["providerFee"]))
              for q in quotes]
    token = _node_token(consumer)

    def start(paid: tuple[str, str]) -> tuple[int, dict, float]:
        began = time.monotonic()
        answer = requests.post(stack["providerUrl"] + "/node/api/services/compute", headers={"Authorization": token},
                               timeout=60, json={
            "consumerAddress": consumer.address, "environment": "ocean-c2d-cpu", "maxJobDuration": SECONDS,
            "datasets": [{**inputs[0], "transferTxId": paid[0]}], "algorithm": {**algo, "transferTxId": paid[1]},
            "chainId": chain_id, "payment": {**payment, "maxJobDuration": SECONDS}})
        return answer.status_code, answer.json(), time.monotonic() - began

    with ThreadPoolExecutor(STARTS) as pool:
        answers = list(pool.map(start, orders))
    assert [status for status, _, _ in answers] == [200] * STARTS, [body for _, body, _ in answers]
    # as the client saw it: the local API server queues requests that Lambda would run side by side
    slowest = max(took for _, _, took in answers)
    jobs = [body[0]["jobId"] for _, body, _ in answers]
    views = {}
    deadline = time.monotonic() + 180
    while len(views) < STARTS and time.monotonic() < deadline:
        for job_id in set(jobs) - set(views):
            status = consumer.call("GET", "/node/api/services/compute", headers={"Authorization": token},
                                   params={"consumerAddress": consumer.address, "jobId": job_id}).json()[0]
            if status["status"] == 70 and status["payment"]["status"] == "claimed":
                views[job_id] = status["payment"]
        time.sleep(0.5)
    assert len(views) == STARTS, f"settled: {len(views)} of {STARTS}"
    nonces = [view[kind]["nonce"] for view in views.values() for kind in ("lock", "claim")]
    assert len(set(nonces)) == 2 * STARTS and all(view[k]["status"] == "mined" for view in views.values() for k in ("lock", "claim"))
    for view in views.values():
        assert view["claim"]["nonce"] > view["lock"]["nonce"] and 0 < int(view["claimed"]) <= int(view["amount"]) == amount
    claimed = sum(int(view["claimed"]) for view in views.values())
    after = escrow.functions.getUserFunds(consumer.address, ocean).call()
    assert list(after) == [before[0] - claimed, before[1]]
    print(f"{STARTS} concurrent paid starts: slowest answered in {slowest:.2f} s", flush=True)
