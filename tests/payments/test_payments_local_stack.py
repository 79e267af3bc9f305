"""`make run`'s stack (python -m devstack) deploys the Escrow, lists it in stack.json, and the
provider's payments run there through the stack's own moto server and anvil."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from eth_account import Account
from web3 import HTTPProvider, Web3

from devstack.contracts import OCEAN_UNIT, contract, send
from devstack.stack import DEV_PROVIDER_KEY

WORKER = Path(__file__).with_name("lock_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def _worker(env: dict[str, str], *args: str) -> dict:
    done = subprocess.run([sys.executable, str(WORKER), *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_local_stack_locks_and_claims_on_its_escrow(local_stack) -> None:
    stack = local_stack
    w3 = Web3(HTTPProvider(stack["rpcUrl"]))
    escrow = contract(w3, "Escrow", stack["contracts"]["Escrow"])
    ocean = stack["contracts"]["OceanToken"]
    assert escrow.functions.factoryRouter().call() == stack["contracts"]["FactoryRouter"]
    consumer = Account.from_key(stack["consumerPrivateKey"])
    provider = Account.from_key(DEV_PROVIDER_KEY).address
    assert provider == stack["providerAddress"]
    send(w3, consumer, contract(w3, "OceanToken", ocean).functions.approve(escrow.address, 50 * OCEAN_UNIT))
    send(w3, consumer, escrow.functions.deposit(ocean, 50 * OCEAN_UNIT))
    send(w3, consumer, escrow.functions.authorize(ocean, provider, 50 * OCEAN_UNIT, 86_400, 3))
    before = escrow.functions.getUserFunds(consumer.address, ocean).call()
    env = {**os.environ, "AWS_ENDPOINT_URL": stack["awsEndpoint"], "AWS_ACCESS_KEY_ID": "local",
           "AWS_SECRET_ACCESS_KEY": "local", "RESOURCE_PREFIX": "local", "RESULTS_BUCKET": "local-c2d-results",
           "CHAINS": json.dumps({str(stack["chainId"]): stack["rpcUrl"]}), "PROVIDER_PRIVATE_KEY": DEV_PROVIDER_KEY,
           "ESCROW_CONTRACTS": json.dumps({str(stack["chainId"]): escrow.address}), "PYTHONPATH": str(ROOT),
           "JOB_PREFIX": "stack-job-"}  # fmt: skip
    env.pop("AWS_SESSION_TOKEN", None)
    fees = json.dumps({str(stack["chainId"]): [{"feeToken": ocean, "prices": [{"id": "cpu", "price": 1}]}]})
    assert _worker(env, "lock", fees, consumer.address, "0", "1") == {"stack-job-00": "locking"}
    assert _worker(env, "confirm", "0", "1") == {"stack-job-00": "locked"}
    assert _worker(env, "claim", "0", "1", "90") == {"stack-job-00": ["claimed", str(2 * OCEAN_UNIT)]}
    after = escrow.functions.getUserFunds(consumer.address, ocean).call()
    assert tuple(after) == (before[0] - 2 * OCEAN_UNIT, 0)
