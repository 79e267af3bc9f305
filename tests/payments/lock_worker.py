"""One "Lambda container" for the multi-process test: its own process, its own clients, talking
to the moto server and anvil. Usage (environment: AWS_ENDPOINT_URL, CHAINS, PROVIDER_PRIVATE_KEY,
ESCROW_CONTRACTS, ...):

    python lock_worker.py lock <fees json> <consumer> <first> <count>   # <count> threads, one lock each
    python lock_worker.py confirm <first> <count>                        # wait for each lock
    python lock_worker.py claim <first> <count> <run seconds>            # claim each, wait for it

Prints one JSON line: {"jobId": status, ...} (claim: {"jobId": [status, claimed]}). Job ids are
$JOB_PREFIX<i> (default "job-").
"""
from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor


def main(argv: list[str]) -> None:
    from chalicelib import services
    from chalicelib.payments.setup import build_payments

    mode, prefix = argv[0], os.environ.get("JOB_PREFIX", "job-")
    settings, chains = services.settings(), services.chains()
    chain_id = settings.chain_ids[0]
    if mode == "lock":
        fees, consumer, first, count = json.loads(argv[1]), argv[2], int(argv[3]), int(argv[4])
        token = fees[str(chain_id)][0]["feeToken"]

        def lock(i: int) -> tuple[str, str]:
            payments = build_payments(settings, chains)  # a sender per thread
            quote = payments.quote(chain_id=chain_id, token=token, fees=fees, resources=[{"id": "cpu", "amount": 1}],
                                   max_job_duration=600)
            return f"{prefix}{i:02d}", payments.lock(job_id=f"{prefix}{i:02d}", payer=consumer, quote=quote).status

        with ThreadPoolExecutor(count) as pool:
            print(json.dumps(dict(pool.map(lock, range(first, first + count)))))
    elif mode == "confirm":
        first, count = int(argv[1]), int(argv[2])
        payments = build_payments(settings, chains)
        print(json.dumps({f"{prefix}{i:02d}": payments.confirm_lock(f"{prefix}{i:02d}", timeout=30).status
                          for i in range(first, first + count)}))
    else:
        first, count, seconds = int(argv[1]), int(argv[2]), float(argv[3])
        payments = build_payments(settings, chains)
        done = {}
        for i in range(first, first + count):
            payments.claim(f"{prefix}{i:02d}", seconds)
            payment = payments.wait(f"{prefix}{i:02d}", timeout=30)
            done[f"{prefix}{i:02d}"] = [payment.status, payment.claimed]
        print(json.dumps(done))


if __name__ == "__main__":
    main(sys.argv[1:])
