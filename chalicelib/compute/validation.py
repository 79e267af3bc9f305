"""The rules between a compute request and a job: may this algorithm run on these datasets, here?

Shared by POST /api/services/compute (start) and POST /api/services/initializeCompute (DESIGN
§3.4). The caller resolves the DDOs and decrypts the service files (I/O); this module only
judges, so every rule is testable with DDO dicts. It follows the original Ocean Provider
(`ocean_provider/validation/algo.py`: `WorkflowValidator`, `InputItemValidator`,
`_validate_trusted_algos`, `get_algo_checksums`; `validation/images.py`; `routes/compute.py`)
and answers with its error codes, `BusinessError({"<resource>": "<code>"})` → HTTP 400
`{"error": {"<resource>": "<code>"}}`. Inputs are named as the original names them: the first
dataset `dataset`, the others `datasets[<i>]` (i ≥ 1, for start and initialize alike).

| resource | code | when |
|---|---|---|
| error (plain message) | The validUntil value is not correct. | initialize: compute.validUntil not in the future |
| error (plain message) | Compute environment does not exist | unknown `environment` / `compute.env` |
| environment | chain_not_supported | (ours) the environment does not serve an input's chain |
| algorithm | missing_meta_documentId | neither algorithm.meta nor algorithm.documentId |
| algorithm.documentId | did_not_found | the algorithm DID does not resolve |
| algorithm | not_algo | its metadata.type is not "algorithm" (initialize: plain "DID is not a valid algorithm") |
| algorithm.serviceId | missing / not_found / service_not_access_compute | no serviceId, unknown, wrong type |
| algorithm.credentials | Error: Access to asset <did> was denied with code: <n>. | address allow/deny lists |
| algorithm.credentials | Asset is not consumable. | no metadata, or NFT state not 0/5 |
| algorithm | file_unavailable | this provider cannot decrypt its files, or its files' checksums cannot be computed (always needed at start, see below) |
| <input or algorithm> | s3_source_not_allowed | (ours) an `s3` file outside the places S3_FILE_SOURCES gives its publisher |
| algorithm | meta_oneof_url_rawcode_remote | raw algorithm without url or rawcode |
| algorithm.container | missing_entrypoint_image_checksum / checksum_prefix | container incomplete, checksum not "sha256:…" |
| algorithm.container | image_registry_not_allowed | (ours) the image's registry is not in ALGORITHM_REGISTRIES |
| algorithm.transferTxId | missing | start: algorithm by DID without its order |
| <input>.documentId | did_not_found | a dataset DID does not resolve |
| <input>.serviceId | not_found | no such service in its DDO |
| <input> | Asset is not consumable. / Error: Access to asset … | as for the algorithm |
| <input>.serviceId | service_not_access_compute | neither access nor compute |
| <input>.serviceId | main_service_compute | the first dataset's service is not compute |
| <input>.serviceId | compute_services_not_in_same_provider | files not decryptable here (or, with provider_url, another serviceEndpoint) |
| <input> | no_raw_algo_allowed | raw algorithm, compute.allowRawAlgorithm false |
| <input> | not_trusted_algo_publisher | algorithm NFT owner not in publisherTrustedAlgorithmPublishers |
| <input> | not_trusted_algo | algorithm DID not in publisherTrustedAlgorithms |
| <input> | no_publisherTrustedAlgorithms | a trusted-algorithm entry without "did" |
| <input> | algorithm_file_checksum_mismatch | entry's filesChecksum ≠ the algorithm's |
| <input> | algorithm_container_checksum_mismatch | entry's containerSectionChecksum ≠ the algorithm's |
| <input>.transferTxId | duplicate | (ours) one order used twice in one request |
| <input or algorithm>.userdata.<name> | missing / invalid | (ours, as ocean-node) userdata against consumerParameters |

Trust semantics are the original's: both trust lists empty → any published algorithm may run
(`open_when_unrestricted=False` refuses instead, as ocean-node does); a non-empty publishers list
and a non-empty algorithms list must both accept the algorithm. filesChecksum is the
concatenation of the sha256 hex digests of the algorithm's files' contents, in order, lower
case (not a hash of them); containerSectionChecksum is sha256_hex(entrypoint + checksum) of the
algorithm DDO's metadata.algorithm.container. An empty checksum in an entry is not checked.
Extension for DDOs written for ocean-node/ocean.js: "*" matches anything in `did`,
`filesChecksum`, `containerSectionChecksum`, an entry's optional `serviceId`, and as a
publisher; the original compared "*" literally and so refused.

Algorithm files are pinned at start (issue 10): a start hashes every file of the algorithm
(published, or raw with a url) once, and the plan carries the digests (`PlannedAlgorithm.checksums`,
the manifest's `algorithm.checksums`); the runner places only files that still match them. The
same download answers a trusted entry's filesChecksum, so a start downloads the algorithm once.
initializeCompute hashes only when an entry pins a filesChecksum, through the hasher's bounded
cache (chalicelib.compute.checksums), so an unsigned caller cannot make it download per call.

`s3` file objects are a place the jobs' credentials can read, so a publisher may name only the
places the operator gave it (S3_FILE_SOURCES: bucket or bucket/prefix ARNs → the publisher
addresses, NFT owners, that may use them; chalicelib.config.S3FileSources); anything else is
refused at initializeCompute and start with `{"<input or algorithm>": "s3_source_not_allowed"}`.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Optional, Protocol, Sequence
from urllib.parse import urlsplit

from chalicelib.compute.environments import Environment
from chalicelib.config import ImageRegistries
from chalicelib.compute.requests import (
    AlgorithmInput,
    ComputeStartRequest,
    DatasetInput,
    InitializeComputeRequest,
)
from chalicelib.errors import BusinessError, ProviderError

FileObject = Mapping[str, Any]


class FileHasher(Protocol):
    """The sha256 hex digest of each of an algorithm's files, in order (it downloads them;
    chalicelib.compute.checksums.AlgorithmChecksums is the real one)."""

    def digests(self, files: Sequence[FileObject]) -> Sequence[str]:
        """Fresh: used at start, where the digests are also pinned in the manifest."""
        ...

    def cached_digests(self, files: Sequence[FileObject]) -> Sequence[str]:
        """May come from a bounded cache: used by the unsigned initializeCompute."""
        ...

WILDCARD = "*"
IMAGE_REGISTRY_NOT_ALLOWED = "image_registry_not_allowed"
CONSUMABLE_STATES = (0, 5)  # NFT metadata states the original serves: active, and ordering disabled
NOT_IN_ALLOW_LIST, IN_DENY_LIST = 3, 4  # the original's ConsumableCodes


class S3Places(Protocol):
    """Which publishers may name which S3 places (chalicelib.config.S3FileSources fits)."""

    def allows(self, publisher: str, bucket: str, key: str) -> bool: ...


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
    asset: AssetLike = field(repr=False, compare=False)


@dataclass(frozen=True, kw_only=True)
class PlannedInput(PlannedOrder):
    """A validated dataset. `files` are decrypted: never log or return them."""

    index: int
    files: tuple[FileObject, ...] = field(repr=False)
    userdata: Mapping[str, Any]
    allow_network: bool = False  # its compute service says allowNetworkAccess: true (absent = false)

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

    @property
    def allow_network(self) -> bool:
        """Whether the algorithm may use the network (C8): only if EVERY dataset's compute service
        allows it; one that does not (or says nothing, or is an access service) keeps it sealed."""
        return bool(self.datasets) and all(dataset.allow_network for dataset in self.datasets)

    def orders(self) -> list[PlannedOrder]:
        """Datasets then the algorithm (if published): the inputs whose orders pay for the job."""
        orders: list[PlannedOrder] = list(self.datasets)
        if self.algorithm.order is not None:
            orders.append(self.algorithm.order)
        return orders


# ------------------------------------------------------------------ checksums


def container_section_checksum(container: Mapping[str, Any]) -> str:
    """sha256 hex of entrypoint + checksum, as the original and ocean-node compute it."""
    text = str(container.get("entrypoint", "")) + str(container.get("checksum", ""))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def joined_files_checksum(checksums: Iterable[str]) -> str:
    """filesChecksum: the files' own sha256 hex digests concatenated in order, lower case."""
    return "".join(checksums).lower()


def content_checksum(content: bytes) -> str:
    """One file's checksum, the sha256 hex of its bytes."""
    return hashlib.sha256(content).hexdigest()


# ------------------------------------------------------------------ DDO reading


def find_service(ddo: Mapping[str, Any], service_id: str) -> Optional[tuple[int, Mapping[str, Any]]]:
    """(index in ddo.services, service) of the service with this id; the index is the order's serviceIndex."""
    services = ddo.get("services")
    if not isinstance(services, list):
        return None
    for index, service in enumerate(services):
        if isinstance(service, Mapping) and str(service.get("id")) == service_id:
            return index, service
    return None


def _nft_field(asset: AssetLike, name: str) -> Any:
    value = getattr(asset, name, None)
    if value is not None:
        return value
    nft = asset.ddo.get("nft")
    return nft.get(name) if isinstance(nft, Mapping) else None


def _address_list(credentials: Any, access_class: str) -> Optional[list[str]]:
    """Lower-cased addresses of the first "address" entry of allow/deny; None if malformed."""
    if isinstance(credentials, str):
        try:
            credentials = json.loads(credentials)
        except ValueError:
            return None
    if not credentials:
        return []
    if not isinstance(credentials, Mapping):
        return None
    entries = credentials.get(access_class) or []
    if not isinstance(entries, list):
        return None
    for entry in entries:
        if isinstance(entry, Mapping) and entry.get("type") == "address":
            values = entry.get("values")
            if not isinstance(values, list):
                return None
            return [str(v).lower() for v in values]
    return []


def access_denied_code(credentials: Any, consumer: str) -> int:
    """0 if the address credentials let `consumer` in, else the original's ConsumableCodes value."""
    allowed = _address_list(credentials, "allow")
    denied = _address_list(credentials, "deny")
    if allowed is None or denied is None:
        return NOT_IN_ALLOW_LIST  # malformed credentials never let anyone in
    if allowed and consumer.lower() not in allowed:
        return NOT_IN_ALLOW_LIST
    if not allowed and consumer.lower() in denied:
        return IN_DENY_LIST
    return 0


def consumable_error(asset: AssetLike, consumer: str) -> Optional[str]:
    """The original's check_asset_consumable message, or None when the consumer may use it."""
    if not asset.ddo.get("metadata"):
        return "Asset is not consumable."
    nft = asset.ddo.get("nft")
    states = (getattr(asset, "state", None), nft.get("state") if isinstance(nft, Mapping) else None)
    if any(state is not None and state not in CONSUMABLE_STATES for state in states):
        return "Asset is not consumable."
    code = access_denied_code(asset.ddo.get("credentials"), consumer)
    if code:
        return f"Error: Access to asset {asset.did} was denied with code: {code}."
    return None


def container_error(container: Any) -> Optional[str]:
    """The original's validate_container code, or None."""
    if not isinstance(container, Mapping):
        return "missing_entrypoint_image_checksum"
    for key in ("entrypoint", "image", "checksum"):
        if not isinstance(container.get(key), str) or not container.get(key):
            return "missing_entrypoint_image_checksum"
    if not container["checksum"].startswith("sha256:"):
        return "checksum_prefix"
    return None


def _normalized_endpoint(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url.strip())
    port = parts.port
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    host = (parts.hostname or "") + (f":{port}" if port and port != default else "")
    return parts.scheme.lower(), host.lower(), parts.path.rstrip("/")


def same_endpoint(a: str, b: str) -> bool:
    """Same provider URL up to case of scheme/host, default ports and a trailing slash."""
    try:
        return _normalized_endpoint(a) == _normalized_endpoint(b)
    except ValueError:
        return False


# ------------------------------------------------------------------ consumer parameters


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


def _matches_type(kind: Any, value: Any, parameter: Mapping[str, Any]) -> bool:
    if kind == "text":
        return isinstance(value, str)
    if kind == "number":
        return _is_number(value)
    if kind == "boolean":
        return isinstance(value, bool) or value in ("true", "false")
    if kind == "select":
        options = parameter.get("options")
        keys = {str(k) for o in options for k in o} if isinstance(options, list) and all(
            isinstance(o, Mapping) for o in options) else set()
        return str(value) in keys
    return True  # a type this provider does not know: the algorithm judges


def apply_consumer_parameters(resource: str, parameters: Any, userdata: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """userdata checked against a DDO's consumerParameters (ocean-node's rules): a required one
    must be given, a given one must have its type, a missing optional one takes its default."""
    values = dict(userdata or {})
    if not isinstance(parameters, list):
        return values
    for parameter in parameters:
        if not isinstance(parameter, Mapping) or not isinstance(parameter.get("name"), str):
            continue
        name = parameter["name"][:64]
        value = values.get(parameter["name"])
        if value is None:
            if parameter.get("required") is True:
                raise BusinessError({f"{resource}.userdata.{name}": "missing"})
            if parameter.get("default") is not None:
                values[parameter["name"]] = parameter["default"]
            continue
        if not _matches_type(parameter.get("type"), value, parameter):
            raise BusinessError({f"{resource}.userdata.{name}": "invalid"})
    return values


# ------------------------------------------------------------------ the validator


def input_resource(index: int) -> str:
    """The original's name of input `index` in error codes."""
    return f"datasets[{index}]" if index else "dataset"


@dataclass
class _Algorithm:
    """The algorithm as the dataset rules see it; its files are hashed at most once."""

    raw: bool
    did: str = ""
    service_id: str = ""
    owner: Optional[str] = None
    container_checksum: str = ""
    files: Sequence[FileObject] = ()
    hasher: Optional[FileHasher] = None
    cached: bool = False  # initializeCompute: the hasher's bounded cache may answer
    _digests: Optional[tuple[str, ...]] = None

    def digests(self) -> tuple[str, ...]:
        if self._digests is None:
            if self.hasher is None:
                raise BusinessError({"algorithm": "file_unavailable"})
            fetch = self.hasher.cached_digests if self.cached else self.hasher.digests
            try:
                digests = tuple(str(d).lower() for d in fetch(list(self.files)))
            except ProviderError:  # the hasher's own answer (e.g. ServiceUnavailable) stands
                raise
            except Exception:  # the hasher fetches over the network: any other failure means unavailable
                raise BusinessError({"algorithm": "file_unavailable"}) from None
            if len(digests) != len(self.files):
                raise BusinessError({"algorithm": "file_unavailable"})
            self._digests = digests
        return self._digests

    def files_checksum(self) -> str:
        return joined_files_checksum(self.digests())


class ComputeValidator:
    """Judges compute requests against resolved DDOs and the configured environments.

    `files_checksum` hashes an algorithm's files from its decrypted file objects (it downloads
    them): at every start (the digests are pinned in the plan), and at initializeCompute only
    when a trusted-algorithm entry pins a filesChecksum (then through its bounded cache).
    `s3_sources` says which publishers may name which S3 places (None: no `s3` file at all).
    `provider_url`, when given, must also match each dataset service's serviceEndpoint (the
    original decides "served here" by being able to decrypt the files, which is always checked).
    """

    def __init__(
        self,
        provider_address: str,
        environments: Mapping[str, Environment],
        provider_url: Optional[str] = None,
        files_checksum: Optional[FileHasher] = None,
        clock: Callable[[], float] = time.time,
        open_when_unrestricted: bool = True,
        s3_sources: Optional["S3Places"] = None,
        registries: ImageRegistries = ImageRegistries(),
    ):
        """`registries`: where algorithm images may come from (ALGORITHM_REGISTRIES), checked with
        the container fields, before any order is checked or anything reserved."""
        self._provider_address = provider_address
        self._environments = environments
        self._provider_url = provider_url
        self._files_checksum = files_checksum
        self._clock = clock
        self._open_when_unrestricted = open_when_unrestricted
        self._s3_sources = s3_sources
        self._registries = registries

    # ---- entry points

    def validate_start(
        self,
        request: ComputeStartRequest,
        datasets: Sequence[Resolved],
        algorithm: Optional[Resolved] = None,
    ) -> ComputePlan:
        """All rules of POST /compute except the orders on chain. `datasets` align with
        request.all_datasets; `algorithm` is the resolved algorithm DID (ignored for meta)."""
        return self._plan(request.consumerAddress, request.environment, request.all_datasets, datasets,
                          request.algorithm, algorithm, starting=True)

    def validate_initialize(
        self,
        request: InitializeComputeRequest,
        datasets: Sequence[Resolved],
        algorithm: Optional[Resolved] = None,
    ) -> ComputePlan:
        """The rules of initializeCompute: as start, orders optional, validUntil in the future."""
        valid_until = request.compute.validUntil
        if valid_until <= self._clock():
            raise BusinessError("The validUntil value is not correct.")
        plan = self._plan(request.consumerAddress, request.compute.env, request.all_datasets, datasets,
                          request.algorithm, algorithm, starting=False)
        return replace(plan, valid_until=valid_until)

    def validate_free(
        self,
        consumer: str,
        environment_id: str,
        requested: Sequence[DatasetInput],
        datasets: Sequence[Resolved],
        algorithm_request: AlgorithmInput,
        algorithm: Optional[Resolved] = None,
    ) -> ComputePlan:
        """Every rule of a start except the orders (Ocean Node's free compute): the caller
        checks the free tier and the operator's free-compute publishers itself."""
        return self._plan(consumer, environment_id, requested, datasets, algorithm_request, algorithm, starting=False)

    def environment(self, environment_id: str, chain_ids: Iterable[int] = ()) -> Environment:
        """The environment, if it exists and serves every one of `chain_ids`."""
        environment = self._environments.get(environment_id)
        if environment is None:
            raise BusinessError("Compute environment does not exist")
        if any(chain_id not in environment.chain_ids for chain_id in chain_ids):
            raise BusinessError({"environment": "chain_not_supported"})
        return environment

    # ---- the plan

    def _plan(
        self,
        consumer: str,
        environment_id: str,
        requested: Sequence[DatasetInput],
        resolved: Sequence[Resolved],
        algo_request: AlgorithmInput,
        algo_resolved: Optional[Resolved],
        starting: bool,
    ) -> ComputePlan:
        if len(requested) != len(resolved):
            raise ValueError("one Resolved per requested dataset, main dataset first")
        environment = self.environment(environment_id)
        algorithm, algo_facts = self._algorithm(consumer, algo_request, algo_resolved, environment, starting)
        algo_facts.cached = not starting
        inputs = tuple(
            self._input(index, consumer, item, found, environment, algo_facts)
            for index, (item, found) in enumerate(zip(requested, resolved))
        )
        self._no_order_twice(inputs, algorithm)
        if starting and algorithm.files:
            # last, so a refused start downloads nothing; reuses a trusted entry's download
            algorithm = replace(algorithm, checksums=algo_facts.digests())
        return ComputePlan(environment, inputs[0].chain_id, self._provider_address, inputs, algorithm)

    def _input(
        self,
        index: int,
        consumer: str,
        item: DatasetInput,
        found: Resolved,
        environment: Environment,
        algorithm: _Algorithm,
    ) -> PlannedInput:
        resource = input_resource(index)
        asset = found.asset
        if asset is None:
            raise BusinessError({f"{resource}.documentId": "did_not_found"})
        located = find_service(asset.ddo, item.serviceId)
        if located is None:
            raise BusinessError({f"{resource}.serviceId": "not_found"})
        service_index, service = located
        refusal = consumable_error(asset, consumer)
        if refusal:
            raise BusinessError({resource: refusal})
        service_type = service.get("type")
        if service_type not in ("access", "compute"):
            raise BusinessError({f"{resource}.serviceId": "service_not_access_compute"})
        if index == 0 and service_type != "compute":
            raise BusinessError({f"{resource}.serviceId": "main_service_compute"})
        if not found.files or not self._served_here(service):
            raise BusinessError({f"{resource}.serviceId": "compute_services_not_in_same_provider"})
        self._check_s3_places(resource, found.files, _nft_field(asset, "owner"))
        self.environment(environment.id, [asset.chain_id])
        if service_type == "compute":
            self._check_algorithm_allowed(resource, service.get("compute"), algorithm)
        userdata = apply_consumer_parameters(resource, service.get("consumerParameters"), item.userdata)
        return PlannedInput(
            resource=resource, did=asset.did, chain_id=asset.chain_id, service_id=item.serviceId,
            service_index=service_index, service_type=str(service_type),
            datatoken=str(service.get("datatokenAddress", "")), timeout=_timeout(service),
            transfer_tx_id=item.transferTxId, asset=asset, index=index,
            files=tuple(found.files), userdata=userdata, allow_network=_allows_network(service),
        )

    def _served_here(self, service: Mapping[str, Any]) -> bool:
        if not self._provider_url:
            return True
        endpoint = service.get("serviceEndpoint")
        # the Ocean Node protocol is served at <provider>/node: an asset pointing there is ours too
        return isinstance(endpoint, str) and any(
            same_endpoint(endpoint, url) for url in (self._provider_url, self._provider_url.rstrip("/") + "/node"))

    def _algorithm(
        self,
        consumer: str,
        request: AlgorithmInput,
        found: Optional[Resolved],
        environment: Environment,
        starting: bool,
    ) -> tuple[PlannedAlgorithm, _Algorithm]:
        if request.meta is not None:
            return self._raw_algorithm(request)
        if not request.documentId:
            raise BusinessError({"algorithm": "missing_meta_documentId"})
        asset = found.asset if found else None
        if asset is None:
            raise BusinessError({"algorithm.documentId": "did_not_found"})
        metadata = asset.ddo.get("metadata")
        if not isinstance(metadata, Mapping) or metadata.get("type") != "algorithm":
            raise BusinessError({"algorithm": "not_algo"} if starting else "DID is not a valid algorithm")
        if not request.serviceId:
            raise BusinessError({"algorithm.serviceId": "missing"})
        located = find_service(asset.ddo, request.serviceId)
        if located is None:
            raise BusinessError({"algorithm.serviceId": "not_found"})
        service_index, service = located
        if service.get("type") not in ("access", "compute"):
            raise BusinessError({"algorithm.serviceId": "service_not_access_compute"})
        refusal = consumable_error(asset, consumer)
        if refusal:
            raise BusinessError({"algorithm.credentials": refusal})
        algorithm_section = metadata.get("algorithm")
        container = algorithm_section.get("container") if isinstance(algorithm_section, Mapping) else None
        self._check_container(container)
        if not found or not found.files:
            raise BusinessError({"algorithm": "file_unavailable"})
        self._check_s3_places("algorithm", found.files, _nft_field(asset, "owner"))
        if starting and not request.transferTxId:
            raise BusinessError({"algorithm.transferTxId": "missing"})
        self.environment(environment.id, [asset.chain_id])
        parameters = [*_list(service.get("consumerParameters")), *_list(algorithm_section.get("consumerParameters"))]
        userdata = apply_consumer_parameters("algorithm", parameters, request.userdata)
        order = PlannedOrder(
            resource="algorithm", did=asset.did, chain_id=asset.chain_id, service_id=request.serviceId,
            service_index=service_index, service_type=str(service.get("type")),
            datatoken=str(service.get("datatokenAddress", "")), timeout=_timeout(service),
            transfer_tx_id=request.transferTxId, asset=asset,
        )
        container_fields = _container_fields(container)
        planned = PlannedAlgorithm(
            did=asset.did, order=order, rawcode="", files=tuple(found.files), container=container_fields,
            userdata=userdata, algocustomdata=dict(request.algocustomdata or {}),
        )
        facts = _Algorithm(
            raw=False, did=asset.did, service_id=request.serviceId, owner=_nft_field(asset, "owner"),
            container_checksum=container_section_checksum(container_fields), files=tuple(found.files),
            hasher=self._files_checksum,
        )
        return planned, facts

    def _raw_algorithm(self, request: AlgorithmInput) -> tuple[PlannedAlgorithm, _Algorithm]:
        meta = request.meta
        assert meta is not None
        if not meta.url and not meta.rawcode:
            raise BusinessError({"algorithm": "meta_oneof_url_rawcode_remote"})
        container = meta.container.model_dump()
        self._check_container(container)
        files: tuple[FileObject, ...] = ({"type": "url", "url": meta.url, "method": "GET"},) if meta.url else ()
        planned = PlannedAlgorithm(
            did="", order=None, rawcode=meta.rawcode, files=files, container=_container_fields(container),
            userdata=dict(request.userdata or {}), algocustomdata=dict(request.algocustomdata or {}),
        )
        return planned, _Algorithm(raw=True, files=files, hasher=self._files_checksum)

    def _check_container(self, container: Any) -> None:
        """The container fields (the original's codes), then the image's registry: a consumer or
        publisher must not make the instances pull from a registry the operator did not allow
        (the account's ECR, one inside the VPC)."""
        problem = container_error(container)
        if problem:
            raise BusinessError({"algorithm.container": problem})
        if not self._registries.allows(str(container["image"])):
            raise BusinessError({"algorithm.container": IMAGE_REGISTRY_NOT_ALLOWED})

    # ---- s3 places

    def _check_s3_places(self, resource: str, files: Sequence[FileObject], publisher: Optional[str]) -> None:
        """Every `s3` file must lie in a place the operator gave this publisher (the NFT owner):
        the jobs' credentials can read more than one publisher's objects."""
        for spec in files:
            if not isinstance(spec, Mapping) or spec.get("type") != "s3":
                continue
            bucket, key = spec.get("bucket"), spec.get("objectKey")
            if (self._s3_sources is None or not publisher or not isinstance(bucket, str)
                    or not isinstance(key, str) or not self._s3_sources.allows(publisher, bucket, key)):
                raise BusinessError({resource: "s3_source_not_allowed"})

    # ---- trust

    def _check_algorithm_allowed(self, resource: str, compute: Any, algorithm: _Algorithm) -> None:
        """The dataset's compute options against the algorithm (original: InputItemValidator.validate_algo)."""
        options = compute if isinstance(compute, Mapping) else {}
        if algorithm.raw:
            if options.get("allowRawAlgorithm") is not True:
                raise BusinessError({resource: "no_raw_algo_allowed"})
            return
        publishers = _list(options.get("publisherTrustedAlgorithmPublishers"))
        trusted = _list(options.get("publisherTrustedAlgorithms"))
        if not publishers and not trusted:
            if not self._open_when_unrestricted:
                raise BusinessError({resource: "not_trusted_algo"})
            return
        if publishers and WILDCARD not in publishers:
            owner = (algorithm.owner or "").lower()
            if not owner or owner not in {str(p).lower() for p in publishers}:
                raise BusinessError({resource: "not_trusted_algo_publisher"})
        if trusted:
            self._check_trusted_algorithms(resource, trusted, algorithm)

    @staticmethod
    def _check_trusted_algorithms(resource: str, trusted: list[Any], algorithm: _Algorithm) -> None:
        if any(not isinstance(entry, Mapping) or "did" not in entry for entry in trusted):
            raise BusinessError({resource: "no_publisherTrustedAlgorithms"})
        exact = [e for e in trusted if e["did"] == algorithm.did]
        wildcard = [e for e in trusted if e["did"] == WILDCARD]
        candidates = exact + wildcard
        if not candidates:
            raise BusinessError({resource: "not_trusted_algo"})
        first_problem = None
        for entry in candidates:
            problem = _entry_mismatch(entry, algorithm)
            if problem is None:
                return
            first_problem = first_problem or problem
        raise BusinessError({resource: first_problem})

    @staticmethod
    def _no_order_twice(inputs: Sequence[PlannedInput], algorithm: PlannedAlgorithm) -> None:
        """One order pays for one input: the same transferTxId twice in a request is refused."""
        seen: set[str] = set()
        orders: list[PlannedOrder] = [*inputs, *([algorithm.order] if algorithm.order else [])]
        for order in orders:
            if order.transfer_tx_id is None:
                continue
            if order.transfer_tx_id in seen:
                raise BusinessError({f"{order.resource}.transferTxId": "duplicate"})
            seen.add(order.transfer_tx_id)


def _entry_mismatch(entry: Mapping[str, Any], algorithm: _Algorithm) -> Optional[str]:
    """Why a trusted-algorithm entry does not accept the algorithm, or None if it does."""
    service_id = entry.get("serviceId")
    if service_id not in (None, "", WILDCARD) and str(service_id) != algorithm.service_id:
        return "not_trusted_algo"
    files = entry.get("filesChecksum")
    if files and files != WILDCARD and str(files).lower() != algorithm.files_checksum():
        return "algorithm_file_checksum_mismatch"
    container = entry.get("containerSectionChecksum")
    if container and container != WILDCARD and str(container).lower() != algorithm.container_checksum:
        return "algorithm_container_checksum_mismatch"
    return None


def _allows_network(service: Mapping[str, Any]) -> bool:
    """allowNetworkAccess of a compute service, exactly `true`; anything else means no."""
    compute = service.get("compute")
    return service.get("type") == "compute" and isinstance(compute, Mapping) and compute.get("allowNetworkAccess") is True


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _timeout(service: Mapping[str, Any]) -> int:
    try:
        return max(0, int(service.get("timeout") or 0))
    except (TypeError, ValueError):
        return 0


def _container_fields(container: Mapping[str, Any]) -> dict[str, str]:
    return {key: str(container.get(key) or "") for key in ("entrypoint", "image", "tag", "checksum")}


__all__ = [
    "AssetLike", "ComputePlan", "ComputeValidator", "FileHasher", "S3Places", "PlannedAlgorithm", "PlannedInput",
    "PlannedOrder", "Resolved", "access_denied_code", "apply_consumer_parameters", "consumable_error",
    "container_error", "container_section_checksum", "content_checksum", "find_service",
    "input_resource", "joined_files_checksum", "same_endpoint",
]
