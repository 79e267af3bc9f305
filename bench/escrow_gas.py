"""The provider's gas per refused or failed paid start (issue 20, observation 1): what Ocean Node's
escrow starts at /node cost the provider's key when the consumer does not pay, on anvil with real
transactions, in-process moto, the app's own request handling and Batch answered in process.

Three scenarios, run in sequence on one chain:

- concurrent: six paid starts at once, the payer's escrow holding one lock's funds, 2-second
  blocks. Unpaid gas = every provider transaction but the winner's lock (and claim).
- not mined: the chain mines nothing while a start waits for its lock (the start's wait cut to
  1 s); then blocks come, the consumer sends the same start again, the job runs and ends.
- front-run: five starts whose lock the payer front-runs with a withdraw (higher fee), each
  followed by a new deposit, all within ESCROW_FAILURE_WINDOW.
- batch down: a start whose SubmitJob fails after its lock was mined (the provider's own
  failure: the lock is cancelled), the reference for lock + cancel.

"Unpaid gas" is the gas of every provider transaction of the scenario minus the lock and claim of
the jobs that ran and were claimed (a positive claim pays the provider). Reference figures (one
lock + claim, lock + cancel, a reverted lock) come from the same receipts. `make bench` prints
these beside main's (bench/baseline.json, measured with this very file, and bench/consumer.py,
run in main's tree).
"""
from __future__ import annotations

import json
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

from botocore.awsrequest import AWSResponse

NODE = "/node/api/services"
CONCURRENT = 6
FRONT_RUNS = 5


class BatchAnswers:
    """AWS Batch for one real boto3 client (parameters validated by botocore): definitions,
    submits (each its own id), terminations; nothing reaches the network."""

    def __init__(self) -> None:
        import boto3

        self.client = boto3.client("batch", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
        self.definitions: dict[str, str] = {}
        self.submitted: dict[str, str] = {}  # Batch job id -> our job id
        self.down = False  # SubmitJob answers 500
        self.client.meta.events.register_first("before-call.*.*", self._answer)

    def _answer(self, event_name: str, params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        operation, body = event_name.rsplit(".", 1)[-1], json.loads(params.get("body") or b"{}")
        answer: dict[str, Any] = {}
        if operation == "DescribeJobDefinitions":
            arn = self.definitions.get(body.get("jobDefinitionName"))
            answer = {"jobDefinitions": [{"jobDefinitionName": body["jobDefinitionName"], "jobDefinitionArn": arn,
                                          "revision": 1, "status": "ACTIVE", "type": "container"}] if arn else []}
        elif operation == "RegisterJobDefinition":
            arn = self.definitions[body["jobDefinitionName"]] = f"arn:aws:batch:us-east-1:1:job-definition/{body['jobDefinitionName']}:1"
            answer = {"jobDefinitionName": body["jobDefinitionName"], "jobDefinitionArn": arn, "revision": 1}
        elif operation == "SubmitJob" and self.down:
            return AWSResponse("https://batch.invalid/", 500, {}, None), {
                "Error": {"Code": "ServerException", "Message": "down"}, "ResponseMetadata": {"HTTPStatusCode": 500}}
        elif operation == "SubmitJob":
            batch_job_id = "b-" + uuid.uuid4().hex[:12]
            self.submitted[batch_job_id] = body["tags"]["c2d:jobId"]
            answer = {"jobName": body["jobName"], "jobId": batch_job_id, "jobArn": f"arn:aws:batch:us-east-1:1:job/{batch_job_id}"}
        elif operation in ("ListJobs", "DescribeJobs"):
            answer = {"jobSummaryList": []} if operation == "ListJobs" else {"jobs": []}
        return AWSResponse("https://batch.invalid/", 200, {}, None), {**answer, "ResponseMetadata": {"HTTPStatusCode": 200}}


class Bench:
    """The provider under measure, its chain, and the consumer's side."""

    def __init__(self, chain: Any, client: Any, samples: Any, batch: BatchAnswers) -> None:
        from chalicelib import services

        self.chain, self.client, self.samples, self.batch = chain, client, samples, batch
        self.services = services
        self.token = services.token_service().create(chain.consumer.address, int(time.time()) + 3600)

    # -- the consumer ----------------------------------------------------------------------

    def rpc(self, method: str, *params: Any) -> Any:
        return self.chain.w3.provider.make_request(method, list(params)).get("result")

    def escrow(self) -> Any:
        from devstack.contracts import contract

        return contract(self.chain.w3, "Escrow", self.chain.contracts.Escrow)

    def deposit(self, amount: int) -> None:
        from devstack.contracts import contract, send

        ocean = contract(self.chain.w3, "OceanToken", self.chain.contracts.OceanToken)
        send(self.chain.w3, self.chain.consumer, ocean.functions.approve(self.chain.contracts.Escrow, amount))
        send(self.chain.w3, self.chain.consumer, self.escrow().functions.deposit(self.chain.contracts.OceanToken, amount))

    def authorize(self, max_locked: int, max_locks: int) -> None:
        from devstack.contracts import send

        send(self.chain.w3, self.chain.consumer, self.escrow().functions.authorize(
            self.chain.contracts.OceanToken, self.chain.provider.address, max_locked, 600 + 1800, max_locks))

    def available(self) -> int:
        return int(self.escrow().functions.getUserFunds(self.chain.consumer.address, self.chain.contracts.OceanToken).call()[0])

    def orders(self) -> tuple[str, str]:
        from devstack.orders import start_order

        dataset, algorithm = self.samples.dataset, self.samples.algorithm
        status, quote = self.request("/initializeCompute", {
            "datasets": [{"documentId": dataset.did, "serviceId": dataset.serviceId}],
            "algorithm": {"documentId": algorithm.did, "serviceId": algorithm.serviceId},
            "environment": "ocean-c2d-cpu", "consumerAddress": self.chain.consumer.address, "maxJobDuration": 600,
            "payment": {"chainId": self.chain.chain_id, "token": self.chain.contracts.OceanToken}})
        assert status == 200, quote
        key = "0x" + bytes(self.chain.consumer.key).hex()
        return (start_order(self.chain.w3, key, dataset.datatoken, 0, quote["datasets"][0]["providerFee"]),
                start_order(self.chain.w3, key, algorithm.datatoken, 0, quote["algorithm"]["providerFee"]))

    def start(self, orders: tuple[str, str]) -> tuple[int, Any]:
        dataset, algorithm = self.samples.dataset, self.samples.algorithm
        return self.request("/compute", {
            "consumerAddress": self.chain.consumer.address, "environment": "ocean-c2d-cpu", "maxJobDuration": 600,
            "datasets": [{"documentId": dataset.did, "serviceId": dataset.serviceId, "transferTxId": orders[0]}],
            "algorithm": {"documentId": algorithm.did, "serviceId": algorithm.serviceId, "transferTxId": orders[1]},
            "chainId": self.chain.chain_id, "payment": {"chainId": self.chain.chain_id, "token": self.chain.contracts.OceanToken,
                                                        "maxJobDuration": 600, "resources": [{"id": "cpu", "amount": 2}]}})

    def request(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """One request through the app's own request handling (safe from threads, unlike
        Chalice's test client, which keeps the current request on the app)."""
        import app as app_module
        from chalicelib.http import handle

        if not hasattr(app_module.app, "lambda_context"):
            app_module.app.lambda_context = None  # (set by Chalice per invocation; none here)
        request = SimpleNamespace(raw_body=json.dumps(body).encode(), query_params=None, uri_params=None, method="POST",
                                  headers={"content-type": "application/json", "Authorization": self.token})
        response = handle(app_module.api._paths[NODE + path]["POST"], request)
        return response.status_code, json.loads(response.body)

    # -- the provider's side ---------------------------------------------------------------

    def finish_jobs(self) -> None:
        """Every job submitted runs a minute and ends (its events delivered): its lock is claimed."""
        from chalicelib.compute.event_signals import batch_state_event

        for batch_job_id, job_id in list(self.batch.submitted.items()):
            for status in ("RUNNING", "SUCCEEDED"):
                exits = {"configure": 0, "algorithm": 0, "publish": 0} if status == "SUCCEEDED" else None
                self.services.job_events().handle(batch_state_event(
                    job_id, batch_job_id, "ocean-c2d-cpu", status, exit_codes=exits))
            del self.batch.submitted[batch_job_id]

    def heal(self) -> None:
        for _ in range(3):
            self.services.payments().heal([self.chain.chain_id])

    def gas(self, first_block: int) -> dict[str, Any]:
        """The provider's transactions since `first_block`: total gas, what paid jobs' lock and
        claim used, what reverted."""
        from chalicelib.payments.models import ChainTransaction, EscrowPayment

        w3, provider = self.chain.w3, self.chain.provider.address
        total, reverted, spent = 0, [], {}
        for number in range(first_block, w3.eth.block_number + 1):
            for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]:
                if tx["from"] == provider:
                    receipt = w3.eth.get_transaction_receipt(tx["hash"])
                    total += int(receipt["gasUsed"])
                    spent["0x" + bytes(tx["hash"]).hex()] = int(receipt["gasUsed"])
                    if receipt["status"] != 1:
                        reverted.append(int(receipt["gasUsed"]))
        ledger = {t.purpose: t for t in ChainTransaction.scan()}
        paid, lock_claim, lock_cancel = 0, [], []
        for payment in EscrowPayment.scan():
            lock, claim = ledger.get(f"lock:{payment.job_id}"), ledger.get(f"claim:{payment.job_id}")
            cancel = ledger.get(f"cancel:{payment.job_id}")
            used = [spent.get(t.mined_hash or "", 0) for t in (lock, claim, cancel) if t is not None]
            if payment.status == "claimed" and int(payment.claimed or 0) > 0:
                paid += sum(used)
                lock_claim.append(sum(used))
            elif lock is not None and cancel is not None and sum(used):
                lock_cancel.append(sum(used))
        return {"total": total, "unpaid": total - paid, "reverted": reverted, "lockClaim": lock_claim,
                "lockCancel": lock_cancel}

    def reset_records(self) -> None:
        """Start each scenario with the payment records of its own only."""
        from chalicelib.payments.models import EscrowPayment

        with EscrowPayment.batch_write() as batch:
            for payment in EscrowPayment.scan():
                batch.delete(payment)


# -- the scenarios -------------------------------------------------------------------------------

def atomic_dynamodb() -> Any:
    """moto answers threads without isolation; DynamoDB applies each request atomically: make
    moto's DynamoDB backend take one request at a time (as tests/escrow_fixtures.atomic_moto)."""
    from contextlib import contextmanager

    from moto.dynamodb.models import DynamoDBBackend

    @contextmanager
    def serialised() -> Any:
        lock = threading.RLock()
        names = ("put_item", "update_item", "get_item", "delete_item", "transact_write_items", "query", "scan",
                 "batch_get_item")
        originals = {name: getattr(DynamoDBBackend, name) for name in names}

        def one_at_a_time(method: Any) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                with lock:
                    return method(*args, **kwargs)
            return call

        for name, method in originals.items():
            setattr(DynamoDBBackend, name, one_at_a_time(method))
        try:
            yield
        finally:
            for name, method in originals.items():
                setattr(DynamoDBBackend, name, method)

    return serialised()


def concurrent(bench: Bench, lock: int) -> dict[str, Any]:
    bench.reset_records()
    bench.deposit(lock)
    bench.authorize(100 * lock, 10)
    orders = [bench.orders() for _ in range(CONCURRENT)]
    first = bench.chain.w3.eth.block_number + 1
    bench.rpc("evm_setAutomine", False)
    bench.rpc("evm_setIntervalMining", 2)
    try:
        gate = threading.Barrier(CONCURRENT)

        def start(pair: tuple[str, str]) -> tuple[int, Any]:
            gate.wait()
            return bench.start(pair)

        with atomic_dynamodb(), ThreadPoolExecutor(CONCURRENT) as pool:
            answers = list(pool.map(start, orders))
        bench.heal()
        time.sleep(2.5)
        bench.heal()
    finally:
        bench.rpc("evm_setIntervalMining", 0)
        bench.rpc("evm_setAutomine", True)
    bench.finish_jobs()
    bench.heal()
    gas = bench.gas(first)
    refused = sum(1 for status, _ in answers if status != 200)
    return {**gas, "answers": sorted(status for status, _ in answers), "perRefused": gas["unpaid"] // max(1, refused)}


def not_mined(bench: Bench, lock: int) -> dict[str, Any]:
    from chalicelib.payments import paid_start

    bench.reset_records()
    bench.deposit(lock)
    orders = bench.orders()
    first = bench.chain.w3.eth.block_number + 1
    waited, paid_start.MAX_LOCK_WAIT = paid_start.MAX_LOCK_WAIT, 1.0
    bench.rpc("evm_setAutomine", False)
    try:
        status, _ = bench.start(orders)
    finally:
        paid_start.MAX_LOCK_WAIT = waited
        bench.rpc("evm_setAutomine", True)
        bench.rpc("evm_mine")
    bench.heal()
    again, _ = bench.start(orders)  # the consumer sends the same start again
    bench.finish_jobs()
    bench.heal()
    gas = bench.gas(first)
    return {**gas, "answers": [status, again], "perFailed": gas["unpaid"] // (1 if status != 200 else 1)}


def front_run(bench: Bench, lock: int) -> dict[str, Any]:
    from eth_account import Account

    from chalicelib.payments.models import ChainTransaction

    bench.reset_records()
    orders = bench.orders()
    first = bench.chain.w3.eth.block_number + 1
    answers = []
    account = Account.from_key(bench.chain.consumer.key)
    for _ in range(FRONT_RUNS):
        bench.deposit(lock)
        result: dict[str, Any] = {}
        pending = {t.purpose for t in ChainTransaction.scan()}
        bench.rpc("evm_setAutomine", False)
        try:
            worker = threading.Thread(target=lambda: result.update(answer=bench.start(orders)))
            worker.start()
            deadline = time.monotonic() + 10
            while worker.is_alive() and time.monotonic() < deadline and \
                    not {t.purpose for t in ChainTransaction.scan()} - pending:
                time.sleep(0.05)
            withdraw = bench.escrow().functions.withdraw([bench.chain.contracts.OceanToken], [bench.available()])
            tx = withdraw.build_transaction({"from": account.address, "gas": 200_000, "gasPrice": 500 * 10**9,
                                             "nonce": bench.chain.w3.eth.get_transaction_count(account.address, "pending"),
                                             "chainId": bench.chain.chain_id})
            bench.chain.w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
            bench.rpc("evm_mine")
            worker.join(timeout=30)
        finally:
            bench.rpc("evm_setAutomine", True)
        answers.append(result.get("answer", (0, None))[0])
        bench.heal()
    gas = bench.gas(first)
    return {**gas, "answers": answers, "perFailed": gas["unpaid"] // FRONT_RUNS}


def batch_down(bench: Bench, lock: int) -> dict[str, Any]:
    bench.reset_records()
    bench.deposit(lock)
    orders = bench.orders()
    first = bench.chain.w3.eth.block_number + 1
    bench.batch.down = True
    try:
        status, _ = bench.start(orders)
    finally:
        bench.batch.down = False
    bench.heal()
    return {**bench.gas(first), "answers": [status]}


# -- running it ----------------------------------------------------------------------------------

def measure() -> dict[str, Any]:
    for name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL")]:
        del os.environ[name]
    from bench.consumer import provider_environment
    from devstack.devchain import start_devchain
    from devstack.stack import DEV_PROVIDER_KEY

    chain = start_devchain(provider_key=DEV_PROVIDER_KEY)
    os.environ.update({**provider_environment(chain, "bench-gas"),
                       "ESCROW_CONTRACTS": json.dumps({str(chain.chain_id): chain.contracts.Escrow})})
    from moto import mock_aws

    try:
        with mock_aws(config={"batch": {"use_docker": False}}):
            return _measure_with(chain)
    finally:
        chain.stop()
        for name in ("ESCROW_CONTRACTS", "COMPUTE_ENVIRONMENTS"):
            os.environ.pop(name, None)


def _measure_with(chain: Any) -> dict[str, Any]:
    import app as app_module
    from chalice.test import Client

    from bench.aws_calls import _static_server
    from bench.consumer import provider_on
    from devstack.contracts import OCEAN_UNIT
    from devstack.publish import ecies_encrypt_for
    from devstack.samples import SAMPLE_DIR, publish_samples

    batch = BatchAnswers()
    server, files_url = _static_server(str(SAMPLE_DIR))
    try:
        with provider_on(batch.client) as services, Client(app_module.app, stage_name="local") as client:
            samples = publish_samples(chain, ecies_encrypt_for(chain.provider_public_key),
                                      services.settings().provider_url, files_url)
            for asset in (samples.dataset, samples.algorithm):
                services.asset_resolver().register(chain.chain_id, asset.nftAddress)
            bench = Bench(chain, client, samples, batch)
            lock = 10 * OCEAN_UNIT  # 600 s on the cpu environment: 1 OCEAN a minute
            return {"concurrent": concurrent(bench, lock), "notMined": not_mined(bench, lock),
                    "batchDown": batch_down(bench, lock), "frontRun": front_run(bench, lock)}
    finally:
        server.shutdown()


def summary(result: dict[str, Any]) -> dict[str, int]:
    """The figures the bench row prints."""
    lock_claim = result["notMined"]["lockClaim"] or result["concurrent"]["lockClaim"]
    lock_cancel = result["notMined"]["lockCancel"] or result["batchDown"]["lockCancel"]
    reverted = result["frontRun"]["reverted"] or result["concurrent"]["reverted"]
    return {
        "concurrent: unpaid gas per refused start": result["concurrent"]["perRefused"],
        "not mined: unpaid gas per failed start": result["notMined"]["perFailed"],
        "front-run: unpaid gas per attempt (5 within the window)": result["frontRun"]["perFailed"],
        "lock + claim": max(lock_claim) if lock_claim else 0,
        "lock + cancel": max(lock_cancel) if lock_cancel else 0,
        "reverted lock": max(reverted) if reverted else 0,
    }


def run() -> tuple[str, float, str, float]:
    from bench.baseline import today

    result = measure()
    figures = summary(result)
    try:
        before = today("escrow_gas")
    except KeyError:
        before = {}
    for name, value in figures.items():
        print(f"  {name}: {value:,} gas (main: {before[name]:,} gas)" if name in before else f"  {name}: {value:,} gas")
    print("  answers: " + json.dumps({k: v["answers"] for k, v in result.items()}))
    worst = max(figures["concurrent: unpaid gas per refused start"], figures["not mined: unpaid gas per failed start"])
    return "provider gas per refused or failed paid start (concurrent, not mined)", float(worst), "gas", 0.0


if __name__ == "__main__":
    outcome = measure()
    print(json.dumps({"result": outcome, "summary": summary(outcome)}, indent=2))
