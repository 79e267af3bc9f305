"""The operator's admin routes, in process on moto: only ADMIN_ADDRESSES, nonces spent first,
sessions that are not consumer tokens; the job listing by environment, status and consumer in
bounded pages; stopping any job; drain and undrain through the start transaction itself; the
free tier's use and the escrow payments per chain."""
from __future__ import annotations

import json
import time
import urllib.parse
from typing import Any

import pytest
from eth_account import Account

from signing import sign

ADMIN = Account.from_key("0x" + "33" * 32)
CONSUMER = Account.from_key("0x" + "44" * 32)
OTHER = Account.from_key("0x" + "55" * 32)
CPU, GPU = "ocean-c2d-cpu", "ocean-c2d-gpu"
FREE_TIER = [{"id": CPU, "chainIds": [8996], "jobQueue": "q-cpu", "nCPU": 2, "ramGB": 4, "diskGB": 20, "maxJobs": 5,
              "maxJobDuration": 600, "freeCompute": {"maxJobDuration": 60, "maxJobs": 2, "maxJobsPerConsumer": 1}},
             {"id": GPU, "chainIds": [8996], "jobQueue": "q-gpu", "nCPU": 4, "ramGB": 16, "diskGB": 100, "maxJobs": 2,
              "maxJobDuration": 600}]


@pytest.fixture
def console(client, monkeypatch):
    from chalicelib import services
    from chalicelib.compute import environments

    monkeypatch.setenv("ADMIN_ADDRESSES", ADMIN.address)
    monkeypatch.setenv("COMPUTE_ENVIRONMENTS", json.dumps(FREE_TIER))
    environments.environments.cache_clear()
    services.reset()
    yield client
    environments.environments.cache_clear()


def _key(account: Any) -> str:
    return "0x" + bytes(account.key).hex()


def signed(account: Any, command: str, **params: Any) -> dict[str, Any]:
    nonce = time.time_ns()
    return {"address": account.address, "nonce": str(nonce),
            "signature": sign(_key(account), account.address + str(nonce) + command), **params}


def get(client: Any, path: str, params: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, Any]:
    response = client.http.get(f"/admin/api/{path}?" + urllib.parse.urlencode(params), headers=headers or {})
    return response.status_code, json.loads(response.body)


def post(client: Any, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, Any]:
    response = client.http.post(f"/admin/api/{path}", body=json.dumps(body),
                                headers={"Content-Type": "application/json", **(headers or {})})
    return response.status_code, json.loads(response.body)


def session(client: Any) -> str:
    status, body = post(client, "session", signed(ADMIN, "adminSignIn"))
    assert status == 200, body
    assert body["address"] == ADMIN.address and body["expiresAt"] > time.time()
    return body["token"]


def with_session(token: str, **params: Any) -> dict[str, Any]:
    return {"address": ADMIN.address, "nonce": str(time.time_ns()), **params}


def save_job(job_id: str, environment: str = CPU, status: int = 70, owner: str = CONSUMER.address, created: int = 0,
             **fields: Any) -> Any:
    from chalicelib.models import JobRecord

    created = created or int(time.time())
    job = JobRecord(job_id, owner=owner, document_id="did:op:" + "ab" * 32, date_created=created, status=status,
                    status_text=f"status {status}", environment=environment, chain_id=8996, updated_at=created,
                    date_finished=None if status not in (7, 8, 31, 32, 41, 62, 70) else created + 5,
                    active_environment=None if status in (7, 8, 31, 32, 41, 62, 70) else environment, **fields)
    job.save()
    return job


def test_only_operators_and_every_nonce_is_spent_first(console):
    status, body = post(console, "session", signed(CONSUMER, "adminSignIn"))
    assert status == 403 and "ADMIN_ADDRESSES" in body["error"]
    from chalicelib import services

    assert services.nonce_store().current(CONSUMER.address) > 0  # spent although refused
    replay = signed(ADMIN, "adminSignIn")
    assert post(console, "session", replay)[0] == 200
    status, body = post(console, "session", replay)
    assert status == 400 and "nonce" in body["errors"]
    # a signature of one command is not good on another route
    wrong = signed(ADMIN, "adminSignIn")
    assert get(console, "overview", wrong)[0] == 400
    assert get(console, "overview", signed(ADMIN, "adminOverview"))[0] == 200


def test_sessions_are_not_consumer_tokens(console):
    from chalicelib import services

    token = session(console)
    status, body = get(console, "overview", with_session(token), {"Authorization": token})
    assert status == 200 and {e["id"] for e in body["environments"]} == {CPU, GPU}
    consumer_token = services.token_service().create(ADMIN.address, int(time.time()) + 600)
    status, body = get(console, "overview", with_session(consumer_token), {"Authorization": consumer_token})
    assert status == 401
    # and a session is no consumer token on the consumer routes
    query = {"consumerAddress": ADMIN.address, "nonce": str(time.time_ns())}
    response = console.http.get("/api/services/compute?" + urllib.parse.urlencode(query), headers={"AuthToken": token})
    assert response.status_code == 400
    # the same nonce twice with a session: refused
    params = with_session(token)
    assert get(console, "overview", params, {"Authorization": token})[0] == 200
    assert get(console, "overview", params, {"Authorization": token})[0] == 400
    # signed out: the session is revoked
    response = console.http.delete("/admin/api/session?" + urllib.parse.urlencode(with_session(token)),
                                   headers={"Authorization": token})
    assert response.status_code == 200
    assert get(console, "overview", with_session(token), {"Authorization": token})[0] == 401


def test_job_listing_by_environment_status_and_consumer_in_pages(console):
    token = session(console)
    base = int(time.time()) - 10_000
    for number in range(7):
        save_job(f"cpu{number}", CPU, 70 if number % 2 else 41, created=base + 10 * number,
                 termination_details={"exitCode": 1, "reason": "algorithm exited with 1"} if number % 2 == 0 else None)
    for number in range(5):
        save_job(f"gpu{number}", GPU, 40 if number < 2 else 70, owner=OTHER.address, created=base + 10 * number + 5)
    auth = {"Authorization": token}

    def listing(**filters: Any) -> list[list[str]]:
        pages, cursor = [], None
        while True:
            params = with_session(token, limit=3, **filters, **({"next": cursor} if cursor else {}))
            status, body = get(console, "jobs", params, auth)
            assert status == 200, body
            pages.append([job["jobId"] for job in body["jobs"]])
            cursor = body["next"]
            if not cursor:
                return pages

    every = [job for page in listing() for job in page]
    assert len(every) == len(set(every)) == 12  # every job once, across both environments
    created = {**{f"cpu{n}": base + 10 * n for n in range(7)}, **{f"gpu{n}": base + 10 * n + 5 for n in range(5)}}
    assert every == sorted(every, key=created.__getitem__, reverse=True)  # newest first, merged
    assert all(len(page) <= 3 for page in listing())
    assert [job for page in listing(environment=GPU) for job in page] == [f"gpu{n}" for n in range(4, -1, -1)]
    assert sorted(job for page in listing(status="active") for job in page) == ["gpu0", "gpu1"]
    failed = [job for page in listing(status="failed") for job in page]
    assert sorted(failed) == ["cpu0", "cpu2", "cpu4", "cpu6"]
    assert sorted(job for page in listing(consumer=OTHER.address) for job in page) == [f"gpu{n}" for n in range(5)]
    assert sorted(job for page in listing(consumer=CONSUMER.address, status="70") for job in page) == ["cpu1", "cpu3", "cpu5"]
    status, body = get(console, "jobs", with_session(token, status="failed", limit=1), auth)
    assert body["jobs"][0]["reason"] == "algorithm exited with 1" and body["jobs"][0]["owner"] == CONSUMER.address
    # a cursor is checked: not another listing's, not made up
    status, body = get(console, "jobs", with_session(token, limit=3), auth)
    assert get(console, "jobs", with_session(token, environment=GPU, next=body["next"]), auth)[0] == 400
    assert get(console, "jobs", with_session(token, next="bm9wZQ"), auth)[0] == 400
    assert get(console, "jobs", with_session(token, environment="nope"), auth)[0] == 404


def test_stop_any_job_gives_its_slot_back_and_names_the_operator(console):
    from chalicelib.models import EnvironmentUsage, JobRecord

    token = session(console)
    save_job("running1", CPU, 40, owner=OTHER.address)
    EnvironmentUsage(CPU, running=1).save()
    status, body = post(console, "jobs/stop", with_session(token, jobId="running1"), {"Authorization": token})
    assert status == 200, body
    assert body["job"]["status"] == 7 and body["job"]["reason"] == "Job stopped by the provider's operator"
    job = JobRecord.get("running1")
    assert job.status == 7 and job.active_environment is None
    assert EnvironmentUsage.get(CPU).running == 0
    status, body = post(console, "jobs/stop", with_session(token, jobId="running1"), {"Authorization": token})
    assert status == 400 and "already ended" in body["error"]
    assert post(console, "jobs/stop", with_session(token, jobId="nope"), {"Authorization": token})[0] == 404


def test_drain_refuses_new_starts_in_the_start_transaction_and_undrain_accepts_them(console):
    from chalicelib.compute.environments import environments
    from chalicelib.compute.job_reservations import JobReservations
    from chalicelib.compute.usage import UsageCounter
    from chalicelib.errors import BusinessError
    from chalicelib.models import JobRecord

    token = session(console)
    auth = {"Authorization": token}
    status, body = post(console, "environments/drain", with_session(token, environment=CPU, drain=True), auth)
    assert status == 200 and body["environment"]["drained"] is True
    reservations = JobReservations(UsageCounter())
    environment = environments()[CPU]

    def new_job(job_id: str) -> JobRecord:
        return JobRecord(job_id, owner=CONSUMER.address, document_id="did:op:x", date_created=int(time.time()),
                         status=1, status_text="Warming up", environment=CPU, chain_id=8996,
                         active_environment=CPU, updated_at=int(time.time()))

    with pytest.raises(BusinessError) as refused:
        reservations.reserve(new_job("drained1"), environment, [])
    assert refused.value.reason == "drained" and "not accepting new jobs" in str(refused.value)
    overview = get(console, "overview", with_session(token), auth)[1]
    assert [e["drained"] for e in overview["environments"] if e["id"] == CPU] == [True]
    status, body = post(console, "environments/drain", with_session(token, environment=CPU, drain=False), auth)
    assert status == 200 and body["environment"]["drained"] is False
    reservations.reserve(new_job("accepted1"), environment, [])
    assert JobRecord.get("accepted1").status == 1
    assert post(console, "environments/drain", with_session(token, environment="nope", drain=True), auth)[0] == 404


def test_free_tier_use_per_consumer(console):
    from chalicelib.models import EnvironmentUsage

    token = session(console)
    save_job("free-run", CPU, 40, owner=CONSUMER.address, usage_keys=[f"{CPU}#free", f"{CPU}#free#{CONSUMER.address.lower()}"])
    save_job("free-done", CPU, 70, owner=OTHER.address, usage_keys=[f"{CPU}#free", f"{CPU}#free#{OTHER.address.lower()}"])
    save_job("paid-done", CPU, 70, owner=OTHER.address)
    EnvironmentUsage(f"{CPU}#free", running=1).save()
    status, body = get(console, "free", with_session(token), {"Authorization": token})
    assert status == 200, body
    (tier,) = body["environments"]
    assert tier["environment"] == CPU and tier["inUse"] == 1 and tier["maxJobs"] == 2
    assert {c["consumer"]: (c["running"], c["recent"]) for c in tier["consumers"]} == {
        CONSUMER.address: (1, 1), OTHER.address: (0, 1)}


def test_escrow_payments_per_chain(console, monkeypatch):
    monkeypatch.setenv("ESCROW_CONTRACTS", json.dumps({"8996": "0x" + "ee" * 20}))
    from chalicelib import services
    from chalicelib.payments.models import EscrowPayment

    services.payments()
    token = session(console)
    now = time.time()
    for number, (state, amount, claimed) in enumerate([("claimed", 600, 250), ("claimed", 600, 100), ("locked", 900, None),
                                                       ("cancelled", 600, "0"), ("settle_failed", 300, None)]):
        EscrowPayment(f"pay{number}", chain_id=8996, escrow="0x" + "ee" * 20, token="0x" + "0c" * 20,
                      payer=CONSUMER.address, payee=ADMIN.address, lock_id=str(number), amount=str(amount),
                      cost_per_minute="1", expiry=3600, min_job_duration=60, max_job_duration=600, status=state,
                      claimed=None if claimed is None else str(claimed), created_at=now + number,
                      updated_at=now + number).save()
    status, body = get(console, "payments", with_session(token), {"Authorization": token})
    assert status == 200, body
    (chain,) = body["chains"]
    assert chain["chainId"] == 8996 and [p["jobId"] for p in chain["payments"]] == [f"pay{n}" for n in range(4, -1, -1)]
    assert chain["totals"]["0x" + "0c" * 20] == {"claimed": "350", "locked": "900", "claims": 2, "cancels": 1, "failed": 1}
    assert get(console, "payments", with_session(token, chainId=1), {"Authorization": token})[0] == 404
