"""PynamoDB models of the provider's own transactions and escrow payments (issue 14).

Three tables, created by `chalicelib.bootstrap` beside the others:

- `<prefix>-chain-accounts` (`ChainAccount`): the next nonce of the provider's account per chain.
  It only grows, and only by the same DynamoDB transaction that records the transaction taking
  the nonce, so a nonce is never handed out twice nor lost (see `chalicelib.chain.transactions`).
  The same table holds the payers' side as the provider sees it (`EscrowAccount`, keys
  `escrow:...`): the locks of a payer reserved and not yet mined, and its recent failed locks
  (`payments.escrow_accounts`). Accounts of both kinds, one key schema, no new table to deploy.
- `<prefix>-transactions` (`ChainTransaction`): one record per *purpose* (`lock:<jobId>`, ...),
  holding every signed attempt (raw transaction included) before it is broadcast. `open` is set
  (to the chain id) while the transaction is unfinished and removed when it is final, so the
  sparse index `open-by-chain` lists exactly what `heal()` has to finish.
- `<prefix>-escrow-payments` (`EscrowPayment`): a job's escrow lock and its claim or cancel.
  `open` works the same way for payments still waiting on a transaction, and `held` (index
  `held-payments`) lists the locks not yet being settled, for the reconciler to compare with
  their jobs (a terminal job whose event was lost must still be claimed).

Table names come from TRANSACTIONS_TABLE, CHAIN_ACCOUNTS_TABLE and ESCROW_PAYMENTS_TABLE, else
RESOURCE_PREFIX (as the other tables' names do).
"""
from __future__ import annotations

import functools
import logging
import os
from typing import Any, Callable, Mapping, TypeVar

from pynamodb.attributes import ListAttribute, MapAttribute, NumberAttribute, UnicodeAttribute, UnicodeSetAttribute
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from chalicelib.errors import ServiceUnavailable

logger = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


class ChainAccount(Model):
    """The next nonce the sender will use for `account` = "<chainId>:<address>"."""

    class Meta:
        table_name = "chain-accounts"
        billing_mode = "PAY_PER_REQUEST"

    account = UnicodeAttribute(hash_key=True)
    next_nonce = NumberAttribute(attr_name="nextNonce")
    updated_at = NumberAttribute(attr_name="updatedAt", null=True)  # last nonce taken


class EscrowAccount(Model):
    """A payer's escrow as the provider's starts see it (`payments.escrow_accounts`), in the
    chain-accounts table:

    - `escrow:<chainId>:<payer>:<token>`: `pending`/`pendingCount`, the amount and number of this
      provider's locks reserved for the payer and not yet mined (the chain does not count them
      yet), `pendingJobs` their jobs, and `released`, how many were released (a version: a
      reservation that read the chain before a release must read it again);
    - `escrow:<chainId>:<payer>`: `failures`, when its recent locks failed on chain (the 429)."""

    class Meta:
        table_name = "chain-accounts"
        billing_mode = "PAY_PER_REQUEST"

    account = UnicodeAttribute(hash_key=True)
    pending = NumberAttribute(null=True)
    pending_count = NumberAttribute(null=True, attr_name="pendingCount")
    pending_jobs = UnicodeSetAttribute(null=True, attr_name="pendingJobs")
    released = NumberAttribute(null=True)
    failures = ListAttribute(of=NumberAttribute, null=True)
    updated_at = NumberAttribute(attr_name="updatedAt", null=True)


class Attempt(MapAttribute):
    """One signed version of a transaction (same nonce, its own fees and hash)."""

    tx_hash = UnicodeAttribute(attr_name="hash")
    raw = UnicodeAttribute()  # the signed transaction, 0x-hex: rebroadcast as is
    max_fee = NumberAttribute(attr_name="maxFeePerGas")  # gasPrice for legacy chains
    priority_fee = NumberAttribute(attr_name="maxPriorityFeePerGas", null=True)  # None: legacy
    signed_at = NumberAttribute(attr_name="signedAt")
    sent_at = NumberAttribute(attr_name="sentAt", null=True)  # last broadcast, None: never


class OpenTransactions(GlobalSecondaryIndex):
    class Meta:
        index_name = "open-by-chain"
        projection = AllProjection()

    open = NumberAttribute(hash_key=True)
    nonce = NumberAttribute(range_key=True)


class ChainTransaction(Model):
    """A provider transaction, keyed by "<chainId>:<purpose>"; statuses in transactions.STATUSES."""

    class Meta:
        table_name = "transactions"
        billing_mode = "PAY_PER_REQUEST"

    key = UnicodeAttribute(hash_key=True)
    chain_id = NumberAttribute(attr_name="chainId")
    purpose = UnicodeAttribute()
    sender = UnicodeAttribute()
    nonce = NumberAttribute()
    to = UnicodeAttribute()
    data = UnicodeAttribute()
    value = NumberAttribute(default=0)
    gas = NumberAttribute()
    status = UnicodeAttribute()
    attempts = ListAttribute(of=Attempt, default=list)
    mined_hash = UnicodeAttribute(null=True, attr_name="minedHash")
    block_number = NumberAttribute(null=True, attr_name="blockNumber")
    gas_used = NumberAttribute(null=True, attr_name="gasUsed")
    error = UnicodeAttribute(null=True)
    created_at = NumberAttribute(attr_name="createdAt")
    updated_at = NumberAttribute(attr_name="updatedAt")
    open = NumberAttribute(null=True)

    open_by_chain = OpenTransactions()

    @property
    def tx_hash(self) -> str:
        """The mined hash when known, else the latest attempt's."""
        return self.mined_hash or self.attempts[-1].tx_hash


class OpenPayments(GlobalSecondaryIndex):
    class Meta:
        index_name = "open-payments"
        projection = AllProjection()

    open = NumberAttribute(hash_key=True)
    created_at = NumberAttribute(range_key=True, attr_name="createdAt")


class HeldPayments(GlobalSecondaryIndex):
    class Meta:
        index_name = "held-payments"
        projection = AllProjection()

    held = NumberAttribute(hash_key=True)
    created_at = NumberAttribute(range_key=True, attr_name="createdAt")


class PaymentsByChain(GlobalSecondaryIndex):
    """Every payment of a chain, newest first: the operator's earnings and claims
    (chalicelib.admin), read in bounded pages instead of scanning the table."""

    class Meta:
        index_name = "by-chain"
        projection = AllProjection()

    chain_id = NumberAttribute(hash_key=True, attr_name="chainId")
    created_at = NumberAttribute(range_key=True, attr_name="createdAt")


class EscrowPayment(Model):
    """A job's escrow payment; statuses in payments.progress.PAYMENT_STATUSES. Amounts are
    strings of the token's smallest unit (they overflow DynamoDB's 38 digits no sooner than
    uint256, but a string never rounds)."""

    class Meta:
        table_name = "escrow-payments"
        billing_mode = "PAY_PER_REQUEST"

    job_id = UnicodeAttribute(hash_key=True, attr_name="jobId")
    chain_id = NumberAttribute(attr_name="chainId")
    escrow = UnicodeAttribute()
    token = UnicodeAttribute()
    payer = UnicodeAttribute()
    payee = UnicodeAttribute()
    lock_id = UnicodeAttribute(attr_name="lockId")  # the uint256 jobId given to the contract, decimal
    amount = UnicodeAttribute()  # locked
    cost_per_minute = UnicodeAttribute(attr_name="costPerMinute")  # exact: a decimal string
    expiry = NumberAttribute()  # lock seconds
    min_job_duration = NumberAttribute(attr_name="minJobDuration")
    max_job_duration = NumberAttribute(attr_name="maxJobDuration")
    status = UnicodeAttribute()
    reason = UnicodeAttribute(null=True)
    lock_tx = UnicodeAttribute(null=True, attr_name="lockTx")
    settle_tx = UnicodeAttribute(null=True, attr_name="settleTx")  # the claim (or release) transaction
    claimed = UnicodeAttribute(null=True)  # what the settlement claims ("0" for a cancel)
    billed_seconds = NumberAttribute(null=True, attr_name="billedSeconds")
    created_at = NumberAttribute(attr_name="createdAt")
    updated_at = NumberAttribute(attr_name="updatedAt")
    open = NumberAttribute(null=True)
    held = NumberAttribute(null=True)  # the chain id while its job holds it (reserved, locking, locked)
    # The amount reserved in the payer's EscrowAccount until the lock is mined or fails (then
    # removed, once, by the transaction that gives the reservation back).
    reserved = NumberAttribute(null=True)

    open_payments = OpenPayments()
    held_payments = HeldPayments()
    by_chain = PaymentsByChain()


PAYMENT_MODELS: tuple[type[Model], ...] = (ChainAccount, ChainTransaction, EscrowPayment)


def table_names(env: Mapping[str, str] | None = None) -> dict[type[Model], str]:
    env = os.environ if env is None else env
    prefix = env.get("RESOURCE_PREFIX", "ocean-c2d")
    return {
        ChainAccount: env.get("CHAIN_ACCOUNTS_TABLE", f"{prefix}-chain-accounts"),
        ChainTransaction: env.get("TRANSACTIONS_TABLE", f"{prefix}-transactions"),
        EscrowPayment: env.get("ESCROW_PAYMENTS_TABLE", f"{prefix}-escrow-payments"),
    }


def bind(region: str, env: Mapping[str, str] | None = None) -> tuple[type[Model], ...]:
    """Point the models at their tables and region (dropping cached connections); returns them."""
    for model, name in table_names(env).items():
        model.Meta.table_name = name
        model.Meta.region = region
        model._connection = None
    EscrowAccount.Meta.table_name = ChainAccount.Meta.table_name  # the payers' accounts share it
    EscrowAccount.Meta.region = region
    EscrowAccount._connection = None
    return PAYMENT_MODELS


def store_errors(function: F) -> F:
    """A DynamoDB failure escaping `function` becomes a 503 (never a 500): for the public
    methods of the sender and the payments service. Expected conditional failures are handled
    inside them and never get here."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError
        from pynamodb.exceptions import PynamoDBException

        try:
            return function(*args, **kwargs)
        except (PynamoDBException, BotoCoreError, ClientError) as error:
            logger.warning("%s: the payments store failed: %s", function.__qualname__, type(error).__name__)
            raise ServiceUnavailable("the payments store did not answer; try again") from None

    return call  # type: ignore[return-value]
