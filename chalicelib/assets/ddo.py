"""The DDO as the provider uses it: an `Asset` (did, chain, NFT, the DDO dict), the did rule of
DDO v4, and the errors a resolution can end in, with the original Provider's codes.

The codes are keyed by the request field they are about, as the original's compute validator
does: `{"dataset.documentId": "did_not_found"}`, `{"algorithm.serviceId": "not_found"}`;
`resource` is "dataset", "datasets[1]" or "algorithm".
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from chalicelib.auth.signatures import is_address, to_checksum_address
from chalicelib.errors import BusinessError

DID_PATTERN = re.compile(r"^did:op:[0-9a-f]{64}$")

# NFT metadata states (ERC721Template): 0 active, 1 end of life, 2 deprecated, 3 revoked,
# 4 temporarily disabled, 5 unlisted. The original Provider serves 0 and 5.
CONSUMABLE_STATES = frozenset({0, 5})

# The largest plain DDO accepted: it is cached in a DynamoDB item (400 KB at most).
MAX_DDO_BYTES = 300_000


def did_not_found(resource: str = "dataset") -> BusinessError:
    return BusinessError({f"{resource}.documentId": "did_not_found"})


def service_not_found(resource: str = "dataset") -> BusinessError:
    return BusinessError({f"{resource}.serviceId": "not_found"})


def chain_not_supported(resource: str = "dataset") -> BusinessError:
    return BusinessError({f"{resource}.documentId": "chain_not_supported"})


def asset_malformed(resource: str = "dataset") -> BusinessError:
    """The DDO is not what its NFT published (bad hash, bad id, undecodable): never served."""
    return BusinessError({f"{resource}.documentId": "asset_malformed"})


def compute_did(nft_address: str, chain_id: int) -> str:
    """did:op: + sha256(checksummed NFT address + decimal chain id), the DDO v4 rule."""
    seed = to_checksum_address(nft_address) + str(int(chain_id))
    return "did:op:" + hashlib.sha256(seed.encode("utf-8")).hexdigest()


def is_did(value: object) -> bool:
    return isinstance(value, str) and bool(DID_PATTERN.match(value))


@dataclass(frozen=True)
class Asset:
    """A resolved DDO. `state` is the NFT's metadata state; `source` is "chain" or "metadata"."""

    did: str
    chain_id: int
    nft_address: str
    ddo: dict[str, Any] = field(repr=False)
    state: int = 0
    source: str = "chain"
    owner: str | None = None  # the data NFT's owner (trusted publishers are checked against it)
    metadata_block: int | None = None  # a block of the DDO's metadata event: the NFT existed by then
    indexed: dict[str, Any] | None = field(default=None, repr=False, compare=False)  # datatokens, indexedMetadata

    @property
    def metadata(self) -> dict[str, Any]:
        value = self.ddo.get("metadata")
        return value if isinstance(value, dict) else {}

    @property
    def type(self) -> str | None:
        """"dataset" or "algorithm" (metadata.type)."""
        return self.metadata.get("type")

    @property
    def version(self) -> str:
        return str(self.ddo.get("version") or "4.0.0")

    @property
    def services(self) -> list[dict[str, Any]]:
        value = self.ddo.get("services")
        return [s for s in value if isinstance(s, dict)] if isinstance(value, list) else []

    @property
    def is_consumable(self) -> bool:
        return bool(self.metadata) and self.state in CONSUMABLE_STATES

    def service(self, service_id: Any, resource: str = "dataset") -> tuple[int, dict[str, Any]]:
        """(index in `services`, the service) of the service with id `service_id`.

        The index is what orders name (OrderStarted.serviceIndex). Ids are compared as text:
        clients send them as JSON strings or numbers.
        """
        wanted = str(service_id)
        for index, service in enumerate(self.services):
            if str(service.get("id")) == wanted:
                return index, service
        raise service_not_found(resource)

    def check_consumable(self) -> None:
        """The original's refusal for an asset whose NFT is not active (or has no metadata)."""
        if not self.is_consumable:
            raise BusinessError("Asset is not consumable.")


def parse_ddo(plain: bytes, resource: str = "dataset") -> dict[str, Any]:
    """A DDO dict from its serialized bytes; asset_malformed if it is not a JSON object."""
    if len(plain) > MAX_DDO_BYTES:
        raise asset_malformed(resource)
    try:
        ddo = json.loads(plain)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise asset_malformed(resource) from None
    if not isinstance(ddo, dict):
        raise asset_malformed(resource)
    return ddo


def check_identity(ddo: dict[str, Any], did: str, chain_id: int, nft_address: str, resource: str = "dataset") -> None:
    """The DDO names the did, chain and NFT it was resolved for, and the did follows from them.

    Without this a publisher (or a metadata service) could hand out another asset's DDO under
    a did, e.g. to borrow its services or its trusted algorithms.
    """
    declared_nft = ddo.get("nftAddress")
    if not is_address(declared_nft) or to_checksum_address(declared_nft) != to_checksum_address(nft_address):
        raise asset_malformed(resource)
    if as_int(ddo.get("chainId")) != int(chain_id) or ddo.get("id") != did:
        raise asset_malformed(resource)
    if compute_did(nft_address, chain_id) != did:
        raise asset_malformed(resource)


def as_int(value: Any) -> int | None:
    """An int from a JSON int or a decimal string (chainId, state); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None
