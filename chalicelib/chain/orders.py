"""Order verification on chain (DESIGN §3.5): does `transferTxId` pay for this compute job?

Read from the receipt of the order transaction on the asset's chain, with the ERC20Template
events of `chalicelib/chain/abi`:

1. the transaction was mined and succeeded;
2. an `OrderStarted` emitted by the service's datatoken, with serviceIndex = the service's index,
   amount ≥ 1 datatoken, consumer or payer = the requester, and at most `service_timeout` seconds
   old by its block timestamp (0 = valid forever). When the transaction is a `reuseOrder`, its
   `OrderReused(orderTxId)` leads to the original order, which must pass all of this itself; the
   timeout counts from the original order, since reusing only pays a new provider fee (the
   original Provider counts from the reuse, which lets a chain of reuses extend an order forever);
3. a `ProviderFee` emitted by the same datatoken *in the transaction itself* (for a reuse, the
   reuse's fee) whose providerData JSON names this datatoken ("dt"), this service ("id") and the
   requested environment, whose providerFeeAddress is this provider, whose (v, r, s) over the
   EIP-191 fee hash recovers to this provider, and whose validUntil (unless 0) has not passed.

Errors, as the original Ocean Provider reports them (ocean_provider/validation/algo.py: any
failure of `validate_order` becomes one code per input), with `resource` the input's name as the
original names it — "dataset", "datasets[<i>]" for additional inputs (i from 1), "algorithm":

| failure                                   | error                                              |
|-------------------------------------------|----------------------------------------------------|
| transferTxId not a 32-byte hex hash       | ValidationError {"<resource>.transferTxId": [...]} (400) |
| any on-chain check below, for a dataset   | BusinessError {"<resource>.serviceId": "order_invalid"} (400) |
| any on-chain check below, for "algorithm" | BusinessError {"algorithm": "in_use_or_not_on_chain"} (400) |
| no order paid the compute fee             | BusinessError {"order": "fees_not_paid"} (400), `ensure_fees_paid` |
| node down, timing out or erroring         | ServiceUnavailable "chain <id> is not reachable" (503) |
| chain id not configured                   | UnknownChain, a BusinessError (400)                |

Every refusal is an `OrderRefused` whose `reason` (not sent to the client, which sees only the
original's code; logged, and asserted by tests) says which check failed:

| reason                      | check                                                      |
|-----------------------------|------------------------------------------------------------|
| tx_not_found                | no receipt for the transaction (unknown or not yet mined)  |
| tx_failed                   | the transaction reverted                                   |
| order_not_found             | no OrderStarted from the datatoken (nor an OrderReused)    |
| service_index_mismatch      | OrderStarted from the datatoken, for another service index |
| amount_too_low              | OrderStarted amount < 1 datatoken                          |
| consumer_mismatch           | requester is neither consumer nor payer                    |
| order_expired               | older than the service timeout                             |
| reused_order_not_found      | OrderReused points to no mined transaction                 |
| reused_order_failed         | OrderReused points to a reverted transaction               |
| reused_order_invalid:<r>    | the original order fails check <r>                         |
| provider_fee_not_found      | no ProviderFee from the datatoken naming dt and service id |
| environment_mismatch        | providerData names another environment                     |
| provider_fee_signature_invalid | (v, r, s) does not recover to this provider             |
| provider_fee_address_mismatch | providerFeeAddress is not this provider (the contract     |
|                             | makes it the signer, so on chain this shows as the above)  |
| provider_fee_expired        | validUntil has passed                                      |
| bad_address                 | the datatoken or consumer given is not an address          |
"""
from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from chalicelib.auth.signatures import is_address, to_checksum_address
from chalicelib.chain.fees import eip191_digest, fee_message_hash, recover_fee_signer
from chalicelib.errors import BusinessError, ValidationError

if TYPE_CHECKING:
    from web3 import Web3

    from chalicelib.chain.fees import ProviderFees
    from chalicelib.compute.environments import Environment

logger = logging.getLogger(__name__)

ONE_DATATOKEN = 10**18  # startOrder always takes exactly 1e18 (ERC20Template: "1 DT. No more, no less")
_TX_HASH = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")


class OrderRefused(BusinessError):
    """The order does not pay for this request; the body is the original Provider's code."""

    def __init__(self, resource: str, reason: str):
        self.resource = resource
        self.reason = reason
        super().__init__(refusal(resource))


def refusal(resource: str) -> dict[str, str]:
    """The original Provider's error for an invalid order of input `resource`."""
    if resource == "algorithm" or resource.startswith("algorithm."):
        return {"algorithm": "in_use_or_not_on_chain"}
    return {f"{resource}.serviceId": "order_invalid"}


@dataclass(frozen=True)
class VerifiedOrder:
    """A verified order: who may use it, what it paid, until when its provider fee runs."""

    chain_id: int
    tx_id: str  # the transferTxId as given (0x + 64 lowercase hex): the startOrder or the reuseOrder
    order_tx_id: str  # the startOrder transaction (= tx_id unless reused)
    datatoken: str
    consumer: str
    payer: str
    timestamp: int  # block timestamp of the OrderStarted
    amount: int  # datatokens spent (wei)
    valid_until: int  # the provider fee's validUntil (0 = no limit)
    provider_fee_amount: int
    provider_fee_token: str
    provider_data: Mapping[str, Any]
    reused_from: str | None  # the original startOrder tx when tx_id is a reuseOrder


@dataclass(frozen=True)
class _Request:
    chain_id: int
    datatoken: str
    service_index: int
    service_id: str
    service_timeout: int
    consumer: str
    environment_id: str | None
    allow_expired_fee: bool
    now: float


class _Refused(Exception):
    """Internal: a check failed with `reason`; verify() turns it into OrderRefused."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def normalize_tx_id(tx_id: object, resource: str) -> str:
    """0x + 64 lowercase hex, or a ValidationError on `<resource>.transferTxId`."""
    if not isinstance(tx_id, str) or not _TX_HASH.match(tx_id):
        raise ValidationError.field(f"{resource}.transferTxId", "must be a transaction hash (0x + 64 hex digits)")
    return "0x" + tx_id.removeprefix("0x").lower()


class OrderVerifier:
    """Verifies orders against the chain through `web3_for(chain_id)` (e.g. a `Chains`)."""

    def __init__(self, web3_for: Callable[[int], "Web3"], provider_address: str, clock: Callable[[], float] = time.time):
        self._web3_for = web3_for
        self.provider_address = to_checksum_address(provider_address)
        self._clock = clock

    def verify(
        self,
        *,
        chain_id: int,
        tx_id: str,
        datatoken: str,
        service_index: int,
        service_id: str,
        service_timeout: int,
        consumer: str,
        environment_id: str | None,
        resource: str,
        allow_expired_fee: bool = False,
    ) -> VerifiedOrder:
        """The verified order, or OrderRefused / ValidationError / ServiceUnavailable (see module doc).

        `environment_id` None skips the environment check (orders for other than compute);
        `allow_expired_fee` accepts a provider fee past its validUntil (what initializeCompute
        needs to tell a consumer to reuse an order instead of buying a new one).
        """
        from chalicelib.chain.web3access import rpc_errors

        tx = normalize_tx_id(tx_id, resource)
        if not is_address(datatoken) or not is_address(consumer):
            logger.info("order %s refused: malformed datatoken or consumer address", tx)
            raise OrderRefused(resource, "bad_address")
        request = _Request(
            chain_id=chain_id,
            datatoken=to_checksum_address(datatoken),
            service_index=int(service_index),
            service_id=str(service_id),
            service_timeout=int(service_timeout or 0),
            consumer=to_checksum_address(consumer),
            environment_id=environment_id,
            allow_expired_fee=allow_expired_fee,
            now=self._clock(),
        )
        w3 = self._web3_for(chain_id)
        try:
            with rpc_errors(chain_id):
                return _Verification(w3, request, self.provider_address).run(tx)
        except _Refused as refused:
            logger.info("order %s on chain %s refused for %s: %s", tx, chain_id, resource, refused.reason)
            raise OrderRefused(resource, refused.reason) from None


class _Verification:
    """One verification: the receipts and events of one transferTxId."""

    def __init__(self, w3: "Web3", request: _Request, provider_address: str):
        from chalicelib.chain import abi

        self.w3 = w3
        self.request = request
        self.provider_address = provider_address
        self.datatoken = w3.eth.contract(address=request.datatoken, abi=abi.load("ERC20Template"))

    def run(self, tx: str) -> VerifiedOrder:
        receipt = self._receipt(tx, "tx")
        started = self._events(receipt, "OrderStarted")
        reused_from = None
        if not started:
            reused = self._events(receipt, "OrderReused")
            if not reused:
                raise _Refused("order_not_found")
            reused_from = "0x" + bytes(reused[0]["args"]["orderTxId"]).hex()
            started = self._original_order(reused_from)
        order = self._check_order(started)
        fee = self._check_fee(self._events(receipt, "ProviderFee"))
        return VerifiedOrder(
            chain_id=self.request.chain_id,
            tx_id=tx,
            order_tx_id=reused_from or tx,
            datatoken=self.request.datatoken,
            consumer=order["consumer"],
            payer=order["payer"],
            timestamp=int(order["timestamp"]),
            amount=int(order["amount"]),
            valid_until=int(fee["args"]["validUntil"]),
            provider_fee_amount=int(fee["args"]["providerFeeAmount"]),
            provider_fee_token=fee["args"]["providerFeeToken"],
            provider_data=fee["data"],
            reused_from=reused_from,
        )

    def _receipt(self, tx: str, what: str) -> Mapping[str, Any]:
        from web3.exceptions import TransactionNotFound

        try:
            receipt = self.w3.eth.get_transaction_receipt(tx)  # type: ignore[arg-type]
        except TransactionNotFound:
            raise _Refused(f"{what}_not_found") from None
        if receipt["status"] != 1:
            raise _Refused(f"{what}_failed")
        return receipt

    def _events(self, receipt: Mapping[str, Any], name: str) -> list[Any]:
        """Decoded `name` logs of the receipt emitted by the datatoken itself (not look-alikes)."""
        from web3.logs import DISCARD

        logs = self.datatoken.events[name]().process_receipt(receipt, errors=DISCARD)
        return [log for log in logs if log["address"] == self.request.datatoken]

    def _original_order(self, order_tx: str) -> list[Any]:
        """The OrderStarted events of the order a reuseOrder points to."""
        receipt = self._receipt(order_tx, "reused_order")
        started = self._events(receipt, "OrderStarted")
        if not started:
            raise _Refused("reused_order_invalid:order_not_found")
        try:
            self._check_order(started)
        except _Refused as refused:
            raise _Refused(f"reused_order_invalid:{refused.reason}") from None
        return started

    def _check_order(self, started: Sequence[Any]) -> Mapping[str, Any]:
        """The OrderStarted args for this service, paid in full, of the requester, not expired."""
        request = self.request
        matching = [log["args"] for log in started if int(log["args"]["serviceIndex"]) == request.service_index]
        if not matching:
            raise _Refused("service_index_mismatch")
        reason = "order_not_found"
        for args in matching:
            problem = order_problem(
                args, consumer=request.consumer, service_timeout=request.service_timeout, now=request.now
            )
            if problem is None:
                return args
            reason = problem
        raise _Refused(reason)

    def _check_fee(self, fees: Iterable[Any]) -> dict[str, Any]:
        """The ProviderFee log for this datatoken and service that this provider signed."""
        reason = "provider_fee_not_found"
        for log in fees:
            data = _provider_data(log["args"]["providerData"])
            if data is None or not self._names_this_service(data):
                continue
            reason = self._fee_problem(log["args"], data)
            if reason is None:
                return {"args": log["args"], "data": data}
        raise _Refused(reason)

    def _names_this_service(self, data: Mapping[str, Any]) -> bool:
        dt, service = data.get("dt"), data.get("id")
        return (
            isinstance(dt, str)
            and isinstance(service, str)
            and dt.lower() == self.request.datatoken.lower()
            and service.lower() == self.request.service_id.lower()
        )

    def _fee_problem(self, args: Mapping[str, Any], data: Mapping[str, Any]) -> str | None:
        return provider_fee_problem(
            args,
            data,
            provider_address=self.provider_address,
            environment_id=self.request.environment_id,
            now=None if self.request.allow_expired_fee else self.request.now,
        )


def _provider_data(raw: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def order_problem(args: Mapping[str, Any], *, consumer: str, service_timeout: int, now: float) -> str | None:
    """Why a decoded OrderStarted log (of the right datatoken and service index) does not entitle
    `consumer` (checksummed) to the service now (None: it does)."""
    if int(args["amount"]) < ONE_DATATOKEN:
        return "amount_too_low"
    if consumer not in (to_checksum_address(args["consumer"]), to_checksum_address(args["payer"])):
        return "consumer_mismatch"
    if service_timeout and now - int(args["timestamp"]) > service_timeout:
        return "order_expired"
    return None


def provider_fee_problem(
    args: Mapping[str, Any],
    data: Mapping[str, Any],
    *,
    provider_address: str,
    environment_id: str | None,
    now: float | None,
) -> str | None:
    """Why a decoded ProviderFee log does not pay this provider for this environment (None: it does).

    `args` are the event's arguments, `data` its providerData parsed; `now` None skips validUntil.
    """
    if environment_id is not None and data.get("environment") != environment_id:
        return "environment_mismatch"
    digest = eip191_digest(
        fee_message_hash(
            bytes(args["providerData"]),
            args["providerFeeAddress"],
            args["providerFeeToken"],
            int(args["providerFeeAmount"]),
            int(args["validUntil"]),
        )
    )
    if recover_fee_signer(digest, int(args["v"]), bytes(args["r"]), bytes(args["s"])) != provider_address:
        return "provider_fee_signature_invalid"
    if to_checksum_address(args["providerFeeAddress"]) != provider_address:
        return "provider_fee_address_mismatch"
    valid_until = int(args["validUntil"])
    if now is not None and valid_until and now >= valid_until:
        return "provider_fee_expired"
    return None


def ensure_fees_paid(
    orders: Sequence[VerifiedOrder], fees: "ProviderFees", environment: "Environment", now: int
) -> VerifiedOrder:
    """The order whose provider fee pays for `environment` until the latest validUntil of all
    orders, or BusinessError {"order": "fees_not_paid"} (the original's WorkflowValidator rule)."""
    if orders:
        valid_until = max(order.valid_until for order in orders)
        for order in orders:
            required = fees.amount(chain_id=order.chain_id, environment=environment, valid_until=valid_until, now=now)
            token = environment.fee_token(order.chain_id)
            if required == 0 or (
                order.provider_fee_amount >= required and order.provider_fee_token.lower() == token.lower()
            ):
                return order
    raise BusinessError({"order": "fees_not_paid"})
