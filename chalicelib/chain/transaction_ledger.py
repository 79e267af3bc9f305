"""What the provider has signed, per chain, in DynamoDB: one record per purpose and the account's
next nonce. `TransactionSender` talks to the chain; this is everything it keeps, so any number of
senders, in any number of processes, share the nonces and the records.

1. **Purpose = idempotency key.** A transaction is recorded under "<chainId>:<purpose>"
   (`lock:<jobId>`, `claim:<jobId>`, ...). A purpose already recorded (and not dropped) is
   returned as it is: a transaction is sent at most once per purpose.
2. **Recorded before broadcast, nonce taken atomically.** The caller signs the transaction with
   nonce N = max(account's next nonce in DynamoDB, the node's pending count), then one DynamoDB
   transaction both moves the account's next nonce from N to N+1 (condition: still N) and puts the
   record with its raw signed transaction (condition: purpose not recorded). A concurrent sender
   that lost the race re-reads and signs N+1; nobody can take a nonce without its record existing,
   so a Lambda dying anywhere after that write leaves everything needed to broadcast again.
3. **A store ahead of the chain** (the node's pending count is below the stored next nonce, no
   transaction of ours is open, and no nonce was taken for `idle_reset` seconds: a dev chain
   restarted, records deleted by hand) would leave a gap no transaction fills and block every
   later one; the nonce is then the node's count again.

Every later change (sent, a replacement attempt, the outcome) is a conditional update on the
record's status, so two healers never both append an attempt nor overwrite an outcome.
"""
from __future__ import annotations

import logging
import random
import time
from typing import Any, Callable, Iterable

from chalicelib.chain.gas_fees import Fees
from chalicelib.errors import ServiceUnavailable
from chalicelib.payments.models import Attempt, ChainAccount, ChainTransaction

logger = logging.getLogger(__name__)

OPEN = ("signed", "pending")
FINAL = ("mined", "reverted", "dropped")
STATUSES = OPEN + FINAL

Sign = Callable[[int], Any]  # nonce -> the signed transaction (eth_account's SignedTransaction)


class TransactionLedger:
    """The records and nonces of one sending address (`address`) on every chain."""

    def __init__(self, address: str, *, clock: Callable[[], float] = time.time, max_write_attempts: int = 60,
                 idle_reset: float = 300.0) -> None:
        self.address = address
        self._clock = clock
        self._max_write_attempts = max_write_attempts
        self.idle_reset = idle_reset

    def find(self, chain_id: int, purpose: str) -> ChainTransaction | None:
        try:
            return ChainTransaction.get(transaction_key(chain_id, purpose), consistent_read=True)
        except ChainTransaction.DoesNotExist:
            return None

    def reread(self, record: ChainTransaction) -> ChainTransaction:
        return ChainTransaction.get(record.key, consistent_read=True)

    def open_transactions(self, chain_id: int) -> Iterable[ChainTransaction]:
        return ChainTransaction.open_by_chain.query(chain_id)

    def record(self, chain_id: int, purpose: str, sign: Sign, *, to: str, data: str, value: int, gas: int,
               fees: Fees, chain_count: int, replacing: ChainTransaction | None) -> ChainTransaction:
        """Take a nonce and write the record in one DynamoDB transaction, retrying lost races;
        the record (another sender's, if it recorded this purpose first)."""
        from pynamodb.exceptions import TransactWriteError
        from pynamodb.transactions import TransactWrite

        account_key = f"{chain_id}:{self.address}"
        for attempt in range(self._max_write_attempts):
            try:
                account = ChainAccount.get(account_key, consistent_read=True)
                stored = int(account.next_nonce)
            except ChainAccount.DoesNotExist:
                account, stored = None, None
            now = self._clock()
            nonce = max(stored or 0, chain_count)
            if stored is not None and stored > chain_count and self._store_is_ahead(chain_id, account, now):
                logger.warning("nonce store of chain %s is ahead of the node (%s > %s) with nothing open: "
                               "following the node", chain_id, stored, chain_count)
                nonce = chain_count
            signed = sign(nonce)
            record = ChainTransaction(
                transaction_key(chain_id, purpose), chain_id=chain_id, purpose=purpose, sender=self.address,
                nonce=nonce, to=to, data=data, value=value, gas=gas, status="signed",
                attempts=[attempt_of(signed, fees, now)], created_at=now, updated_at=now, open=chain_id,
            )  # fmt: skip
            try:
                with TransactWrite(connection=ChainAccount._get_connection().connection) as transaction:
                    if account is None:
                        transaction.save(ChainAccount(account_key, next_nonce=nonce + 1, updated_at=now),
                                         condition=ChainAccount.account.does_not_exist())
                    else:
                        transaction.update(account, actions=[ChainAccount.next_nonce.set(nonce + 1),
                                                             ChainAccount.updated_at.set(now)],
                                           condition=ChainAccount.next_nonce == stored)
                    if replacing is None:
                        transaction.save(record, condition=ChainTransaction.key.does_not_exist())
                    else:
                        transaction.save(record, condition=(ChainTransaction.status == "dropped")
                                         & (ChainTransaction.nonce == replacing.nonce))
            except TransactWriteError as error:
                existing = self.find(chain_id, purpose)
                if existing is not None and existing.status != "dropped":
                    return existing  # another sender recorded this purpose first
                if getattr(error, "cause_response_code", None) not in ("TransactionCanceledException",
                                                                       "TransactionConflictException"):
                    raise ServiceUnavailable("the transaction store did not answer") from None
                time.sleep(random.uniform(0, 0.02 * min(attempt + 1, 10)))
                continue
            logger.info("tx %s on chain %s: nonce %s, hash %s recorded", purpose, chain_id, nonce,
                        record.attempts[0].tx_hash)
            return record
        raise ServiceUnavailable(f"too many concurrent transactions on chain {chain_id}; retry")

    def _store_is_ahead(self, chain_id: int, account: ChainAccount, now: float) -> bool:
        """No nonce taken for idle_reset seconds and none of our transactions open on the chain:
        the stored nonces above the node's count can never be filled."""
        if account.updated_at is not None and now - float(account.updated_at) < self.idle_reset:
            return False
        return not any(record.sender == self.address for record in self.open_transactions(chain_id))

    def mark_sent(self, record: ChainTransaction) -> None:
        """The latest attempt was broadcast (unless a healer finished the record meanwhile)."""
        from pynamodb.exceptions import UpdateError

        now = self._clock()
        index = len(record.attempts) - 1
        try:
            record.update(actions=[
                ChainTransaction.attempts[index].sent_at.set(now),  # type: ignore[index]
                ChainTransaction.status.set("pending"),
                ChainTransaction.updated_at.set(now),
            ], condition=ChainTransaction.status.is_in(*OPEN))  # fmt: skip
        except UpdateError as error:
            if getattr(error, "cause_response_code", None) != "ConditionalCheckFailedException":
                raise  # (a healer finished it meanwhile: nothing to record)

    def add_attempt(self, record: ChainTransaction, signed: Any, fees: Fees) -> bool:
        """Append a replacement attempt, if the record is still open with the attempts we saw:
        False when someone else replaced or finished it first."""
        from pynamodb.exceptions import UpdateError
        from pynamodb.expressions.condition import size

        now = self._clock()
        count = len(record.attempts)
        try:
            record.update(actions=[
                ChainTransaction.attempts.set(ChainTransaction.attempts.append([attempt_of(signed, fees, now)])),
                ChainTransaction.updated_at.set(now),
            ], condition=ChainTransaction.status.is_in(*OPEN) & (size(ChainTransaction.attempts) == count))  # fmt: skip
        except UpdateError as lost:
            if getattr(lost, "cause_response_code", None) != "ConditionalCheckFailedException":
                raise
            return False
        return True

    def finish(self, record: ChainTransaction, status: str, *, receipt: Any = None,
               error: str | None = None) -> ChainTransaction:
        """Record the outcome (`FINAL` status, the mined receipt's hash, block and gas); the
        record as the winner left it if another healer finished it first."""
        now = self._clock()
        actions = [ChainTransaction.status.set(status), ChainTransaction.updated_at.set(now),
                   ChainTransaction.open.remove()]
        if receipt is not None:
            actions += [ChainTransaction.mined_hash.set("0x" + bytes(receipt["transactionHash"]).hex()),
                        ChainTransaction.block_number.set(int(receipt["blockNumber"])),
                        ChainTransaction.gas_used.set(int(receipt["gasUsed"]))]
        if error:
            actions.append(ChainTransaction.error.set(error))
        from pynamodb.exceptions import UpdateError

        try:
            record.update(actions=actions, condition=ChainTransaction.status.is_in(*OPEN))
        except UpdateError as lost:
            if getattr(lost, "cause_response_code", None) != "ConditionalCheckFailedException":
                raise
            return self.reread(record)
        logger.info("tx %s on chain %s: %s", record.purpose, record.chain_id, status)
        return record


def transaction_key(chain_id: int, purpose: str) -> str:
    return f"{chain_id}:{purpose}"


def attempt_of(signed: Any, fees: Fees, now: float) -> Attempt:
    """One signed attempt as the record keeps it (its raw transaction, to broadcast again)."""
    return Attempt(tx_hash="0x" + bytes(signed.hash).hex(), raw="0x" + bytes(signed.raw_transaction).hex(),
                   max_fee=fees.max_fee, priority_fee=fees.priority_fee, signed_at=now, sent_at=None)
