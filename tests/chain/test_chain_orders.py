"""Order verification against real orders on anvil: the valid order, and every way to break it."""
from __future__ import annotations

import time

import pytest
from eth_account import Account
from web3 import Web3

from chain_helpers import Provider, environment, key_hex
from chalicelib.chain.fees import ProviderFees, eip191_digest, fee_message_hash
from chalicelib.chain.orders import OrderRefused, ensure_fees_paid, provider_fee_problem, refusal
from chalicelib.chain.web3access import Chains
from chalicelib.errors import BusinessError, ServiceUnavailable, ValidationError
from devstack.contracts import CALL_GAS, OCEAN_UNIT, ZERO_ADDRESS, contract
from devstack.processes import free_port
from devstack.orders import reuse_order


def refused(provider: Provider, asset, tx: str, reason: str, **overrides) -> OrderRefused:
    with pytest.raises(OrderRefused) as caught:
        provider.verify(asset, tx, **overrides)
    assert caught.value.reason == reason
    return caught.value


def test_valid_order_verifies(provider: Provider) -> None:
    chain = provider.chain
    asset = provider.publish()
    fee = provider.quote(asset, minutes=30)
    tx = provider.order(asset, fee)
    order = provider.verify(asset, tx)
    assert order.tx_id == order.order_tx_id == tx and order.reused_from is None
    assert order.consumer == order.payer == chain.consumer.address
    assert order.amount == OCEAN_UNIT and order.datatoken == asset.datatoken
    block = chain.w3.eth.get_block(chain.w3.eth.get_transaction_receipt(tx)["blockNumber"])
    assert order.timestamp == block["timestamp"]
    assert order.valid_until == fee["validUntil"] and order.provider_fee_amount == 0
    assert order.provider_fee_token == chain.contracts.OceanToken
    assert order.provider_data["environment"] == provider.env.id and order.provider_data["dt"] == asset.datatoken
    # the hash is accepted without 0x and in upper case, and reported normalized
    assert provider.verify(asset, tx[2:].upper()).tx_id == tx


def test_payer_and_consumer_may_both_use_the_order(provider: Provider) -> None:
    chain = provider.chain
    asset = provider.publish()
    tx = provider.order(asset, payer=chain.other, consumer=chain.consumer.address)
    assert provider.verify(asset, tx, consumer=chain.consumer.address).payer == chain.other.address
    assert provider.verify(asset, tx, consumer=chain.other.address).consumer == chain.consumer.address
    refused(provider, asset, tx, "consumer_mismatch", consumer=chain.publisher.address)


def test_another_consumer_is_refused_with_the_original_code(provider: Provider) -> None:
    asset = provider.publish()
    tx = provider.order(asset)
    error = refused(provider, asset, tx, "consumer_mismatch", consumer=provider.chain.other.address)
    assert error.status_code == 400 and error.body() == {"error": {"dataset.serviceId": "order_invalid"}}


def test_resource_names_follow_the_original_provider(provider: Provider) -> None:
    asset = provider.publish()
    tx = provider.order(asset)
    other = provider.chain.other.address
    for resource, body in [
        ("datasets[1]", {"datasets[1].serviceId": "order_invalid"}),
        ("algorithm", {"algorithm": "in_use_or_not_on_chain"}),
    ]:
        error = refused(provider, asset, tx, "consumer_mismatch", consumer=other, resource=resource)
        assert error.body() == {"error": body} and refusal(resource) == body


def test_another_service_index_is_refused(provider: Provider) -> None:
    asset = provider.publish()
    tx = provider.order(asset)
    refused(provider, asset, tx, "service_index_mismatch", service_index=1)


def test_another_datatoken_is_refused(provider: Provider) -> None:
    asset, other_asset = provider.publish(), provider.publish(name="other")
    tx = provider.order(asset)
    refused(provider, other_asset, tx, "order_not_found")
    # right datatoken, but the fee names the other asset's service
    refused(provider, asset, tx, "provider_fee_not_found", service_id=other_asset.serviceId)


def test_fee_signed_by_another_key_is_refused(provider: Provider) -> None:
    chain = provider.chain
    asset = provider.publish()
    impostor = ProviderFees(key_hex(chain.other), chain.other.address)
    tx = provider.order(asset, provider.quote(asset, fees=impostor))  # the contract accepts it: signer == fee address
    refused(provider, asset, tx, "provider_fee_signature_invalid")
    # the same order verifies for a provider whose key signed it
    assert provider.verify(asset, tx, verifier=provider.verifier(provider_address=chain.other.address))


def test_fee_log_checks_without_the_contract() -> None:
    """What the contract already forbids (fee address != signer) is still refused here."""
    provider, other = Account.create(), Account.create()
    data = b'{"environment":"env","timestamp":1,"dt":"0x","id":"s"}'

    def log(fee_address: str, signer, valid_until: int = 0, tamper: int = 0) -> dict:
        digest = eip191_digest(fee_message_hash(data, fee_address, ZERO_ADDRESS, 0, valid_until))
        sig = Account.unsafe_sign_hash(digest, signer.key)
        return {
            "providerFeeAddress": fee_address, "providerFeeToken": ZERO_ADDRESS, "providerFeeAmount": tamper,
            "providerData": data, "v": sig.v, "r": sig.r.to_bytes(32, "big"), "s": sig.s.to_bytes(32, "big"),
            "validUntil": valid_until,
        }  # fmt: skip

    def problem(args: dict, now: float | None = None, env: str | None = "env") -> str | None:
        return provider_fee_problem(args, {"environment": "env"}, provider_address=provider.address,
                                    environment_id=env, now=now)  # fmt: skip

    assert problem(log(provider.address, provider)) is None
    assert problem(log(other.address, provider)) == "provider_fee_address_mismatch"  # paid to another address
    assert problem(log(provider.address, other)) == "provider_fee_signature_invalid"
    assert problem(log(provider.address, provider, tamper=5)) == "provider_fee_signature_invalid"
    assert problem(log(provider.address, provider), env="gpu") == "environment_mismatch"
    assert problem(log(provider.address, provider), env=None) is None
    assert problem(log(provider.address, provider, valid_until=100), now=100) == "provider_fee_expired"
    assert problem(log(provider.address, provider, valid_until=100), now=99.9) is None
    assert problem(log(provider.address, provider, valid_until=0), now=10**12) is None
    broken = {**log(provider.address, provider), "v": 29}
    assert problem(broken) == "provider_fee_signature_invalid"


def test_expired_provider_fee_is_refused(provider: Provider) -> None:
    asset = provider.publish()
    fee = provider.quote(asset, minutes=5)
    tx = provider.order(asset, fee)
    after = provider.verifier(clock=lambda: fee["validUntil"] + 1)
    refused(provider, asset, tx, "provider_fee_expired", verifier=after)
    # initializeCompute may still reuse the order
    assert provider.verify(asset, tx, verifier=after, allow_expired_fee=True).valid_until == fee["validUntil"]
    # validUntil 0 never expires
    forever = provider.order(asset, provider.quote(asset, minutes=0))
    assert provider.verify(asset, forever, verifier=provider.verifier(clock=lambda: time.time() + 10**9))


def test_environment_mismatch_is_refused(provider: Provider) -> None:
    asset = provider.publish()
    tx = provider.order(asset)
    refused(provider, asset, tx, "environment_mismatch", environment_id="ocean-c2d-gpu")
    assert provider.verify(asset, tx, environment_id=None)  # not a compute order: no environment


def test_reverted_transaction_is_refused(provider: Provider) -> None:
    chain, w3 = provider.chain, provider.w3
    asset = provider.publish()
    fee = provider.quote(asset)
    consumer = chain.consumer  # holds no datatoken: startOrder reverts, mined thanks to explicit gas
    call = contract(w3, "ERC20Template", asset.datatoken).functions.startOrder(
        consumer.address, 0,
        (fee["providerFeeAddress"], fee["providerFeeToken"], 0, fee["v"], bytes.fromhex(fee["r"][2:]),
         bytes.fromhex(fee["s"][2:]), fee["validUntil"], bytes.fromhex(fee["providerData"][2:])),
        (ZERO_ADDRESS, ZERO_ADDRESS, 0),
    )  # fmt: skip
    params = call.build_transaction({
        "from": consumer.address, "nonce": w3.eth.get_transaction_count(consumer.address), "gas": CALL_GAS,
        "gasPrice": w3.eth.gas_price, "chainId": chain.chain_id,
    })  # fmt: skip
    tx_hash = w3.eth.send_raw_transaction(consumer.sign_transaction(params).raw_transaction)
    assert w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10)["status"] == 0
    refused(provider, asset, tx_hash.to_0x_hex(), "tx_failed")


def test_unknown_and_malformed_transactions(provider: Provider) -> None:
    asset = provider.publish()
    refused(provider, asset, "0x" + "ab" * 32, "tx_not_found")
    for malformed in ("0x1234", "0x" + "zz" * 32, "", 12, None):
        with pytest.raises(ValidationError) as caught:
            provider.verify(asset, malformed, resource="algorithm")  # type: ignore[arg-type]
        assert caught.value.status_code == 400 and list(caught.value.errors) == ["algorithm.transferTxId"]


def test_malformed_addresses_are_refused_not_crashed(provider: Provider) -> None:
    asset = provider.publish()
    tx = provider.order(asset)
    refused(provider, asset, tx, "bad_address", consumer="0xnot-an-address")
    refused(provider, asset, tx, "bad_address", datatoken="0x1234")


def test_service_timeout(provider: Provider) -> None:
    asset = provider.publish(timeout=60)
    tx = provider.order(asset, provider.quote(asset, minutes=0))
    order = provider.verify(asset, tx)
    at = order.timestamp
    assert provider.verify(asset, tx, verifier=provider.verifier(clock=lambda: at + 60))
    refused(provider, asset, tx, "order_expired", verifier=provider.verifier(clock=lambda: at + 61))
    # timeout 0: valid forever
    assert provider.verify(asset, tx, service_timeout=0, verifier=provider.verifier(clock=lambda: at + 10**9))


def test_reuse_of_a_valid_order_takes_the_new_fee(provider: Provider) -> None:
    chain = provider.chain
    asset = provider.publish(timeout=3600)
    first = provider.quote(asset, minutes=1)
    original = provider.order(asset, first)
    second = provider.quote(asset, minutes=60)
    reuse = reuse_order(provider.w3, chain.consumer, asset.datatoken, original, second)
    later = provider.verifier(clock=lambda: first["validUntil"] + 10)  # the first fee has expired
    refused(provider, asset, original, "provider_fee_expired", verifier=later)
    order = provider.verify(asset, reuse, verifier=later)
    assert order.tx_id == reuse and order.reused_from == order.order_tx_id == original
    assert order.valid_until == second["validUntil"] and order.consumer == chain.consumer.address
    # the service timeout counts from the original order, not from the reuse
    late = provider.verifier(clock=lambda: order.timestamp + 3601)
    refused(provider, asset, reuse, "reused_order_invalid:order_expired", verifier=late)


def test_reuse_needs_its_own_fee_for_this_service(provider: Provider) -> None:
    asset = provider.publish()
    original = provider.order(asset)
    reuse = reuse_order(provider.w3, provider.chain.consumer, asset.datatoken, original, provider.quote(asset))
    refused(provider, asset, reuse, "environment_mismatch", environment_id="ocean-c2d-gpu")


def test_reuse_of_an_invalid_order_is_refused(provider: Provider) -> None:
    chain, w3 = provider.chain, provider.w3
    asset, other_asset = provider.publish(), provider.publish(name="other")
    others_order = provider.order(asset, payer=chain.other)
    reuse = reuse_order(w3, chain.consumer, asset.datatoken, others_order, provider.quote(asset))
    refused(provider, asset, reuse, "reused_order_invalid:consumer_mismatch")
    # pointing at an order of another datatoken
    foreign = provider.order(other_asset)
    reuse = reuse_order(w3, chain.consumer, asset.datatoken, foreign, provider.quote(asset))
    refused(provider, asset, reuse, "reused_order_invalid:order_not_found")
    # pointing at nothing
    reuse = reuse_order(w3, chain.consumer, asset.datatoken, "0x" + "11" * 32, provider.quote(asset))
    refused(provider, asset, reuse, "reused_order_not_found")


def test_paid_fee_end_to_end(provider: Provider) -> None:
    chain, w3 = provider.chain, provider.w3
    paid = environment(price_min=2, fee_tokens={chain.chain_id: chain.contracts.OceanToken})
    fees = ProviderFees(key_hex(chain.provider), chain.provider.address, decimals=provider.chains.token_decimals)
    asset = provider.publish()
    now = int(time.time())
    fee = provider.quote(asset, minutes=10, env=paid, fees=fees, now=now)
    assert fee["providerFeeAmount"] == str(20 * OCEAN_UNIT)
    ocean = contract(w3, "OceanToken", chain.contracts.OceanToken)
    before = ocean.functions.balanceOf(chain.provider.address).call()
    tx = provider.order(asset, fee)
    router = contract(w3, "FactoryRouter", chain.contracts.FactoryRouter)
    opc_cut = 20 * OCEAN_UNIT * router.functions.getOPCProviderFee().call() // OCEAN_UNIT
    assert ocean.functions.balanceOf(chain.provider.address).call() - before == 20 * OCEAN_UNIT - opc_cut

    order = provider.verify(asset, tx, environment_id=paid.id)
    assert order.provider_fee_amount == 20 * OCEAN_UNIT
    assert ensure_fees_paid([order], fees, paid, now + 60) is order
    pricier = environment(price_min=5, fee_tokens={chain.chain_id: chain.contracts.OceanToken})
    with pytest.raises(BusinessError) as caught:
        ensure_fees_paid([order], fees, pricier, now + 60)
    assert caught.value.body() == {"error": {"order": "fees_not_paid"}}


def test_free_environment_needs_no_fee(provider: Provider) -> None:
    asset = provider.publish()
    order = provider.verify(asset, provider.order(asset))
    free = environment(price_min=9, fee_tokens={8996: provider.chain.contracts.OceanToken}, free=True)
    assert ensure_fees_paid([order], provider.fees, free, int(time.time())) is order
    with pytest.raises(BusinessError):
        ensure_fees_paid([], provider.fees, free, int(time.time()))


def test_chain_down_during_verification_is_503(provider: Provider) -> None:
    asset = provider.publish()
    tx = provider.order(asset)
    down = Chains({provider.chain.chain_id: f"http://127.0.0.1:{free_port()}"}, timeout=1)
    verifier = type(provider.verifier())(down, provider.chain.provider.address)
    with pytest.raises(ServiceUnavailable):
        provider.verify(asset, tx, verifier=verifier)
    # and after the Web3 was built: the node going away mid-request is a 503 too
    healthy = Chains({provider.chain.chain_id: provider.chain.rpc_url}, timeout=1)
    w3 = healthy(provider.chain.chain_id)
    w3.provider.endpoint_uri = down._urls[provider.chain.chain_id]  # type: ignore[attr-defined]
    with pytest.raises(ServiceUnavailable, match="not reachable"):
        provider.verify(asset, tx, verifier=type(verifier)(healthy, provider.chain.provider.address))


def test_web3_checksum_helpers_agree() -> None:
    """Addresses in logs come checksummed by web3; ours must compare equal."""
    from chalicelib.auth.signatures import to_checksum_address

    address = Account.create().address
    assert to_checksum_address(address.lower()) == Web3.to_checksum_address(address.lower())


def test_order_event_checks_without_the_contract() -> None:
    """startOrder always takes exactly 1 datatoken, so a short amount is only reachable here."""
    from chalicelib.chain.orders import order_problem

    consumer, payer = Account.create().address, Account.create().address
    args = {"consumer": consumer, "payer": payer, "amount": OCEAN_UNIT, "serviceIndex": 0, "timestamp": 1000}

    def problem(now: float = 1000, timeout: int = 0, who: str = consumer, **changes) -> str | None:
        return order_problem({**args, **changes}, consumer=who, service_timeout=timeout, now=now)

    assert problem() is None and problem(who=payer) is None
    assert problem(amount=OCEAN_UNIT - 1) == "amount_too_low"
    assert problem(who=Account.create().address) == "consumer_mismatch"
    assert problem(now=1060, timeout=60) is None
    assert problem(now=1061, timeout=60) == "order_expired"
    assert problem(now=10**12, timeout=0) is None
