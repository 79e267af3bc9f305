"""Who created a data NFT: what the free tier trusts a dataset's publisher by (node.free).

A data NFT's owner (`ownerOf(1)`) is whoever it was last transferred to, and its factory's
`admin` is any address its creator names: anyone can make an allowed publisher either one,
without that publisher's consent. The `creator` of the ERC721Factory's NFTCreated event is the
account that called the factory, and nobody can hand that over. It is read once per NFT, from the
transaction that created it, and kept (it never changes):

1. the NFT's mint of token 1 (`Transfer(0, owner, 1)`, emitted by the NFT itself when the
   factory initialises it), searched newest window first from a block known to follow the
   creation (the DDO's metadata event) down, as public RPC nodes refuse wide log ranges;
2. that transaction's NFTCreated log, emitted by the chain's configured factory (NFT_FACTORIES),
   whose `newTokenAddress` is this NFT. Any other contract may emit an event of that shape, so
   only the configured factory's counts; an NFT it did not create has no creator.

web3 is imported only here (through chalicelib.chain), when a creator is first looked up.
"""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Mapping

from pynamodb.exceptions import PynamoDBException

from chalicelib.assets.onchain import hex_text
from chalicelib.auth.signatures import to_checksum_address
from chalicelib.errors import ServiceUnavailable
from chalicelib.models import NftCreator

if TYPE_CHECKING:
    from web3 import Web3

logger = logging.getLogger(__name__)

ZERO_TOPIC = "0x" + "00" * 32
TOKEN_ONE = "0x" + "00" * 31 + "01"
NO_CREATOR = ""  # cached for an NFT the factory did not create


class NftCreators:
    """Creators of data NFTs by chain, from the chain once, then from the cache table.

    `web3_for(chain_id)`: a connected Web3 (chain.web3access.Chains); `factories`: the
    ERC721Factory per chain; `window`: blocks per log query; `max_windows`: how far back from
    the block given the mint is searched before giving up (no creator, nothing cached)."""

    def __init__(self, web3_for: Callable[[int], "Web3"], factories: Mapping[int, str],
                 records: type[NftCreator] = NftCreator, window: int = 10_000, max_windows: int = 100):
        self._web3_for = web3_for
        self._factories = {int(chain): to_checksum_address(address) for chain, address in factories.items()}
        self._records = records
        self._window = window
        self._max_windows = max_windows
        self._known: dict[str, str] = {}
        self._lock = threading.Lock()

    def creator(self, chain_id: int, nft: str, created_by_block: int | None = None) -> str | None:
        """The checksummed creator of `nft` on `chain_id`, or None if the chain's factory did
        not create it (or no factory is configured for the chain). `created_by_block`: a block
        at or after the creation (none: the head)."""
        factory = self._factories.get(int(chain_id))
        if factory is None:
            return None
        key = f"creator:{int(chain_id)}:{nft.lower()}"
        known = self._known.get(key)
        if known is None:
            known = self._cached(key)
        if known is None:
            known = self._look_up(int(chain_id), to_checksum_address(nft), factory, created_by_block)
            if known is None:
                return None
            self._save(key, known)
        with self._lock:
            self._known[key] = known
        return known or None

    def _look_up(self, chain_id: int, nft: str, factory: str, created_by_block: int | None) -> str | None:
        """NO_CREATOR for an NFT its creation shows the factory did not make; None when the
        creation was not found within the search (nothing is then cached)."""
        from chalicelib.chain import abi
        from chalicelib.chain.web3access import rpc_errors

        w3 = self._web3_for(chain_id)
        transfer = hex_text(w3.eth.contract(address=nft, abi=abi.load("ERC721Template")).events["Transfer"].topic)
        with rpc_errors(chain_id):
            head = int(w3.eth.block_number)
            end = head if created_by_block is None else min(int(created_by_block), head)
            mint = None
            for _ in range(self._max_windows):
                if end < 0:
                    break
                start = max(0, end - self._window + 1)
                logs = w3.eth.get_logs({"address": nft, "topics": [transfer, ZERO_TOPIC, None, TOKEN_ONE],
                                        "fromBlock": start, "toBlock": end})
                if logs:
                    mint = min(logs, key=lambda log: (int(log["blockNumber"]), int(log["logIndex"])))
                    break
                end = start - 1
            if mint is None:
                logger.warning("creation of NFT %s on chain %s not found from block %s back", nft, chain_id,
                               created_by_block if created_by_block is not None else head)
                return None
            receipt = w3.eth.get_transaction_receipt(mint["transactionHash"])
        return _creator_in(w3, receipt, factory, nft)

    def _cached(self, key: str) -> str | None:
        try:
            return str(self._records.get(key).creator)
        except self._records.DoesNotExist:
            return None
        except PynamoDBException as error:
            raise ServiceUnavailable("Asset cache is unavailable, try again later") from error

    def _save(self, key: str, creator: str) -> None:
        try:
            self._records(key, creator=creator).save()
        except PynamoDBException as error:
            raise ServiceUnavailable("Asset cache is unavailable, try again later") from error


def _creator_in(w3: "Web3", receipt: Any, factory: str, nft: str) -> str:
    """The creator named by the factory's NFTCreated log of `nft` in the receipt, or NO_CREATOR."""
    from chalicelib.chain import abi

    events = w3.eth.contract(address=factory, abi=abi.load("ERC721Factory")).events
    created = hex_text(events["NFTCreated"].topic)
    for log in receipt["logs"]:
        topics = [hex_text(topic) for topic in log.get("topics", [])]
        if to_checksum_address(log["address"]) != factory or not topics or topics[0] != created:
            continue
        args = events["NFTCreated"]().process_log(log)["args"]
        if to_checksum_address(args["newTokenAddress"]) == nft:
            return to_checksum_address(args["creator"])
    return NO_CREATOR

