"""Escrow payments end to end on anvil (real Escrow, real transactions) with records on moto."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from chalicelib.errors import ServiceUnavailable
from chalicelib.payments.escrow import lock_id
from chalicelib.payments.models import ChainTransaction, EscrowPayment
from chalicelib.payments.quotes import PaymentRefused
from devstack.contracts import OCEAN_UNIT, send
from escrow_fixtures import automine_off, rpc
from escrow_helpers import (
    MAX_JOB_DURATION, PER_MINUTE, authorize, deposit, escrow, events, funds, new_payments, quote,
)  # fmt: skip

pytestmark = pytest.mark.usefixtures("payment_tables")


@pytest.fixture
def consumer_ready(chain):
    """The consumer deposited 100 OCEAN and authorized the provider (5 locks, a day, 1000 OCEAN)."""
    deposit(chain, 100 * OCEAN_UNIT)
    authorize(chain)
    return chain


def test_quote_is_ocean_nodes_payment_object(chain) -> None:
    payments = new_payments(chain, queue_wait=300, claim_margin=120)
    q = quote(payments, chain)
    assert q.public() == {
        "escrowAddress": chain.contracts.Escrow, "payee": chain.provider.address, "chainId": chain.chain_id,
        "token": chain.contracts.OceanToken, "amount": str(10 * PER_MINUTE), "minLockSeconds": 600 + 300 + 120,
    }  # fmt: skip


def test_full_paid_flow_locks_then_claims_what_ran(consumer_ready) -> None:
    chain = consumer_ready
    before = funds(chain)
    payments = new_payments(chain)
    q = quote(payments, chain)
    locking = payments.lock(job_id="job-full", payer=chain.consumer.address, quote=q)
    assert locking.status == "locking" and locking.lock_tx
    locked = new_payments(chain).confirm_lock("job-full", timeout=10)
    assert locked.status == "locked" and locked.open is None
    [lock] = events(chain, locked.lock_tx, "Lock")
    assert lock["jobId"] == lock_id("job-full") and lock["amount"] == q.amount == 14 * OCEAN_UNIT
    assert lock["payer"] == chain.consumer.address and lock["payee"] == chain.provider.address
    assert funds(chain) == (before[0] - q.amount, q.amount)

    assert [p.job_id for p in new_payments(chain).held(chain.chain_id)] == ["job-full"]
    new_payments(chain).claim("job-full", run_seconds=290)  # 5 minutes started
    assert new_payments(chain).held(chain.chain_id) == []
    claimed = new_payments(chain).wait("job-full", timeout=10)
    assert claimed.status == "claimed" and claimed.billed_seconds == 290
    [claim] = events(chain, claimed.settle_tx, "Claimed")
    assert claim["jobId"] == lock_id("job-full") and claim["payer"] == chain.consumer.address
    assert 0 < claim["amount"] == 5 * PER_MINUTE <= lock["amount"]
    assert int(claimed.claimed) == claim["amount"]
    assert funds(chain) == (before[0] - claim["amount"], 0)  # the rest came back
    assert escrow(chain).functions.getLocks(chain.contracts.OceanToken, chain.consumer.address,
                                            chain.provider.address).call() == []
    sent = {t.purpose: t for t in ChainTransaction.scan()}
    assert {p: t.status for p, t in sent.items()} == {"lock:job-full": "mined", "claim:job-full": "mined"}
    assert sent["claim:job-full"].nonce == sent["lock:job-full"].nonce + 1


def test_a_stopped_job_claims_only_the_minutes_it_ran_and_at_least_the_minimum(consumer_ready) -> None:
    chain = consumer_ready
    payments = new_payments(chain)
    for job in ("job-stopped", "job-short"):
        payments.lock(job_id=job, payer=chain.consumer.address, quote=quote(payments, chain))
        assert payments.confirm_lock(job, timeout=10).status == "locked"
    stopped = payments.claim("job-stopped", run_seconds=61)  # stopped in its second minute
    short = payments.claim("job-short", run_seconds=3)  # below minJobDuration (60 s)
    stopped, short = payments.wait("job-stopped", 10), payments.wait("job-short", 10)
    assert int(stopped.claimed) == 2 * PER_MINUTE and stopped.billed_seconds == 61
    assert int(short.claimed) == 1 * PER_MINUTE and short.billed_seconds == 60
    assert [e["amount"] for e in events(chain, stopped.settle_tx, "Claimed")] == [2 * PER_MINUTE]


def test_a_replayed_start_cannot_lock_twice(consumer_ready) -> None:
    chain = consumer_ready
    first = new_payments(chain).lock(job_id="job-replay", payer=chain.consumer.address,
                                     quote=quote(new_payments(chain), chain))
    again = new_payments(chain).lock(job_id="job-replay", payer=chain.consumer.address,
                                     quote=quote(new_payments(chain), chain))
    assert again.lock_tx == first.lock_tx
    assert new_payments(chain).confirm_lock("job-replay", timeout=10).status == "locked"
    auth = escrow(chain).functions.getAuthorizations(chain.contracts.OceanToken, chain.consumer.address,
                                                     chain.provider.address).call()[0]
    assert auth[5] == 1 and auth[2] == 14 * OCEAN_UNIT  # one lock held, one amount locked
    assert [t.purpose for t in ChainTransaction.scan()] == ["lock:job-replay"]


@pytest.mark.parametrize(("setup", "reason"), [
    ({}, "not_authorized"),
    ({"deposit": 100, "max_seconds": 600}, "lock_seconds_exceeded"),
    ({"deposit": 100, "max_locks": 0}, "lock_count_exceeded"),
    ({"deposit": 100, "max_locked": 13}, "lock_amount_exceeded"),
    ({"deposit": 13}, "insufficient_funds"),
])  # fmt: skip
def test_the_consumers_escrow_is_checked_before_the_lock(chain, setup, reason) -> None:
    if setup.get("deposit"):
        deposit(chain, setup["deposit"] * OCEAN_UNIT)
    if setup:
        authorize(chain, max_seconds=setup.get("max_seconds", 86_400), max_locks=setup.get("max_locks", 5),
                  max_locked=setup.get("max_locked", 1000) * OCEAN_UNIT)
    payments = new_payments(chain)
    with pytest.raises(PaymentRefused) as refused:
        payments.lock(job_id="job-refused", payer=chain.consumer.address, quote=quote(payments, chain))
    assert refused.value.reason == reason and refused.value.status_code == 400
    assert refused.value.body()["error"].startswith("escrow: ")
    assert payments.get("job-refused") is None and list(ChainTransaction.scan()) == []


def test_a_provider_that_cannot_pay_gas_refuses_with_503_before_locking(consumer_ready) -> None:
    chain = consumer_ready
    rpc(chain, "anvil_setBalance", chain.provider.address, hex(10**6))
    payments = new_payments(chain)
    with pytest.raises(ServiceUnavailable) as unavailable:
        payments.lock(job_id="job-no-gas", payer=chain.consumer.address, quote=quote(payments, chain))
    assert unavailable.value.status_code == 503 and payments.get("job-no-gas") is None


def test_a_failed_dispatch_cancels_the_lock(consumer_ready) -> None:
    chain = consumer_ready
    before = funds(chain)
    payments = new_payments(chain)
    payments.lock(job_id="job-dispatch-failed", payer=chain.consumer.address, quote=quote(payments, chain))
    assert payments.confirm_lock("job-dispatch-failed", timeout=10).status == "locked"
    payments.cancel("job-dispatch-failed", "dispatch failed")
    cancelled = new_payments(chain).wait("job-dispatch-failed", timeout=10)
    assert cancelled.status == "cancelled" and cancelled.claimed == "0" and cancelled.reason == "dispatch failed"
    assert [e["amount"] for e in events(chain, cancelled.settle_tx, "Claimed")] == [0]
    assert funds(chain) == before
    assert new_payments(chain).claim("job-dispatch-failed", 300).status == "cancelled"  # nothing more


def test_a_job_that_never_ran_is_cancelled_by_settle(consumer_ready) -> None:
    chain = consumer_ready
    payments = new_payments(chain)
    payments.lock(job_id="job-never-ran", payer=chain.consumer.address, quote=quote(payments, chain))
    payments.confirm_lock("job-never-ran", timeout=10)
    payments.settle("job-never-ran", run_seconds=None)
    assert payments.wait("job-never-ran", timeout=10).status == "cancelled"
    assert payments.settle("job-without-payment", 100) is None


def test_a_cancel_before_the_lock_is_mined_is_finished_by_heal(consumer_ready) -> None:
    """The start fails while its lock is still pending; the Lambda is gone. The reconciler's
    heal() sees the lock mined, sends the release, and records it."""
    chain = consumer_ready
    before = funds(chain)
    with automine_off(chain) as node:
        payments = new_payments(chain)
        payments.lock(job_id="job-early-cancel", payer=chain.consumer.address, quote=quote(payments, chain))
        assert payments.cancel("job-early-cancel", "start failed").status == "cancelling"
        del payments
        node.mine()
        healer = new_payments(chain)
        [progressed] = healer.heal([chain.chain_id])
        assert progressed.status == "cancelling" and progressed.settle_tx  # the release is sent
        node.mine()
    [done] = new_payments(chain).heal([chain.chain_id])
    assert done.status == "cancelled" and funds(chain) == before
    assert list(EscrowPayment.open_payments.query(chain.chain_id)) == []


def test_twenty_concurrent_locks_from_separate_senders_are_all_mined(chain, atomic_moto) -> None:
    deposit(chain, 20 * 14 * OCEAN_UNIT)
    authorize(chain, max_locks=20, max_locked=20 * 14 * OCEAN_UNIT)
    start = chain.w3.eth.get_transaction_count(chain.provider.address)

    def start_job(i: int) -> EscrowPayment:
        payments = new_payments(chain)  # one Lambda container each
        return payments.lock(job_id=f"job-{i:02d}", payer=chain.consumer.address, quote=quote(payments, chain))

    with ThreadPoolExecutor(20) as pool:
        started = list(pool.map(start_job, range(20)))
    assert {p.status for p in started} == {"locking"}
    confirmed = [new_payments(chain).confirm_lock(f"job-{i:02d}", timeout=20) for i in range(20)]
    assert {p.status for p in confirmed} == {"locked"}, [(p.reason, ChainTransaction.get(f"{chain.chain_id}:lock:{p.job_id}").gas) for p in confirmed if p.reason]
    nonces = sorted(int(t.nonce) for t in ChainTransaction.scan())
    assert nonces == list(range(start, start + 20))  # none lost, none reused
    assert chain.w3.eth.get_transaction_count(chain.provider.address) == start + 20
    locks = escrow(chain).functions.getLocks(chain.contracts.OceanToken, chain.consumer.address,
                                             chain.provider.address).call()
    assert sorted(lock[0] for lock in locks) == sorted(lock_id(f"job-{i:02d}") for i in range(20))
    assert funds(chain) == (0, 20 * 14 * OCEAN_UNIT)
    assert MAX_JOB_DURATION == 600


def test_the_payment_view_shows_each_transaction_with_its_nonce_and_outcome(consumer_ready) -> None:
    chain = consumer_ready
    payments = new_payments(chain)
    assert payments.view("job-none") is None
    payments.lock(job_id="job-view", payer=chain.consumer.address, quote=quote(payments, chain))
    payments.confirm_lock("job-view", timeout=10)
    payments.claim("job-view", 100)
    payments.wait("job-view", 10)
    view = payments.view("job-view")
    assert view["status"] == "claimed" and view["amount"] == str(14 * OCEAN_UNIT) and view["claimed"] == str(2 * PER_MINUTE)
    assert view["lock"]["status"] == view["claim"]["status"] == "mined" and view["cancel"] is None
    assert view["claim"]["nonce"] == view["lock"]["nonce"] + 1
    assert chain.w3.eth.get_transaction(view["claim"]["hash"])["nonce"] == view["claim"]["nonce"]
    assert payments.gas_balances([chain.chain_id]) == {str(chain.chain_id): str(chain.w3.eth.get_balance(chain.provider.address))}


def test_a_claim_after_the_lock_expired_is_recorded_as_the_contracts_cancel(consumer_ready) -> None:
    from devstack.anvil import increase_time

    chain = consumer_ready
    before = funds(chain)
    payments = new_payments(chain, queue_wait=0, claim_margin=0)
    payments.lock(job_id="job-late", payer=chain.consumer.address, quote=quote(payments, chain))
    assert payments.confirm_lock("job-late", timeout=10).status == "locked"
    increase_time(chain.w3, MAX_JOB_DURATION + 5)
    late = payments.wait("job-late", 10) if payments.claim("job-late", 300) else None
    assert late.status == "cancelled" and late.claimed == "0" and "expired" in late.reason
    assert [e["amount"] for e in events(chain, late.settle_tx, "Canceled")] == [14 * OCEAN_UNIT]
    assert funds(chain) == before


def test_a_lock_released_by_someone_else_after_expiry_ends_the_cancel(consumer_ready) -> None:
    from devstack.anvil import increase_time
    from devstack.contracts import send

    chain = consumer_ready
    before = funds(chain)
    payments = new_payments(chain, queue_wait=0, claim_margin=0)
    payments.lock(job_id="job-released", payer=chain.consumer.address, quote=quote(payments, chain))
    payments.confirm_lock("job-released", timeout=10)
    increase_time(chain.w3, MAX_JOB_DURATION + 5)
    send(chain.w3, chain.other, escrow(chain).functions.cancelExpiredLock(  # anyone may
        lock_id("job-released"), chain.contracts.OceanToken, chain.consumer.address, chain.provider.address))
    done = payments.cancel("job-released", "never ran")
    assert done.status == "cancelled" and "already released" in done.reason and funds(chain) == before


def test_a_store_that_does_not_answer_is_a_503_not_a_500(consumer_ready, monkeypatch) -> None:
    chain = consumer_ready
    monkeypatch.setattr(EscrowPayment.Meta, "table_name", "test-missing-table")
    monkeypatch.setattr(EscrowPayment, "_connection", None)
    payments = new_payments(chain)
    with pytest.raises(ServiceUnavailable, match="payments store"):
        payments.lock(job_id="job-store-down", payer=chain.consumer.address, quote=quote(payments, chain))
    assert list(ChainTransaction.scan()) == []  # nothing sent


def test_a_lock_the_escrow_refuses_after_the_checks_fails_cleanly(consumer_ready, monkeypatch) -> None:
    """The consumer withdraws between our checks and the lock: the lock's estimate reverts, no
    nonce is taken, the payment ends lock_failed and leaves the open index."""
    chain = consumer_ready
    payments = new_payments(chain)
    q = quote(payments, chain)
    checked = payments.reservation

    def check_then_withdraw(*args):
        reservation = checked(*args)
        send(chain.w3, chain.consumer, escrow(chain).functions.withdraw([chain.contracts.OceanToken], [100 * OCEAN_UNIT]))
        return reservation

    monkeypatch.setattr(payments, "reservation", check_then_withdraw)
    with pytest.raises(PaymentRefused) as refused:
        payments.lock(job_id="job-withdrawn", payer=chain.consumer.address, quote=q)
    assert refused.value.reason == "lock_refused" and "enough funds" in str(refused.value)
    failed = payments.get("job-withdrawn")
    assert failed.status == "lock_failed" and failed.open is None and list(ChainTransaction.scan()) == []
    assert payments.lock(job_id="job-withdrawn", payer=chain.consumer.address, quote=q).status == "lock_failed"


def test_a_pending_lock_is_reserved_until_mined_and_given_back_once(consumer_ready) -> None:
    """The authorization allows five locks: with five pending (nothing mined, the chain counts
    none), the sixth is refused before any transaction; once mined the chain counts them and
    their reservations are given back, exactly once."""
    from chalicelib.payments.escrow_accounts import reservation_key
    from chalicelib.payments.models import EscrowAccount

    chain = consumer_ready  # 100 OCEAN deposited: 7 locks of 14
    payments = new_payments(chain)
    key = reservation_key(chain.chain_id, chain.consumer.address, chain.contracts.OceanToken)
    with automine_off(chain) as node:
        for i in range(5):  # the authorization allows 5 locks
            assert payments.lock(job_id=f"job-p{i}", payer=chain.consumer.address, quote=quote(payments, chain)).status == "locking"
        account = EscrowAccount.get(key)
        assert (account.pending, account.pending_count) == (5 * 14 * OCEAN_UNIT, 5)
        assert account.pending_jobs == {f"job-p{i}" for i in range(5)}
        with pytest.raises(PaymentRefused) as refused:
            payments.lock(job_id="job-p5", payer=chain.consumer.address, quote=quote(payments, chain))
        assert refused.value.reason == "lock_count_exceeded" and "5 more pending" in str(refused.value)
        assert payments.get("job-p5") is None and len(list(ChainTransaction.scan())) == 5
        node.mine()
    for i in range(5):
        assert payments.confirm_lock(f"job-p{i}", timeout=10).status == "locked"
    account = EscrowAccount.get(key)
    assert (account.pending, account.pending_count, account.pending_jobs, account.released) == (0, 0, None, 5)
    for i in range(5):  # given back once: moving the payments again changes nothing
        payments.confirm_lock(f"job-p{i}", timeout=0)
    assert EscrowAccount.get(key).released == 5
    assert funds(chain) == (100 * OCEAN_UNIT - 5 * 14 * OCEAN_UNIT, 5 * 14 * OCEAN_UNIT)
