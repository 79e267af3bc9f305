"""did -> Asset: from the NFTs an operator registered (read on chain, cached in DynamoDB), else
from an Aquarius-compatible metadata service when METADATA_URL is set.

On chain, a did cannot be turned back into its NFT (it is a hash), so the operator registers
(chainId, nftAddress) once (`python -m chalicelib.assets.register`); from then on the provider
reads the NFT's latest MetadataCreated/MetadataUpdated event itself, checks it (did rule,
metaDataHash), caches the DDO and, once the cached copy is older than `max_age` seconds, looks
for newer events from the last block it searched. Nothing here trusts a DDO it did not check.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Collection

from pynamodb.exceptions import PynamoDBException

from chalicelib.assets import files as service_files
from chalicelib.assets.ddo import (
    Asset,
    as_int,
    asset_malformed,
    chain_not_supported,
    check_identity,
    compute_did,
    did_not_found,
    is_did,
    parse_ddo,
)
from chalicelib.assets.indexed import IndexedMetadataReader
from chalicelib.assets.metadata_service import MetadataService
from chalicelib.assets.onchain import MetadataEvent, MetadataReader, plain_document
from chalicelib.auth.signatures import is_address, to_checksum_address
from chalicelib.errors import BusinessError, ServiceUnavailable, ValidationError
from chalicelib.models import AssetRecord

logger = logging.getLogger(__name__)

DEFAULT_MAX_AGE = 60.0


class AssetResolver:
    """Resolves dids to checked DDOs; every dependency is given, so tests pass real ones.

    chain_ids: the chains this provider serves (an asset of any other chain is refused).
    reader: reads NFT metadata events (None: no chain access, only the metadata service).
    metadata: an Aquarius-compatible service (None when METADATA_URL is not set).
    private_key: returns the provider key (read lazily: it may come from Secrets Manager).
    records: the PynamoDB model of the cache. clock: Unix seconds.
    indexer: reads what an indexer shows beside the DDO (datatokens, indexedMetadata) when an
    asset is registered or its DDO changes (None: not kept).
    """

    def __init__(
        self,
        *,
        chain_ids: Collection[int],
        reader: MetadataReader | None,
        metadata: MetadataService | None,
        private_key: Callable[[], str],
        records: type[AssetRecord] = AssetRecord,
        clock: Callable[[], float] = time.time,
        max_age: float = DEFAULT_MAX_AGE,
        indexer: IndexedMetadataReader | None = None,
    ):
        self._chain_ids = frozenset(int(c) for c in chain_ids)
        self._reader = reader
        self._metadata = metadata
        self._private_key = private_key
        self._records = records
        self._clock = clock
        self._max_age = max_age
        self._indexer = indexer

    # ------------------------------------------------------------------ resolution

    def resolve(self, did: str, resource: str = "dataset") -> Asset:
        """The checked Asset of `did`; BusinessError with the original's codes otherwise.

        `resource` names the request field in errors: "dataset", "datasets[1]", "algorithm".
        """
        if not is_did(did):
            raise did_not_found(resource)
        record = self._cached(did)
        if record is not None:
            if int(record.chain_id) not in self._chain_ids:
                raise chain_not_supported(resource)
            if self._clock() - float(record.updated_at) >= self._max_age:
                record = self._refresh(record, resource)
            return _asset_of(record)
        if self._metadata is not None:
            ddo = self._metadata.ddo(did)
            if ddo is not None:
                return self._from_metadata_service(did, ddo, resource)
        raise did_not_found(resource)

    def current_owner(self, did: str) -> str:
        """The owner of the dataset's data NFT now (ownerOf, read from its chain at this call,
        never from the cache): who may read its audit log (chalicelib.owner.audit)."""
        asset = self.resolve(did)
        return self._require_reader().status(asset.chain_id, asset.nft_address)[1]

    def decrypt_files(self, asset: Asset, service: dict[str, Any], resource: str = "dataset") -> list[dict[str, Any]]:
        """The service's decrypted file objects (see chalicelib.assets.files.decrypt_files)."""
        return service_files.decrypt_files(asset, service, self._private_key(), resource)

    def _from_metadata_service(self, did: str, ddo: dict[str, Any], resource: str) -> Asset:
        chain_id, nft = as_int(ddo.get("chainId")), ddo.get("nftAddress")
        if chain_id is None or not is_address(nft):
            logger.warning("metadata service DDO of %s lacks chainId or nftAddress", did)
            raise asset_malformed(resource)
        if chain_id not in self._chain_ids:
            raise chain_not_supported(resource)
        check_identity(ddo, did, chain_id, nft, resource)
        nft_info = ddo.get("nft")
        state = as_int(nft_info.get("state")) if isinstance(nft_info, dict) else 0
        event = ddo.get("event")
        block = as_int(event.get("block")) if isinstance(event, dict) else None  # a hint only (assets.creators)
        return Asset(did, chain_id, to_checksum_address(nft), ddo, 0 if state is None else state, "metadata",
                     metadata_block=block)

    def _cached(self, did: str) -> AssetRecord | None:
        try:
            return self._records.get(did)
        except self._records.DoesNotExist:
            return None
        except PynamoDBException as error:
            raise ServiceUnavailable("Asset cache is unavailable, try again later") from error

    def _refresh(self, record: AssetRecord, resource: str) -> AssetRecord:
        """Look for metadata events newer than the last block searched; re-read the state."""
        reader = self._require_reader()
        chain_id, nft = int(record.chain_id), record.nft_address
        head = reader.head(chain_id)
        scanned = int(record.scanned_block or record.block_number or 0)
        event = reader.latest(chain_id, nft, scanned + 1, head) if head > scanned else None
        if event is not None:
            record.ddo = self._checked_ddo(event, record.did, chain_id, nft, resource)
            record.metadata_hash = event.metadata_hash.hex()
            record.block_number = event.block_number
            logger.info("asset %s updated from block %s", record.did, event.block_number)
        record.state, record.owner = reader.status(chain_id, nft)
        if event is not None:
            record.indexed = self._indexed(chain_id, nft, record.ddo, event, record.state, record.owner)
        elif record.indexed:
            record.indexed = _with_state(record.indexed, record.state, record.owner)
        record.scanned_block = max(head, scanned)
        record.updated_at = int(self._clock())
        self._save(record)
        return record

    def _checked_ddo(self, event: MetadataEvent, did: str, chain_id: int, nft: str, resource: str) -> dict[str, Any]:
        ddo = parse_ddo(plain_document(event, self._private_key, resource), resource)
        try:
            check_identity(ddo, did, chain_id, nft, resource)
        except BusinessError:
            logger.warning("DDO published by the NFT of %s does not name it", did)
            raise
        return ddo

    # ------------------------------------------------------------------ registration

    def register(self, chain_id: int, nft_address: str, *, tx_hash: str | None = None, from_block: int = 0) -> Asset:
        """Read, check and cache the DDO an NFT published; returns it. Idempotent.

        `tx_hash` (the setMetaData transaction) or `from_block` bound the event search; without
        them it scans from block 0, `reader`'s window at a time, which is slow on a long chain.
        """
        chain_id = int(chain_id)
        if chain_id not in self._chain_ids:
            raise BusinessError(f"chain {chain_id} is not supported by this provider")
        if not is_address(nft_address):
            raise ValidationError.field("nftAddress", "not a 20-byte hex address")
        reader = self._require_reader()
        nft = to_checksum_address(nft_address)
        did = compute_did(nft, chain_id)
        head = reader.head(chain_id)
        if tx_hash:
            in_tx = reader.in_transaction(chain_id, nft, tx_hash)
            if in_tx is None:
                raise BusinessError("that transaction has no MetadataCreated/MetadataUpdated event of this NFT")
            from_block = in_tx.block_number
        event = reader.latest(chain_id, nft, max(0, int(from_block)), head)
        if event is None:
            raise BusinessError("this NFT has published no DDO (no MetadataCreated/MetadataUpdated event)")
        ddo = self._checked_ddo(event, did, chain_id, nft, "asset")
        state, owner = reader.status(chain_id, nft)
        current = self._cached(did)
        if current is not None and current.metadata_hash == event.metadata_hash.hex() \
                and int(current.block_number or 0) == event.block_number and current.indexed \
                and int(current.state or 0) == state and current.owner == owner:
            return _asset_of(current)  # nothing changed: an indexer's second look writes nothing
        record = self._records(
            did,
            chain_id=chain_id,
            nft_address=nft,
            ddo=ddo,
            metadata_hash=event.metadata_hash.hex(),
            block_number=event.block_number,
            scanned_block=head,
            state=state,
            owner=owner,
            updated_at=int(self._clock()),
            indexed=self._indexed(chain_id, nft, ddo, event, state, owner),
        )
        self._save(record)
        logger.info("registered asset %s (chain %s, NFT %s, block %s)", did, chain_id, nft, event.block_number)
        return _asset_of(record)

    def _indexed(self, chain_id: int, nft: str, ddo: dict[str, Any], event: MetadataEvent, state: int,
                 owner: str) -> dict[str, Any] | None:
        if self._indexer is None:
            return None
        return self._indexer.read(chain_id, nft, ddo, event, state, owner)

    def unregister(self, did: str) -> bool:
        """Forget a registered asset; True if it was registered."""
        record = self._cached(did)
        if record is None:
            return False
        try:
            record.delete()
        except PynamoDBException as error:
            raise ServiceUnavailable("Asset cache is unavailable, try again later") from error
        return True

    def _save(self, record: AssetRecord) -> None:
        try:
            record.save()
        except PynamoDBException as error:
            raise ServiceUnavailable("Asset cache is unavailable, try again later") from error

    def _require_reader(self) -> MetadataReader:
        if self._reader is None:
            raise ServiceUnavailable("This provider has no chain access to read DDOs")
        return self._reader


def _asset_of(record: AssetRecord) -> Asset:
    return Asset(
        did=record.did,
        chain_id=int(record.chain_id),
        nft_address=record.nft_address,
        ddo=record.ddo,
        state=int(record.state or 0),
        source="chain",
        owner=record.owner,
        metadata_block=int(record.block_number or 0) or None,
        indexed=record.indexed,
    )


def _with_state(indexed: dict[str, Any], state: int, owner: str | None) -> dict[str, Any]:
    """The indexed view with the NFT's current state and owner (they change without a new DDO)."""
    metadata = dict(indexed.get("indexedMetadata") or {})
    metadata["nft"] = {**(metadata.get("nft") or {}), "state": state, "owner": owner}
    return {**indexed, "indexedMetadata": metadata}


def build_resolver(settings: Any, web3_for: Callable[[int], Any], max_age: float = DEFAULT_MAX_AGE) -> AssetResolver:
    """The container's resolver from settings and the per-chain Web3 accessor."""
    metadata = MetadataService(settings.metadata_url, timeout=settings.rpc_timeout) if settings.metadata_url else None
    return AssetResolver(
        chain_ids=settings.chain_ids,
        reader=MetadataReader(web3_for),
        metadata=metadata,
        private_key=settings.provider_private_key,
        max_age=max_age,
        indexer=IndexedMetadataReader(web3_for),
    )
