"""The provider's own transactions (escrow locks, claims, cancels): one durable path per chain.

Many Lambda containers send from the same key at once. Two of them reading the account's nonce
from the node take the same one and one transaction is lost; a stuck transaction holds every later
nonce; a Lambda killed between broadcast and receipt forgets what it sent. So every transaction
goes through `TransactionSender`, which keeps the nonce and the transactions in DynamoDB.

Why a DynamoDB-held nonce and not an SQS FIFO queue (one message group per chain) feeding a
sender function:

- Latency. The lock must be broadcast inside the start request (25 s): here the caller signs and
  broadcasts itself, after one DynamoDB transaction (~10 ms), and gets the hash back at once.
  Through SQS the request would only enqueue; Lambda's poller picks a FIFO message up in tens of
  milliseconds to seconds, and the request would still have to wait for the sender's answer
  through another store.
- Cost at zero traffic: nothing. On-demand tables cost only per request; an SQS event source
  mapping polls the queue all day (billed requests) even with no job.
- Local and tests: moto implements conditional writes, TransactWriteItems and secondary indexes
  in process and in its server, so the very same path runs in unit tests, `make run` and AWS. moto
  has SQS FIFO but runs no event source mapping: locally a poller of our own would replace the
  part that matters.
- Serialisation is per account, not per chain: a FIFO group serialises all sends of a chain
  through one function, while here concurrent senders only retry a ~10 ms conditional write.

How it holds: every transaction is recorded, with its nonce, before it is broadcast
(`chain.transaction_ledger`: purposes as idempotency keys, nonces taken atomically with the
record, a store ahead of the chain followed back), and:

1. **Replaced when stuck.** A transaction not mined `stuck_after` seconds after its last broadcast
   is signed again with the same nonce and fees raised by `fee_bump` (at least the node's current
   fees, `chain.gas_fees`); the new attempt is appended to the record (conditionally: one healer
   wins) before it is broadcast. Whichever attempt is mined, the record learns it from the receipts.
2. **`heal()`** (the reconciler calls it every few minutes): for every open record of the chain
   (sparse index `open-by-chain`), broadcast what was never sent, replace what is stuck, record
   what was mined. A nonce the node has mined with none of our attempts is `dropped` (the key was
   used elsewhere): its purpose may then be submitted again with a fresh nonce.

Statuses: `signed` (recorded, maybe not broadcast) → `pending` (broadcast) → `mined` (receipt
status 1) | `reverted` (status 0) | `dropped`. Gas is paid by the provider's key: `balance()`
reads it, and `ensure_can_pay()` refuses (ServiceUnavailable, 503) work it could not pay gas for.
"""
from __future__ import annotations

import logging
import time
from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING, Any, Callable, Iterable

from chalicelib.chain.gas_fees import Fees, network_fees
from chalicelib.chain.transaction_ledger import FINAL, TransactionLedger
from chalicelib.errors import BusinessError, ServiceUnavailable
from chalicelib.payments.models import ChainTransaction, store_errors

if TYPE_CHECKING:
    from web3 import Web3

logger = logging.getLogger(__name__)

class TransactionRejected(BusinessError):
    """The node refuses the transaction before it is sent (its gas estimate reverts)."""

    def __init__(self, purpose: str, reason: str):
        self.purpose = purpose
        self.reason = reason
        super().__init__(f"transaction {purpose} would fail: {reason}")


class TransactionSender:
    """Sends the provider's transactions on every chain of `web3_for` (e.g. a `Chains`).

    Instances hold no state of their own beyond clients: any number of them, in any number of
    processes, share the nonce and the records through DynamoDB.
    """

    def __init__(
        self,
        web3_for: Callable[[int], "Web3"],
        private_key: str,
        *,
        clock: Callable[[], float] = time.time,
        stuck_after: float = 45.0,
        fee_bump: Decimal = Decimal("1.25"),
        gas_margin: Decimal = Decimal("1.2"),
        max_write_attempts: int = 60,
        idle_reset: float = 300.0,
    ):
        from eth_account import Account

        self._web3_for = web3_for
        self._account = Account.from_key(private_key)
        self._clock = clock
        self.stuck_after = stuck_after
        self.fee_bump = fee_bump
        self.gas_margin = gas_margin
        self._ledger = TransactionLedger(self._account.address, clock=clock, max_write_attempts=max_write_attempts,
                                         idle_reset=idle_reset)

    @property
    def address(self) -> str:
        return self._account.address

    # ---- gas -------------------------------------------------------------------------------

    def balance(self, chain_id: int) -> int:
        """The provider's native balance on the chain (wei)."""
        from chalicelib.chain.web3access import rpc_errors

        w3 = self._web3_for(chain_id)
        with rpc_errors(chain_id):
            return int(w3.eth.get_balance(self.address))

    def ensure_can_pay(self, chain_id: int, gas: int) -> int:
        """The balance, or ServiceUnavailable when it cannot pay `gas` at the current max fee."""
        needed = gas * self.current_fees(chain_id).max_fee
        balance = self.balance(chain_id)
        if balance < needed:
            logger.error("provider %s cannot pay gas on chain %s: %s < %s wei", self.address, chain_id, balance, needed)
            raise ServiceUnavailable(f"the provider cannot pay for transactions on chain {chain_id} right now")
        return balance

    def current_fees(self, chain_id: int) -> Fees:
        """What a new transaction offers: 2 × base fee + the node's suggested tip (EIP-1559), or
        the node's gas price where blocks have no base fee."""
        from chalicelib.chain.web3access import rpc_errors

        w3 = self._web3_for(chain_id)
        with rpc_errors(chain_id):
            return network_fees(w3)

    # ---- sending ---------------------------------------------------------------------------

    @store_errors
    def find(self, chain_id: int, purpose: str) -> ChainTransaction | None:
        return self._ledger.find(chain_id, purpose)

    @store_errors
    def submit(self, chain_id: int, purpose: str, to: str, data: str, *, gas: int | None = None,
               value: int = 0, extra_gas: int = 0) -> ChainTransaction:
        """Record then broadcast the call `data` to `to` for `purpose`; the record (existing
        one if the purpose was already submitted, and not dropped). Returns without waiting for
        mining: see `wait()`. TransactionRejected (400) when the call would revert.

        `gas` None estimates it (× gas_margin) and adds `extra_gas`: headroom for calls whose
        cost grows with state that transactions mined before this one may add (unused gas is
        not paid)."""
        existing = self.find(chain_id, purpose)
        if existing is not None and existing.status != "dropped":
            return existing
        from chalicelib.chain.web3access import rpc_errors

        w3 = self._web3_for(chain_id)
        to = w3.to_checksum_address(to)
        with rpc_errors(chain_id):
            if gas is None:
                gas = self._estimate(w3, purpose, to, data, value) + extra_gas
            chain_count = int(w3.eth.get_transaction_count(self.address, "pending"))
        fees = self.current_fees(chain_id)
        record = self._ledger.record(chain_id, purpose, lambda nonce: self._sign(chain_id, nonce, to, data, value, gas, fees),
                                     to=to, data=data, value=value, gas=gas, fees=fees, chain_count=chain_count,
                                     replacing=existing)
        if record.status == "signed":
            self._broadcast(record)
        return record

    def _estimate(self, w3: "Web3", purpose: str, to: str, data: str, value: int) -> int:
        from web3 import exceptions as w3e

        try:
            estimate = w3.eth.estimate_gas({"from": self.address, "to": to, "data": data, "value": value})
        except (w3e.ContractLogicError, w3e.ContractCustomError) as error:
            raise TransactionRejected(purpose, _revert_message(error)) from None
        return int((Decimal(int(estimate)) * self.gas_margin).to_integral_value(ROUND_CEILING))

    def _sign(self, chain_id: int, nonce: int, to: str, data: str, value: int, gas: int, fees: Fees) -> Any:
        params: dict[str, Any] = {"chainId": chain_id, "nonce": nonce, "to": to, "data": data, "value": value,
                                  "gas": gas}
        if fees.priority_fee is None:
            params["gasPrice"] = fees.max_fee
        else:
            params.update(maxFeePerGas=fees.max_fee, maxPriorityFeePerGas=fees.priority_fee, type=2)
        return self._account.sign_transaction(params)

    def _broadcast(self, record: ChainTransaction) -> None:
        """Send the latest attempt; an answer that it is known or its nonce used is not an error
        (the receipts tell what happened), any other failure is left for `heal()`."""
        from web3 import exceptions as w3e

        w3 = self._web3_for(record.chain_id)
        attempt = record.attempts[-1]
        try:
            w3.eth.send_raw_transaction(attempt.raw)
        except w3e.Web3RPCError as error:
            message = str(error).lower()
            if not any(known in message for known in ("already known", "nonce too low", "already imported",
                                                       "known transaction", "underpriced")):
                logger.warning("broadcast of %s failed (heal() retries): %s", record.purpose, message[:200])
                return
        except Exception as error:  # noqa: BLE001 - transport failure: heal() retries
            logger.warning("broadcast of %s failed (heal() retries): %s", record.purpose, type(error).__name__)
            return
        self._ledger.mark_sent(record)

    # ---- receipts, replacement, healing ----------------------------------------------------

    @store_errors
    def refresh(self, record: ChainTransaction) -> ChainTransaction:
        """One step towards the end: record a receipt, else broadcast what was never sent or
        replace what is stuck. Returns the record (re-read)."""
        if record.status in FINAL:
            return record
        from chalicelib.chain.web3access import rpc_errors

        w3 = self._web3_for(record.chain_id)
        with rpc_errors(record.chain_id):
            receipt = self._receipt(w3, record)
            if receipt is None:
                mined_count = int(w3.eth.get_transaction_count(record.sender, "latest"))
                if mined_count > record.nonce:
                    receipt = self._receipt(w3, record)  # mined between the two reads?
                    if receipt is None:
                        return self._ledger.finish(record, "dropped", error="nonce used by another transaction")
        if receipt is not None:
            status = "mined" if int(receipt["status"]) == 1 else "reverted"
            finished = self._ledger.finish(record, status, receipt=receipt)
            _gas_spent(record.chain_id, receipt)
            return finished
        last = record.attempts[-1]
        since = self._clock() - float(last.signed_at if last.sent_at is None else last.sent_at)
        if since >= self.stuck_after:
            self.replace(record)  # stuck in the pool, or refused by the node for that long
        elif last.sent_at is None:
            self._broadcast(record)
        return self._ledger.reread(record)

    @store_errors
    def replace(self, record: ChainTransaction) -> ChainTransaction:
        """Sign the transaction again with its nonce and higher fees, record, broadcast."""
        last = record.attempts[-1]
        previous = Fees(int(last.max_fee), None if last.priority_fee is None else int(last.priority_fee))
        fees = previous.bumped(self.fee_bump).at_least(self.current_fees(record.chain_id))
        signed = self._sign(record.chain_id, int(record.nonce), record.to, record.data, int(record.value),
                            int(record.gas), fees)
        if not self._ledger.add_attempt(record, signed, fees):
            return self._ledger.reread(record)  # someone else replaced or finished it
        logger.info("tx %s (nonce %s) stuck: replaced by %s at max fee %s", record.purpose, record.nonce,
                    record.attempts[-1].tx_hash, fees.max_fee)
        self._broadcast(record)
        return record

    @store_errors
    def wait(self, chain_id: int, purpose: str, timeout: float, poll: float = 0.25) -> ChainTransaction:
        """Refresh the purpose's record until it is final or `timeout` seconds passed."""
        record = self.find(chain_id, purpose)
        if record is None:
            raise KeyError(f"no transaction {purpose} on chain {chain_id}")
        deadline = time.monotonic() + timeout
        while True:
            record = self.refresh(record)
            if record.status in FINAL or time.monotonic() >= deadline:
                return record
            time.sleep(poll)

    def open_transactions(self, chain_id: int) -> Iterable[ChainTransaction]:
        return self._ledger.open_transactions(chain_id)

    @store_errors
    def heal(self, chain_ids: Iterable[int]) -> list[ChainTransaction]:
        """Finish what was left on each chain, in nonce order; the records it touched. A chain
        that does not answer is skipped (logged) so the others still heal."""
        touched = []
        for chain_id in chain_ids:
            try:
                for record in list(self.open_transactions(chain_id)):
                    if record.sender != self.address:
                        logger.warning("tx %s was sent by another key (%s): left alone", record.purpose, record.sender)
                        continue
                    touched.append(self.refresh(self._ledger.reread(record)))
            except ServiceUnavailable as error:
                logger.warning("heal of chain %s skipped: %s", chain_id, error)
        return touched

    def _receipt(self, w3: "Web3", record: ChainTransaction) -> Any:
        from web3.exceptions import TransactionNotFound

        for attempt in reversed(record.attempts):
            try:
                receipt = w3.eth.get_transaction_receipt(attempt.tx_hash)
            except TransactionNotFound:
                continue
            if receipt is not None:
                return receipt
        return None


def _revert_message(error: Exception) -> str:
    message = getattr(error, "message", None) or str(error)
    return message.removeprefix("execution reverted: ").strip()[:200] or "reverted"


def _gas_spent(chain_id: int, receipt: Any) -> None:
    """ProviderGasSpent per chain, in the chain's native unit (gas used x its effective price)."""
    from chalicelib.observability.context import record

    try:
        wei = int(receipt["gasUsed"]) * int(receipt.get("effectiveGasPrice") or 0)
    except (KeyError, TypeError, ValueError):
        return
    record("ProviderGasSpent", wei / 10**18, "None", chain=str(int(chain_id)))
