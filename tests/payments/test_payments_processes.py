"""20 locks from 4 processes × 5 threads (separate containers, separate senders) through the
local stack's own path: the moto *server* (devstack.moto_server) and anvil."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.contracts import OCEAN_UNIT
from devstack.processes import ProcessGroup, free_port, wait_for_http
from chalicelib.payments.escrow import lock_id
from escrow_helpers import authorize, deposit, escrow, funds

WORKER = Path(__file__).with_name("lock_worker.py")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def moto_server(tmp_path):
    group = ProcessGroup()
    port = free_port()
    group.start("moto", [sys.executable, "-m", "devstack.moto_server", "-H", "127.0.0.1", "-p", str(port)],
                log_path=str(tmp_path / "moto.log"))
    try:
        wait_for_http(f"http://127.0.0.1:{port}/moto-api/", group=group)
        yield f"http://127.0.0.1:{port}"
    finally:
        group.stop()


def _worker(env: dict[str, str], *args: str) -> dict[str, str]:
    done = subprocess.run([sys.executable, str(WORKER), *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_twenty_locks_from_four_processes_on_the_moto_server(chain, moto_server) -> None:
    price_per_minute = 1  # OCEAN per cpu per minute: 10 OCEAN a lock
    deposit(chain, 200 * OCEAN_UNIT)
    authorize(chain, max_locks=20, max_locked=200 * OCEAN_UNIT)
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_server, "RESOURCE_PREFIX": "proc",
           "CHAINS": json.dumps({str(chain.chain_id): chain.rpc_url}),
           "ESCROW_CONTRACTS": json.dumps({str(chain.chain_id): chain.contracts.Escrow}),
           "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", "from chalicelib.bootstrap import main; main([])"], env=env, cwd=ROOT,
                   check=True, capture_output=True, timeout=120)
    fees = json.dumps({str(chain.chain_id): [{"feeToken": chain.contracts.OceanToken,
                                              "prices": [{"id": "cpu", "price": price_per_minute}]}]})
    start = chain.w3.eth.get_transaction_count(chain.provider.address)
    workers = [subprocess.Popen([sys.executable, str(WORKER), "lock", fees, chain.consumer.address, str(5 * w), "5"],
                                env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for w in range(4)]
    started: dict[str, str] = {}
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err[-3000:]
        started.update(json.loads(out.strip().splitlines()[-1]))
    assert len(started) == 20 and set(started.values()) == {"locking"}
    assert set(_worker(env, "confirm", "0", "20").values()) == {"locked"}
    assert chain.w3.eth.get_transaction_count(chain.provider.address) == start + 20  # no nonce lost or reused
    locks = escrow(chain).functions.getLocks(chain.contracts.OceanToken, chain.consumer.address,
                                             chain.provider.address).call()
    assert sorted(lock[0] for lock in locks) == sorted(lock_id(f"job-{i:02d}") for i in range(20))
    assert funds(chain) == (0, 200 * OCEAN_UNIT)
