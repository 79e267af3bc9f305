"""The provider's transaction sender against anvil (real transactions) and moto (its records)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from web3.middleware import Web3Middleware

from chalicelib.chain.transactions import TransactionRejected, TransactionSender
from chalicelib.errors import ServiceUnavailable
from chalicelib.payments.models import ChainAccount, ChainTransaction
from devstack.contracts import contract
from escrow_fixtures import automine_off, new_sender, rpc

pytestmark = pytest.mark.usefixtures("payment_tables")


def _transfer(chain, sender: TransactionSender, purpose: str, wei: int = 1):
    return sender.submit(chain.chain_id, purpose, chain.other.address, "0x", value=wei)


def test_a_purpose_is_sent_once_and_recorded_before_its_receipt(chain) -> None:
    before = chain.w3.eth.get_balance(chain.other.address)
    first = _transfer(chain, new_sender(chain), "test:once")
    again = _transfer(chain, new_sender(chain), "test:once")
    assert again.attempts[0].tx_hash == first.attempts[0].tx_hash and again.nonce == first.nonce
    done = new_sender(chain).wait(chain.chain_id, "test:once", timeout=10)
    assert done.status == "mined" and done.open is None and done.gas_used == 21000
    assert chain.w3.eth.get_balance(chain.other.address) == before + 1  # paid once
    receipt = chain.w3.eth.get_transaction_receipt(done.mined_hash)
    assert receipt["from"] == chain.provider.address and chain.w3.eth.get_transaction(done.mined_hash)["nonce"] == done.nonce


def test_concurrent_senders_never_share_or_skip_a_nonce(chain, atomic_moto) -> None:
    start = chain.w3.eth.get_transaction_count(chain.provider.address)
    senders = [new_sender(chain) for _ in range(12)]
    with ThreadPoolExecutor(12) as pool:
        records = list(pool.map(lambda i: _transfer(chain, senders[i], f"test:race:{i}"), range(12)))
    assert sorted(r.nonce for r in records) == list(range(start, start + 12))
    final = [new_sender(chain).wait(chain.chain_id, f"test:race:{i}", timeout=20) for i in range(12)]
    assert {r.status for r in final} == {"mined"}
    assert chain.w3.eth.get_transaction_count(chain.provider.address) == start + 12
    assert ChainAccount.get(f"{chain.chain_id}:{chain.provider.address}").next_nonce == start + 12


def test_a_stuck_transaction_is_replaced_with_the_same_nonce_and_a_higher_fee(chain) -> None:
    now = [1_000.0]
    sender = new_sender(chain, clock=lambda: now[0], stuck_after=30)
    with automine_off(chain) as node:
        record = _transfer(chain, sender, "test:stuck")
        assert sender.refresh(record).status == "pending"  # not yet stuck: nothing replaced
        assert len(ChainTransaction.get(record.key).attempts) == 1
        now[0] += 31
        replaced = sender.refresh(ChainTransaction.get(record.key))
        assert len(replaced.attempts) == 2
        first, second = replaced.attempts
        assert second.max_fee > first.max_fee and second.priority_fee > first.priority_fee
        pending = rpc(chain, "txpool_content")["pending"]
        pool = next(txs for address, txs in pending.items() if address.lower() == chain.provider.address.lower())
        assert [tx["hash"] for tx in pool.values()] == [second.tx_hash]  # the node replaced it
        node.mine()
    done = sender.refresh(ChainTransaction.get(record.key))
    assert done.status == "mined" and done.mined_hash == second.tx_hash
    tx = chain.w3.eth.get_transaction(done.mined_hash)
    assert tx["nonce"] == record.nonce and tx["maxFeePerGas"] == second.max_fee


def test_a_sender_killed_after_recording_is_finished_by_heal(chain) -> None:
    """The first Lambda records the lock and dies on broadcast (the node never sees it): heal()
    of another container broadcasts the recorded raw transaction, which is then mined."""
    dying = new_sender(chain)
    dying._web3_for(chain.chain_id).middleware_onion.inject(_DieOnBroadcast, layer=0)
    record = _transfer(chain, dying, "test:killed-before-broadcast")
    assert record.status == "signed" and record.attempts[0].sent_at is None
    with pytest.raises(Exception):  # noqa: B017 - really never reached the node
        chain.w3.eth.get_transaction(record.attempts[0].tx_hash)
    del dying
    healed = new_sender(chain).heal([chain.chain_id])
    assert [r.purpose for r in healed] == ["test:killed-before-broadcast"]
    done = new_sender(chain).wait(chain.chain_id, "test:killed-before-broadcast", timeout=10)
    assert done.status == "mined" and done.mined_hash == record.attempts[0].tx_hash


def test_a_sender_killed_between_broadcast_and_receipt_is_resumed_by_heal(chain) -> None:
    with automine_off(chain) as node:
        record = _transfer(new_chain := chain, new_sender(chain), "test:killed-after-broadcast")
        assert record.status == "pending"
        node.mine()  # mined while nobody waits for it
    assert ChainTransaction.get(record.key).status == "pending"
    healed = new_sender(new_chain).heal([chain.chain_id])
    assert [(r.purpose, r.status) for r in healed] == [("test:killed-after-broadcast", "mined")]
    assert list(new_sender(chain).open_transactions(chain.chain_id)) == []


def test_a_call_that_would_revert_is_refused_before_taking_a_nonce(chain) -> None:
    sender = new_sender(chain)
    ocean = contract(chain.w3, "OceanToken", chain.contracts.OceanToken)
    data = ocean.encode_abi("transfer", [chain.other.address, 10**30])  # the provider has no OCEAN
    with pytest.raises(TransactionRejected) as refused:
        sender.submit(chain.chain_id, "test:revert", chain.contracts.OceanToken, data)
    assert refused.value.status_code == 400 and sender.find(chain.chain_id, "test:revert") is None
    with pytest.raises(ChainAccount.DoesNotExist):
        ChainAccount.get(f"{chain.chain_id}:{chain.provider.address}")


def test_a_mined_but_reverted_transaction_is_recorded_as_reverted(chain) -> None:
    ocean = contract(chain.w3, "OceanToken", chain.contracts.OceanToken)
    data = ocean.encode_abi("transfer", [chain.other.address, 10**30])
    sender = new_sender(chain)
    sender.submit(chain.chain_id, "test:reverted", chain.contracts.OceanToken, data, gas=100_000)
    assert sender.wait(chain.chain_id, "test:reverted", timeout=10).status == "reverted"


def test_a_nonce_used_elsewhere_drops_the_record_and_the_purpose_can_be_sent_again(chain) -> None:
    sender = new_sender(chain)
    with automine_off(chain) as node:
        record = _transfer(chain, sender, "test:dropped")
        rpc(chain, "anvil_dropTransaction", record.attempts[0].tx_hash)
        # the same key sends something else with that nonce (another tool, an operator)
        raw = chain.provider.sign_transaction({
            "chainId": chain.chain_id, "nonce": record.nonce, "to": chain.deployer.address, "value": 0,
            "gas": 21000, "gasPrice": chain.w3.eth.gas_price * 2})  # fmt: skip
        chain.w3.eth.send_raw_transaction(raw.raw_transaction)
        node.mine()
    assert sender.refresh(ChainTransaction.get(record.key)).status == "dropped"
    again = _transfer(chain, sender, "test:dropped")
    assert again.nonce == record.nonce + 1
    assert sender.wait(chain.chain_id, "test:dropped", timeout=10).status == "mined"


def test_balance_and_a_clear_503_when_the_provider_cannot_pay_gas(chain) -> None:
    sender = new_sender(chain)
    assert sender.balance(chain.chain_id) == chain.w3.eth.get_balance(chain.provider.address) > 0
    assert sender.ensure_can_pay(chain.chain_id, 300_000) > 0
    rpc(chain, "anvil_setBalance", chain.provider.address, hex(1000))
    with pytest.raises(ServiceUnavailable, match=f"cannot pay for transactions on chain {chain.chain_id}"):
        sender.ensure_can_pay(chain.chain_id, 300_000)


class _DieOnBroadcast(Web3Middleware):
    """The Lambda is killed at the broadcast: the node never receives the transaction."""

    def wrap_make_request(self, make_request):
        def middleware(method, params):
            if method == "eth_sendRawTransaction":
                raise ConnectionError("the Lambda was killed here")
            return make_request(method, params)

        return middleware


def test_a_transaction_the_node_keeps_refusing_is_signed_again_at_a_higher_fee(chain) -> None:
    """Recorded, but every broadcast fails (the node is down, or refuses the fee): once
    stuck_after has passed since it was signed, heal() replaces it rather than resending it."""
    now = [5_000.0]
    dying = new_sender(chain, clock=lambda: now[0], stuck_after=30)
    dying._web3_for(chain.chain_id).middleware_onion.inject(_DieOnBroadcast, layer=0)
    record = _transfer(chain, dying, "test:refused")
    now[0] += 31
    healer = new_sender(chain, clock=lambda: now[0], stuck_after=30)
    [healed] = healer.heal([chain.chain_id])
    assert len(healed.attempts) == 2 and healed.attempts[1].max_fee > record.attempts[0].max_fee
    done = healer.wait(chain.chain_id, "test:refused", timeout=10)
    assert done.status == "mined" and done.mined_hash == healed.attempts[1].tx_hash


def test_concurrent_healers_replace_a_stuck_transaction_once(chain, atomic_moto) -> None:
    now = [9_000.0]
    with automine_off(chain) as node:
        record = _transfer(chain, new_sender(chain, clock=lambda: now[0]), "test:healers")
        now[0] += 60
        healers = [new_sender(chain, clock=lambda: now[0], stuck_after=30) for _ in range(6)]
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda h: h.heal([chain.chain_id]), healers))
        replaced = ChainTransaction.get(record.key)
        assert len(replaced.attempts) == 2  # one winner; the others saw it and stood down
        node.mine()
    done = new_sender(chain).wait(chain.chain_id, "test:healers", timeout=10)
    assert done.status == "mined" and done.mined_hash == replaced.attempts[1].tx_hash


def test_a_store_left_ahead_of_the_chain_follows_the_node_once_idle(chain) -> None:
    """The dev chain goes back (restarted, reverted) while the nonce store keeps its count: once
    nothing is open and no nonce was taken for idle_reset seconds, the sender follows the node
    instead of leaving a gap that would block every later transaction."""
    from devstack.anvil import revert, snapshot

    now = [20_000.0]
    sender = new_sender(chain, clock=lambda: now[0], idle_reset=300)
    mark = snapshot(chain.w3)
    start = chain.w3.eth.get_transaction_count(chain.provider.address)
    for i in range(3):
        _transfer(chain, sender, f"test:before-reset:{i}")
        assert sender.wait(chain.chain_id, f"test:before-reset:{i}", timeout=10).status == "mined"
    revert(chain.w3, mark)  # the chain forgets those three
    assert chain.w3.eth.get_transaction_count(chain.provider.address) == start
    now[0] += 10  # not idle yet: the store is trusted (it might be a node lagging behind)
    assert _transfer(chain, sender, "test:too-soon").nonce == start + 3
    rpc(chain, "anvil_dropTransaction", sender.find(chain.chain_id, "test:too-soon").attempts[0].tx_hash)
    for record in sender.open_transactions(chain.chain_id):  # an operator gives that one up
        record.update(actions=[ChainTransaction.status.set("dropped"), ChainTransaction.open.remove()])
    now[0] += 301
    after = _transfer(chain, sender, "test:after-reset")
    assert after.nonce == start
    assert sender.wait(chain.chain_id, "test:after-reset", timeout=10).status == "mined"
