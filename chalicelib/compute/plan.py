"""What validation produces: a `ComputePlan`, everything a start or initialize needs once every
rule passed (the environment, each input with its decrypted files and its order, the algorithm),
and `Resolved`, what the caller found for each requested asset. The job service starts plans,
the workflow verifies their orders, Ocean Node's free tier checks their publishers.

Inputs are named as the original Provider names them in its error codes: the first dataset
`dataset`, the others `datasets[<i>]` (i ≥ 1, for start and initialize alike).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Protocol, Sequence

from chalicelib.compute.environments import Environment
from chalicelib.compute.image_digests import PinnedImage

FileObject = Mapping[str, Any]


class AssetLike(Protocol):
    """What validation needs of a resolved asset (chalicelib.assets' Asset fits).

    An optional `owner` attribute (the data NFT's owner) is used for trusted publishers, else
    ddo["nft"]["owner"] (Aquarius' field). An optional `state` attribute and ddo["nft"]["state"]
    are both honoured: either outside 0 (active) / 5 (unlisted) refuses the asset.
    """

    @property
    def did(self) -> str: ...

    @property
    def chain_id(self) -> int: ...

    @property
    def ddo(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)


class Resolved:
    """What the caller found for one requested asset.

    `asset` None: the DID did not resolve. `files`: the requested service's file objects,
    decrypted by this provider; None when it could not decrypt them (not ours, or malformed).
    """

    asset: Optional[AssetLike]
    files: Optional[Sequence[FileObject]] = None


@dataclass(frozen=True, kw_only=True)


class PlannedOrder:
    """An input that is paid for with an order: what the chain verification needs (DESIGN §3.5)."""

    resource: str
    did: str
    chain_id: int
    service_id: str
    service_index: int
    service_type: str
    datatoken: str
    timeout: int
    transfer_tx_id: Optional[str]
    asset: Optional[AssetLike] = field(repr=False, compare=False)  # None: a raw input (see PlannedInput)


@dataclass(frozen=True, kw_only=True)


class PlannedInput(PlannedOrder):
    """A validated dataset. `files` are decrypted: never log or return them.

    A raw input (Ocean Node's `fileObject` on free compute) is the consumer's own file: no asset,
    no service, no order; `did` is its name in the job (`raw_input_name`: its folder under
    /data/inputs and its entry in DIDS), and it never lets the algorithm reach the network."""

    index: int
    files: tuple[FileObject, ...] = field(repr=False)
    userdata: Mapping[str, Any]
    allow_network: bool = False  # its compute service says allowNetworkAccess: true (absent = false)

    @property
    def is_raw(self) -> bool:
        return self.asset is None

    def manifest(self) -> dict[str, Any]:
        """This input in the inputs manifest (docs/internals.md)."""
        return {"did": self.did, "serviceId": self.service_id, "files": [dict(f) for f in self.files],
                "userdata": dict(self.userdata)}


@dataclass(frozen=True, kw_only=True)


class PlannedAlgorithm:
    """The validated algorithm; `order` is None for a raw algorithm (meta)."""

    did: str
    order: Optional[PlannedOrder]
    rawcode: str = field(repr=False)
    files: tuple[FileObject, ...] = field(repr=False)
    container: Mapping[str, str]
    userdata: Mapping[str, Any]
    algocustomdata: Mapping[str, Any]
    checksums: tuple[str, ...] = ()  # sha256 hex of each file, computed at start (C7)
    image: Optional[PinnedImage] = None  # the image as pinned at start (issue 22)

    @property
    def is_raw(self) -> bool:
        return self.order is None

    def manifest(self) -> dict[str, Any]:
        return {"did": self.did, "rawcode": self.rawcode, "files": [dict(f) for f in self.files],
                "container": dict(self.container), "algocustomdata": dict(self.algocustomdata),
                "userdata": dict(self.userdata)}


@dataclass(frozen=True)


class ComputePlan:
    """Everything validated: what to order-check, charge, and hand to the job service."""

    environment: Environment
    chain_id: int  # the main dataset's chain
    provider_address: str
    datasets: tuple[PlannedInput, ...]
    algorithm: PlannedAlgorithm
    valid_until: Optional[int] = None  # initializeCompute's compute.validUntil
    fee: Optional[Mapping[str, Any]] = None  # what the orders' provider fee paid (receipts): token, amount

    @property
    def allow_network(self) -> bool:
        """Whether the algorithm may use the network (C8): only if EVERY dataset's compute service
        allows it; one that does not (or says nothing, or is an access service) keeps it sealed."""
        return bool(self.datasets) and all(dataset.allow_network for dataset in self.datasets)

    def orders(self) -> list[PlannedOrder]:
        """Datasets then the algorithm (if published): the inputs whose orders pay for the job."""
        orders: list[PlannedOrder] = [dataset for dataset in self.datasets if not dataset.is_raw]
        if self.algorithm.order is not None:
            orders.append(self.algorithm.order)
        return orders


def input_resource(index: int) -> str:
    """The original's name of input `index` in error codes."""
    return f"datasets[{index}]" if index else "dataset"


def raw_input_name(index: int) -> str:
    """What stands for a raw input's did (job record, DIDS, its folder /data/inputs/<name>/0):
    by position, since the consumer's file has no identity of its own."""
    return f"raw-{index}"
