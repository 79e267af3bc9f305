"""The Escrow contract of ocean-contracts 3.1.0, as the provider (the payee) uses it.

Reads (`getUserFunds`, `getAuthorizations`, `getLocks`) check a consumer before a lock; writes are
only *encoded* here (`create_lock_data`, `claim_data`) and sent by the transaction sender, so that
every write is recorded and idempotent. Facts of this contract version that matter:

- `createLock(jobId, token, payer, amount, expiry)`: `expiry` is *relative* seconds, at most the
  payer's `maxLockSeconds`; the lock expires at block time + expiry. A (payee, payer, jobId) lock
  can exist once at a time, but once claimed the same jobId could be locked again: replays are
  stopped by our records, not by the contract.
- `claimLock…(jobId, token, payer, amount, proof, jobType, subsidyProviders)`: two more arguments
  than ocean.js's bundled ABI; we pass 0 and []. The unclaimed rest returns to the payer's
  available funds. Claiming 0 is how the payee releases a lock it will not use: the contract has
  no payee cancel of a live lock (`cancelExpiredLock` only takes expired ones), and a claim made
  after expiry is turned into that cancel by the contract itself (a `Canceled` event).
- The job id on chain is a uint256: sha256 of our job id (Ocean Node's `create256Hash`).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from chalicelib.chain import abi
from chalicelib.errors import BusinessError

if TYPE_CHECKING:
    from web3 import Web3
    from web3.contract import Contract

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


def lock_id(job_id: str) -> int:
    """The uint256 job id of a job's lock: sha256 of the job id (never 0)."""
    return int.from_bytes(hashlib.sha256(job_id.encode()).digest(), "big") or 1


@dataclass(frozen=True)
class Funds:
    available: int
    locked: int


@dataclass(frozen=True)
class Authorization:
    payee: str
    max_locked_amount: int
    current_locked_amount: int
    max_lock_seconds: int
    max_lock_counts: int
    current_locks: int


@dataclass(frozen=True)
class Lock:
    job_id: int
    payer: str
    amount: int
    expiry: int  # absolute timestamp
    token: str
    start_time: int


class EscrowContract:
    """The Escrow deployed on each chain (`addresses` {chain id: address}), through `web3_for`."""

    def __init__(self, web3_for: Callable[[int], "Web3"], addresses: Mapping[int, str]):
        self._web3_for = web3_for
        self._addresses = {int(chain): address for chain, address in addresses.items() if address}

    def address(self, chain_id: int) -> str:
        """The chain's Escrow; a 400 when the provider takes no escrow payment on that chain."""
        address = self._addresses.get(int(chain_id))
        if not address:
            raise BusinessError(f"escrow payments are not available on chain {chain_id}")
        return address

    def contract(self, chain_id: int) -> "Contract":
        w3 = self._web3_for(chain_id)
        return w3.eth.contract(address=w3.to_checksum_address(self.address(chain_id)), abi=abi.load("Escrow"))

    def funds(self, chain_id: int, payer: str, token: str) -> Funds:
        from chalicelib.chain.web3access import rpc_errors

        escrow = self.contract(chain_id)
        with rpc_errors(chain_id):
            available, locked = escrow.functions.getUserFunds(_checksum(payer), _checksum(token)).call()
        return Funds(int(available), int(locked))

    def authorization(self, chain_id: int, token: str, payer: str, payee: str) -> Authorization | None:
        from chalicelib.chain.web3access import rpc_errors

        escrow = self.contract(chain_id)
        with rpc_errors(chain_id):
            found = escrow.functions.getAuthorizations(_checksum(token), _checksum(payer), _checksum(payee)).call()
        for item in found:
            if str(item[0]).lower() == payee.lower():
                return Authorization(str(item[0]), *(int(value) for value in item[1:]))
        return None

    def lock(self, chain_id: int, payee: str, payer: str, token: str, job_lock_id: int) -> Lock | None:
        """The live lock of this job, if any (getLocks' own filter matches too much: filter here)."""
        from chalicelib.chain.web3access import rpc_errors

        escrow = self.contract(chain_id)
        with rpc_errors(chain_id):
            found = escrow.functions.getLocks(_checksum(token), _checksum(payer), _checksum(payee)).call()
        for item in found:
            lock = Lock(int(item[0]), str(item[1]), int(item[2]), int(item[3]), str(item[4]), int(item[5]))
            if lock.job_id == job_lock_id and lock.payer.lower() == payer.lower() and lock.token.lower() == token.lower():
                return lock
        return None

    def create_lock_data(self, chain_id: int, job_lock_id: int, token: str, payer: str, amount: int,
                         expiry: int) -> str:
        return self.contract(chain_id).encode_abi(
            "createLock", [job_lock_id, _checksum(token), _checksum(payer), int(amount), int(expiry)])

    def claim_data(self, chain_id: int, job_lock_id: int, token: str, payer: str, amount: int, proof: bytes) -> str:
        """claimLockAndWithdraw: the payout goes straight to the provider's wallet (as Ocean Node)."""
        return self.contract(chain_id).encode_abi(
            "claimLockAndWithdraw", [job_lock_id, _checksum(token), _checksum(payer), int(amount), proof, 0, []])

    def events(self, chain_id: int, tx_hash: str) -> dict[str, list[dict[str, Any]]]:
        """The Lock, Claimed and Canceled events this Escrow emitted in a mined transaction."""
        from web3.logs import DISCARD

        from chalicelib.chain.web3access import rpc_errors

        escrow = self.contract(chain_id)
        w3 = self._web3_for(chain_id)
        with rpc_errors(chain_id):
            receipt = w3.eth.get_transaction_receipt(tx_hash)
        found: dict[str, list[dict[str, Any]]] = {}
        for name in ("Lock", "Claimed", "Canceled"):
            logs = escrow.events[name]().process_receipt(receipt, errors=DISCARD)
            found[name] = [dict(log["args"]) for log in logs if log["address"] == escrow.address]
        return found


def _checksum(address: str) -> str:
    from web3 import Web3

    return Web3.to_checksum_address(address)
