"""Fixtures shared by the sender's and the payments' tests (imported by their conftest files).

- `payment_tables`: the provider's tables on in-process moto (the `aws` fixture) with the
  sender's and payments' tables emptied after the test.
- `atomic_moto`: moto answers concurrent requests from threads without isolation, while DynamoDB
  applies each write and each TransactWriteItems atomically; this makes moto's DynamoDB backend
  do the same (one request at a time) for tests that race senders in threads.
- `new_sender(chain, **options)`: a fresh `TransactionSender` with its own web3 clients, as a new
  Lambda container would build it.
"""
from __future__ import annotations

import functools
import threading
from typing import Any, Callable, Iterator

import pytest

from chalicelib.chain.transactions import TransactionSender
from chalicelib.chain.web3access import Chains
from devstack.devchain import DevChain


def key_hex(account: Any) -> str:
    return "0x" + bytes(account.key).hex()


def new_sender(chain: DevChain, **options: Any) -> TransactionSender:
    return TransactionSender(Chains({chain.chain_id: chain.rpc_url}, timeout=10), key_hex(chain.provider), **options)


@pytest.fixture
def payment_tables(aws) -> Iterator[None]:
    from chalicelib.payments import models

    yield
    for model in models.PAYMENT_MODELS:
        with model.batch_write() as batch:
            for item in model.scan():
                batch.delete(item)


@pytest.fixture
def atomic_moto() -> Iterator[None]:
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()
    names = ("put_item", "update_item", "get_item", "delete_item", "transact_write_items", "query", "scan")
    originals = {name: getattr(DynamoDBBackend, name) for name in names}

    def serialised(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return method(*args, **kwargs)

        return call

    for name, method in originals.items():
        setattr(DynamoDBBackend, name, serialised(method))
    try:
        yield
    finally:
        for name, method in originals.items():
            setattr(DynamoDBBackend, name, method)


def rpc(chain: DevChain, method: str, *params: Any) -> Any:
    reply = chain.w3.provider.make_request(method, list(params))
    assert not reply.get("error"), reply
    return reply["result"]


class automine_off:
    """Blocks are mined only by `mine()` inside this context (anvil's evm_setAutomine false)."""

    def __init__(self, chain: DevChain):
        self.chain = chain

    def __enter__(self) -> "automine_off":
        rpc(self.chain, "evm_setAutomine", False)
        return self

    def mine(self) -> None:
        rpc(self.chain, "evm_mine")

    def __exit__(self, *exc: object) -> None:
        rpc(self.chain, "evm_setAutomine", True)
