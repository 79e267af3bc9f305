"""Finds the assets this provider serves on its chains, as Ocean Node's indexer does, so a
publisher's asset is computable here without an operator registering it.

A scheduled Lambda (`index_assets`, every minute; `make run` runs the same every few seconds)
reads, for every chain, the Ocean NFTs' MetadataCreated, MetadataUpdated and MetadataState
events of a bounded block range (one eth_getLogs per MAX_RANGE blocks, at most MAX_BLOCKS per
run), keeping its cursor (last block read) in DynamoDB (models.IndexerCursor). For each event:

- MetadataCreated/Updated: the DDO is decoded from the log itself (decrypted when it is
  ECIES-encrypted for this provider's key); when one of its services points at this provider
  (`PROVIDER_URL` or `PROVIDER_URL/node`) the NFT is registered through the resolver, which
  reads and checks the DDO from the chain again (did rule, metaDataHash) and caches it. A DDO
  of another provider costs no call: the log is all there is to read. An asset we served whose
  new DDO points elsewhere is forgotten.
- MetadataState: an asset already known is registered again (its state and owner re-read).

Idempotent: registering the same NFT twice writes nothing the second time (the resolver
compares). Reorgs of a few blocks: every run reads the last REORG_DEPTH blocks before the cursor
again, so an event moved to another block is still seen. A dead RPC: the chain's run fails
alone, its cursor stays, and the next run starts from there. Manual registration
(`python -m chalicelib.assets.register`) stays, for backfills before the indexer's start block.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Collection, Mapping

from pynamodb.exceptions import PynamoDBException

from chalicelib.assets.onchain import MetadataEvent, plain_document
from chalicelib.auth.signatures import to_checksum_address
from chalicelib.errors import ProviderError, ServiceUnavailable
from chalicelib.models import IndexerCursor

if TYPE_CHECKING:
    from chalicelib.assets.resolver import AssetResolver

logger = logging.getLogger(__name__)

REORG_DEPTH = 12  # blocks read again every run
MAX_RANGE = 2_000  # blocks per eth_getLogs (public RPCs refuse large ranges)
MAX_BLOCKS = 20_000  # blocks per chain per run: a long backlog is caught up over several runs
EVENTS = ("MetadataCreated", "MetadataUpdated", "MetadataState")


@dataclass
class ChainRun:
    """What one run did on one chain."""

    chain_id: int
    from_block: int = 0
    to_block: int = -1
    events: int = 0
    registered: list[str] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"chainId": self.chain_id, "fromBlock": self.from_block, "toBlock": self.to_block,
                "events": self.events, "registered": self.registered, "forgotten": self.forgotten,
                **({"error": self.error} if self.error else {})}


class AssetIndexer:
    """Reads metadata events and registers this provider's assets; dependencies are given.

    `served(endpoint)`: whether a service's serviceEndpoint is this provider.
    `start_blocks`: where a chain's first run starts (else REORG_DEPTH blocks before the head).
    """

    def __init__(self, *, resolver: "AssetResolver", web3_for: Callable[[int], Any], chain_ids: Collection[int],
                 served: Callable[[str], bool], private_key: Callable[[], str],
                 start_blocks: Mapping[int, int] | None = None, cursors: type[IndexerCursor] = IndexerCursor,
                 clock: Callable[[], float] = time.time):
        self._resolver = resolver
        self._web3_for = web3_for
        self._chain_ids = [int(c) for c in chain_ids]
        self._served = served
        self._private_key = private_key
        self._start_blocks = {int(k): int(v) for k, v in (start_blocks or {}).items()}
        self._cursors = cursors
        self._clock = clock

    def run(self) -> list[dict[str, Any]]:
        """One pass over every chain; a chain that fails does not stop the others."""
        return [self.index_chain(chain_id).as_dict() for chain_id in self._chain_ids]

    def index_chain(self, chain_id: int) -> ChainRun:
        run = ChainRun(chain_id)
        try:
            self._index(chain_id, run)
        except (ProviderError, PynamoDBException) as error:
            run.error = str(error) if isinstance(error, ProviderError) else "the cursor store is unavailable"
            logger.warning("indexer: chain %s not indexed this run: %s", chain_id, run.error)
        return run

    def _index(self, chain_id: int, run: ChainRun) -> None:
        from chalicelib.chain.web3access import rpc_errors

        w3 = self._web3_for(chain_id)
        with rpc_errors(chain_id):
            head = int(w3.eth.block_number)
        cursor = self._cursor(chain_id)
        if cursor is None:
            first = self._start_blocks.get(chain_id, max(0, head - REORG_DEPTH))
        else:
            first = max(0, int(cursor.block) - REORG_DEPTH + 1)
        last = min(head, first + MAX_BLOCKS - 1)
        run.from_block, run.to_block = first, last
        if last < first:
            return
        nft_abi = _nft_abi()
        topics = [[_topic(w3, nft_abi, name) for name in EVENTS]]
        for start in range(first, last + 1, MAX_RANGE):
            end = min(last, start + MAX_RANGE - 1)
            with rpc_errors(chain_id):
                logs = w3.eth.get_logs({"fromBlock": start, "toBlock": end, "topics": topics})
            run.events += len(logs)
            for log in sorted(logs, key=lambda item: (int(item["blockNumber"]), int(item["logIndex"]))):
                self._apply(w3, nft_abi, chain_id, log, run)
        with rpc_errors(chain_id):
            block_hash = w3.eth.get_block(last)["hash"]
        self._save_cursor(chain_id, last, "0x" + bytes(block_hash).hex())

    def _apply(self, w3: Any, nft_abi: list[dict[str, Any]], chain_id: int, log: Any, run: ChainRun) -> None:
        from chalicelib.assets.ddo import compute_did

        nft_address = to_checksum_address(log["address"])
        did = compute_did(nft_address, chain_id)
        nft = w3.eth.contract(address=nft_address, abi=nft_abi)
        name = next((n for n in EVENTS if _topic(w3, nft_abi, n) == _hex(log["topics"][0])), None)
        try:
            args = nft.events[name]().process_log(log)["args"]
        except Exception:  # noqa: BLE001 - a contract emitting a look-alike event: not an Ocean NFT's
            return
        known = self._known(did)
        if name == "MetadataState":
            if known:
                self._register(chain_id, nft_address, did, "", run)
            return
        ours = self._points_here(args)
        if ours:
            self._register(chain_id, nft_address, did, _hex(log["transactionHash"]), run)
        elif known and not ours:
            self._resolver.unregister(did)
            run.forgotten.append(did)
            logger.info("indexer: %s no longer points at this provider", did)

    def _points_here(self, args: Mapping[str, Any]) -> bool:
        """Whether the DDO in a MetadataCreated/Updated event has a service of this provider;
        read from the log alone (a DDO encrypted for another key is not ours)."""
        flags = bytes(args["flags"])
        event = MetadataEvent(0, 0, int(args["state"]), flags[0] if flags else 0, bytes(args["data"]),
                              bytes(args["metaDataHash"]))
        try:
            ddo = json.loads(plain_document(event, self._private_key, "asset"))
        except (ProviderError, ValueError, UnicodeDecodeError):
            return False
        services = ddo.get("services") if isinstance(ddo, dict) else None
        return any(isinstance(service, dict) and isinstance(service.get("serviceEndpoint"), str)
                   and self._served(service["serviceEndpoint"]) for service in services or [])

    def _register(self, chain_id: int, nft_address: str, did: str, tx_hash: str, run: ChainRun) -> None:
        try:
            self._resolver.register(chain_id, nft_address, tx_hash=tx_hash or None)
        except ServiceUnavailable:
            raise  # the chain or the store: the run stops here, its cursor stays
        except ProviderError as refusal:  # a DDO that does not check out: never served, not retried
            logger.info("indexer: %s not registered: %s", did, refusal)
            return
        if did not in run.registered:
            run.registered.append(did)

    def _known(self, did: str) -> bool:
        from chalicelib.models import AssetRecord

        try:
            AssetRecord.get(did)
        except AssetRecord.DoesNotExist:
            return False
        return True

    def _cursor(self, chain_id: int) -> IndexerCursor | None:
        try:
            return self._cursors.get(_key(chain_id), consistent_read=True)
        except self._cursors.DoesNotExist:
            return None

    def _save_cursor(self, chain_id: int, block: int, block_hash: str) -> None:
        self._cursors(_key(chain_id), block=block, block_hash=block_hash, updated_at=int(self._clock())).save()


def _key(chain_id: int) -> str:
    return f"indexer#{int(chain_id)}"


def _nft_abi() -> list[dict[str, Any]]:
    from chalicelib.chain import abi

    return abi.load("ERC721Template")


def _topic(w3: Any, nft_abi: list[dict[str, Any]], name: str) -> str:
    event = next(item for item in nft_abi if item.get("type") == "event" and item.get("name") == name)
    signature = f"{name}({','.join(_type(i) for i in event['inputs'])})"
    return _hex(w3.keccak(text=signature))


def _type(item: Mapping[str, Any]) -> str:
    if item["type"].startswith("tuple"):
        return "(" + ",".join(_type(c) for c in item["components"]) + ")" + item["type"][5:]
    return str(item["type"])


def _hex(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    text = str(value).lower()
    return text if text.startswith("0x") else "0x" + text


def build_indexer() -> AssetIndexer:
    """The container's indexer from the provider's settings (INDEXER_START_BLOCKS: JSON
    {chainId: block} where a chain's first run starts; default: near the head)."""
    import os

    from chalicelib import services
    from chalicelib.compute.input_rules import same_endpoint

    settings = services.settings()
    own = [settings.provider_url, settings.provider_url.rstrip("/") + "/node"] if settings.provider_url else []
    raw = os.environ.get("INDEXER_START_BLOCKS", "").strip()
    try:
        start_blocks = {int(k): int(v) for k, v in json.loads(raw).items()} if raw else {}
    except (ValueError, AttributeError, TypeError):
        from chalicelib.errors import ConfigurationError

        raise ConfigurationError("INDEXER_START_BLOCKS must be a JSON object {chainId: block}") from None
    return AssetIndexer(
        resolver=services.asset_resolver(), web3_for=services.chains().web3, chain_ids=settings.chain_ids,
        served=lambda endpoint: any(same_endpoint(endpoint, url) for url in own),
        private_key=settings.provider_private_key, start_blocks=start_blocks,
    )


__all__ = ["AssetIndexer", "ChainRun", "MAX_BLOCKS", "MAX_RANGE", "REORG_DEPTH", "build_indexer"]
