"""Reading a DDO from the chain: the NFT's MetadataCreated/MetadataUpdated events and its state.

A publisher's setMetaData(state, decryptorUrl, decryptorAddress, flags, data, metaDataHash, ...)
emits the DDO in `data`: flags bit 0 means lzma-compressed, bit 1 ECIES-encrypted for the
decryptor (compression is applied first, so it is undone last), and metaDataHash is a hash of the
plain DDO whatever the flags (assets.document_hash: which ones each client sets). The latest such
event is the asset's current DDO.

web3 is imported only here (through chalicelib.chain), when a DDO is actually read from a chain.
"""
from __future__ import annotations

import logging
import lzma
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from chalicelib.assets import document_hash, ecies
from chalicelib.auth.signatures import to_checksum_address
from chalicelib.assets.ddo import MAX_DDO_BYTES, asset_malformed

if TYPE_CHECKING:
    from web3 import Web3

logger = logging.getLogger(__name__)

FLAG_LZMA = 1
FLAG_ECIES = 2
METADATA_EVENTS = ("MetadataCreated", "MetadataUpdated")


@dataclass(frozen=True)
class MetadataEvent:
    """One MetadataCreated/MetadataUpdated log of an NFT, decoded."""

    block_number: int
    log_index: int
    state: int
    flags: int
    data: bytes
    metadata_hash: bytes
    tx_hash: str = ""


class MetadataReader:
    """Finds and decodes an NFT's metadata events; every RPC failure becomes a 503.

    `web3_for(chain_id)` gives a connected Web3 (chalicelib.chain.web3access.Chains). Logs are
    searched newest window first, `window` blocks at a time, because public RPC nodes refuse
    eth_getLogs over large ranges and the latest event is the one wanted.
    """

    def __init__(self, web3_for: Callable[[int], "Web3"], window: int = 10_000):
        self._web3_for = web3_for
        self._window = window

    def head(self, chain_id: int) -> int:
        from chalicelib.chain.web3access import rpc_errors

        w3 = self._web3_for(chain_id)
        with rpc_errors(chain_id):
            return int(w3.eth.block_number)

    def latest(self, chain_id: int, nft_address: str, from_block: int, to_block: int) -> MetadataEvent | None:
        """The newest metadata event of the NFT in [from_block, to_block], or None."""
        from chalicelib.chain.web3access import rpc_errors

        w3 = self._web3_for(chain_id)
        nft = self._contract(w3, nft_address)
        topics = [[hex_text(nft.events[name].topic) for name in METADATA_EVENTS]]
        end = to_block
        while end >= from_block:
            start = max(from_block, end - self._window + 1)
            with rpc_errors(chain_id):
                logs = w3.eth.get_logs({"address": nft.address, "topics": topics, "fromBlock": start, "toBlock": end})
            if logs:
                newest = max(logs, key=lambda log: (int(log["blockNumber"]), int(log["logIndex"])))
                return _decode(nft, newest)
            end = start - 1
        return None

    def in_transaction(self, chain_id: int, nft_address: str, tx_hash: str) -> MetadataEvent | None:
        """The NFT's last metadata event in a transaction's receipt, or None."""
        from web3.exceptions import TransactionNotFound

        from chalicelib.chain.web3access import rpc_errors

        w3 = self._web3_for(chain_id)
        nft = self._contract(w3, nft_address)
        with rpc_errors(chain_id):
            try:
                receipt = w3.eth.get_transaction_receipt(tx_hash)
            except TransactionNotFound:
                return None
        wanted = {hex_text(nft.events[name].topic) for name in METADATA_EVENTS}
        logs = [
            log for log in receipt["logs"]
            if log["address"].lower() == nft.address.lower() and log["topics"] and hex_text(log["topics"][0]) in wanted
        ]  # fmt: skip
        return _decode(nft, logs[-1]) if logs else None

    def status(self, chain_id: int, nft_address: str) -> tuple[int, str]:
        """The NFT's current metadata state (getMetaData, which setMetaDataState changes alone) and
        its owner (ownerOf token 1, which a data NFT mints to its publisher; trusted publishers
        are checked against it, as Aquarius' nft.owner)."""
        from chalicelib.chain.web3access import rpc_errors

        contract = self._contract(self._web3_for(chain_id), nft_address)
        with rpc_errors(chain_id):
            _, _, state, _ = contract.functions.getMetaData().call()
            owner = contract.functions.ownerOf(1).call()
        return int(state), to_checksum_address(owner)

    @staticmethod
    def _contract(w3: "Web3", nft_address: str) -> Any:
        from chalicelib.chain import abi

        return w3.eth.contract(address=w3.to_checksum_address(nft_address), abi=abi.load("ERC721Template"))


def _decode(nft: Any, log: Any) -> MetadataEvent:
    topic = hex_text(log["topics"][0])
    name = next(n for n in METADATA_EVENTS if hex_text(nft.events[n].topic) == topic)
    args = nft.events[name]().process_log(log)["args"]
    flags = bytes(args["flags"])
    return MetadataEvent(
        block_number=int(log["blockNumber"]),
        log_index=int(log["logIndex"]),
        state=int(args["state"]),
        flags=flags[0] if flags else 0,
        data=bytes(args["data"]),
        metadata_hash=bytes(args["metaDataHash"]),
        tx_hash=hex_text(log["transactionHash"]) if log.get("transactionHash") is not None else "",
    )


def hex_text(value: Any) -> str:
    """Topics come as HexBytes, bytes or str depending on the path; compare them as 0x-hex."""
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    text = str(value).lower()
    return text if text.startswith("0x") else "0x" + text


def plain_document(event: MetadataEvent, private_key: Callable[[], str], resource: str = "dataset") -> bytes:
    """The plain DDO bytes of an event, checked against its metaDataHash.

    Undoes encryption (bit 1) then compression (bit 0). Anything that does not decode, or whose
    metaDataHash is none of the hashes Ocean's publishers set for these bytes
    (assets.document_hash: a tampered or mismatched document), is refused.
    """
    data = event.data
    if event.flags & FLAG_ECIES:
        try:
            data = ecies.decrypt(private_key(), data)
        except ecies.DecryptionError:
            logger.warning("DDO is encrypted for another key")
            raise asset_malformed(resource) from None
    if event.flags & FLAG_LZMA:
        data = _decompress(data, resource)
    if not document_hash.matches(data, event.metadata_hash, bool(event.flags & (FLAG_ECIES | FLAG_LZMA))):
        logger.warning("DDO does not match its metaDataHash")
        raise asset_malformed(resource)
    return data


def _decompress(data: bytes, resource: str) -> bytes:
    """lzma with an output cap, so a small compression bomb cannot exhaust the Lambda's memory."""
    decompressor = lzma.LZMADecompressor()
    try:
        plain = decompressor.decompress(data, max_length=MAX_DDO_BYTES + 1)
    except lzma.LZMAError:
        raise asset_malformed(resource) from None
    if len(plain) > MAX_DDO_BYTES or not decompressor.eof:
        raise asset_malformed(resource)
    return plain
