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
| <input>.fileObject | raw inputs are taken by free compute only | (ours) a raw input outside Ocean Node's free compute |
| <input or algorithm>.userdata.<name> | missing / invalid | (ours, as ocean-node) userdata against consumerParameters |

The rules themselves live by what they decide: `compute.input_rules` (datasets and services,
credentials, S3 places, consumer parameters), `compute.algorithm_rules` (trusted publishers and
algorithms, checksums), `compute.container_rules` (the container section and its registry); this
module applies them in the original's order and builds the `compute.plan.ComputePlan`.

The image is pinned at start too (issue 22): its tag resolved to the manifest digest through its
registry (`compute.image_digests`), a DDO checksum that differs refused, and the plan's container
carries the `digest` the job definition runs (`PlannedAlgorithm.image`).


Algorithm files are pinned whenever a job will run (issue 10): a paid start and a free start
alike (one `Purpose` each, one code path) hash every file of the algorithm (published, or raw
with a url or fileObject) once, and the plan carries the digests (`PlannedAlgorithm.checksums`,
the manifest's `algorithm.checksums`); the runner places only files that still match them. The
same download answers a trusted entry's filesChecksum, so a start downloads the algorithm once.

Raw inputs (Ocean Node's `fileObject`: the consumer's own file, no DID) are taken by free compute
only (`Purpose.raw_inputs`): no order pays for them and no data owner's rules apply to them; they
are fetched by the runner under the same network rules as every download, and a job with one
never reaches the network.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

from chalicelib.compute.algorithm_rules import (
    AlgorithmFacts,
    FileHasher,
    check_algorithm_allowed,
    container_section_checksum,
)
from chalicelib.compute.container_rules import AlgorithmContainer, check_container, container_fields
from chalicelib.compute.image_digests import ImageDigests, RegistryLogin
from chalicelib.compute.environments import Environment
from chalicelib.compute.input_rules import (
    S3Places,
    allows_network,
    apply_consumer_parameters,
    as_list,
    check_s3_places,
    consumable_error,
    find_service,
    nft_field,
    same_endpoint,
    service_timeout,
)
from chalicelib.compute.plan import (
    ComputePlan,
    FileObject,
    PlannedAlgorithm,
    PlannedInput,
    PlannedOrder,
    Resolved,
    input_resource,
    raw_input_name,
)
from chalicelib.compute.requests import (
    AlgorithmInput,
    ComputeStartRequest,
    DatasetInput,
    FreeDatasetInput,
    InitializeComputeRequest,
)
from chalicelib.config import ImageRegistries
from chalicelib.errors import BusinessError

RequestedInput = Union[DatasetInput, FreeDatasetInput]


@dataclass(frozen=True)
class Purpose:
    """What a plan is for, which decides the few rules that differ between the entry points."""

    runs: bool  # a job starts from it: the algorithm's files are downloaded now and pinned
    ordered: bool  # orders pay for it: a published algorithm comes with its transferTxId
    raw_inputs: bool = False  # datasets may be the consumer's own files (`fileObject`)


START = Purpose(runs=True, ordered=True)
FREE = Purpose(runs=True, ordered=False, raw_inputs=True)
INITIALIZE = Purpose(runs=False, ordered=False)


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
        image_digests: Optional[ImageDigests] = None,
    ):
        """`registries`: where algorithm images may come from (ALGORITHM_REGISTRIES), checked with
        the container fields, before any order is checked or anything reserved. `image_digests`
        pins a start's image to its manifest digest (compute.image_digests); None: not pinned."""
        self._provider_address = provider_address
        self._environments = environments
        self._provider_url = provider_url
        self._files_checksum = files_checksum
        self._clock = clock
        self._open_when_unrestricted = open_when_unrestricted
        self._s3_sources = s3_sources
        self._registries = registries
        self._image_digests = image_digests

    # ---- entry points

    def validate_start(
        self,
        request: ComputeStartRequest,
        datasets: Sequence[Resolved],
        algorithm: Optional[Resolved] = None,
        registry_login: Optional[RegistryLogin] = None,
    ) -> ComputePlan:
        """All rules of POST /compute except the orders on chain. `datasets` align with
        request.all_datasets; `algorithm` is the resolved algorithm DID (ignored for meta);
        `registry_login`: the consumer's for the image's registry (compute.registry_auth)."""
        return self._plan(request.consumerAddress, request.environment, request.all_datasets, datasets,
                          request.algorithm, algorithm, START, registry_login=registry_login)

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
                          request.algorithm, algorithm, INITIALIZE)
        return replace(plan, valid_until=valid_until)

    def validate_free(
        self,
        consumer: str,
        environment_id: str,
        requested: Sequence[FreeDatasetInput],
        datasets: Sequence[Resolved],
        algorithm_request: AlgorithmInput,
        algorithm: Optional[Resolved] = None,
        admit: Optional[Callable[[ComputePlan], None]] = None,
        registry_login: Optional[RegistryLogin] = None,
    ) -> ComputePlan:
        """Every rule of a start except the orders (Ocean Node's free compute), raw inputs
        allowed, the algorithm pinned as a paid start pins it. `admit` judges the plan before the
        algorithm is downloaded (the free tier's publishers), so a refused start downloads nothing."""
        return self._plan(consumer, environment_id, requested, datasets, algorithm_request, algorithm, FREE, admit,
                          registry_login=registry_login)

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
        requested: Sequence[RequestedInput],
        resolved: Sequence[Resolved],
        algo_request: AlgorithmInput,
        algo_resolved: Optional[Resolved],
        purpose: Purpose,
        admit: Optional[Callable[[ComputePlan], None]] = None,
        *,
        registry_login: Optional[RegistryLogin] = None,
    ) -> ComputePlan:
        if len(requested) != len(resolved):
            raise ValueError("one Resolved per requested dataset, main dataset first")
        environment = self.environment(environment_id)
        algorithm, algo_facts = self._algorithm(consumer, algo_request, algo_resolved, environment, purpose)
        algo_facts.cached = not purpose.runs
        inputs = tuple(
            self._raw_input(index, item, purpose) if getattr(item, "is_raw", False)
            else self._input(index, consumer, item, found, environment, algo_facts)
            for index, (item, found) in enumerate(zip(requested, resolved))
        )
        self._no_order_twice(inputs, algorithm)
        chain_id = self._chain_of(inputs, algorithm, environment)
        inputs = tuple(replace(item, chain_id=chain_id) if item.is_raw else item for item in inputs)
        if purpose.runs and self._image_digests is not None:
            # before the files: a registry that refuses or does not answer costs no download
            AlgorithmContainer.from_metadata(algorithm.container)  # a well-formed name before any request
            image = self._image_digests.pin(algorithm.container, registry_login)
            algorithm = replace(algorithm, container={**algorithm.container, "digest": image.digest}, image=image)
        plan = ComputePlan(environment, chain_id, self._provider_address, inputs, algorithm)
        if admit is not None:
            admit(plan)
        if purpose.runs and algorithm.files:
            # last, so a refused start downloads nothing; reuses a trusted entry's download
            plan = replace(plan, algorithm=replace(algorithm, checksums=algo_facts.digests()))
        return plan

    @staticmethod
    def _chain_of(inputs: Sequence[PlannedInput], algorithm: PlannedAlgorithm, environment: Environment) -> int:
        """The job's chain: the first published dataset's, else the published algorithm's, else
        (raw inputs and a raw algorithm only) the environment's first."""
        for item in inputs:
            if not item.is_raw:
                return item.chain_id
        if algorithm.order is not None:
            return algorithm.order.chain_id
        return environment.chain_ids[0]

    @staticmethod
    def _raw_input(index: int, item: RequestedInput, purpose: Purpose) -> PlannedInput:
        """The consumer's own file (free compute only): nothing to resolve, order or trust."""
        resource = input_resource(index)
        file_object = getattr(item, "fileObject", None)
        if not purpose.raw_inputs or file_object is None:
            raise BusinessError({f"{resource}.fileObject": "raw inputs are taken by free compute only"})
        return PlannedInput(
            resource=resource, did=raw_input_name(index), chain_id=0, service_id="", service_index=-1,
            service_type="raw", datatoken="", timeout=0, transfer_tx_id=None, asset=None, index=index,
            files=(file_object.model_dump(exclude_none=True),), userdata=dict(item.userdata or {}),
        )

    def _input(
        self,
        index: int,
        consumer: str,
        item: RequestedInput,
        found: Resolved,
        environment: Environment,
        algorithm: AlgorithmFacts,
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
        check_s3_places(self._s3_sources, resource, found.files, nft_field(asset, "owner"))
        self.environment(environment.id, [asset.chain_id])
        if service_type == "compute":
            check_algorithm_allowed(resource, service.get("compute"), algorithm, self._open_when_unrestricted)
        userdata = apply_consumer_parameters(resource, service.get("consumerParameters"), item.userdata)
        return PlannedInput(
            resource=resource, did=asset.did, chain_id=asset.chain_id, service_id=item.serviceId,
            service_index=service_index, service_type=str(service_type),
            datatoken=str(service.get("datatokenAddress", "")), timeout=service_timeout(service),
            transfer_tx_id=item.transferTxId, asset=asset, index=index,
            files=tuple(found.files), userdata=userdata, allow_network=allows_network(service),
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
        purpose: Purpose,
    ) -> tuple[PlannedAlgorithm, AlgorithmFacts]:
        if request.meta is not None:
            return self._raw_algorithm(request)
        if not request.documentId:
            raise BusinessError({"algorithm": "missing_meta_documentId"})
        asset = found.asset if found else None
        if asset is None:
            raise BusinessError({"algorithm.documentId": "did_not_found"})
        metadata = asset.ddo.get("metadata")
        if not isinstance(metadata, Mapping) or metadata.get("type") != "algorithm":
            raise BusinessError({"algorithm": "not_algo"} if purpose.runs else "DID is not a valid algorithm")
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
        check_container(container, self._registries)
        if not found or not found.files:
            raise BusinessError({"algorithm": "file_unavailable"})
        check_s3_places(self._s3_sources, "algorithm", found.files, nft_field(asset, "owner"))
        if purpose.ordered and not request.transferTxId:
            raise BusinessError({"algorithm.transferTxId": "missing"})
        self.environment(environment.id, [asset.chain_id])
        parameters = [*as_list(service.get("consumerParameters")), *as_list(algorithm_section.get("consumerParameters"))]
        userdata = apply_consumer_parameters("algorithm", parameters, request.userdata)
        order = PlannedOrder(
            resource="algorithm", did=asset.did, chain_id=asset.chain_id, service_id=request.serviceId,
            service_index=service_index, service_type=str(service.get("type")),
            datatoken=str(service.get("datatokenAddress", "")), timeout=service_timeout(service),
            transfer_tx_id=request.transferTxId, asset=asset,
        )
        section = container_fields(container)
        planned = PlannedAlgorithm(
            did=asset.did, order=order, rawcode="", files=tuple(found.files), container=section,
            userdata=userdata, algocustomdata=dict(request.algocustomdata or {}),
        )
        facts = AlgorithmFacts(
            raw=False, did=asset.did, service_id=request.serviceId, owner=nft_field(asset, "owner"),
            container_checksum=container_section_checksum(section), files=tuple(found.files),
            hasher=self._files_checksum,
        )
        return planned, facts

    def _raw_algorithm(self, request: AlgorithmInput) -> tuple[PlannedAlgorithm, AlgorithmFacts]:
        meta = request.meta
        assert meta is not None
        if not meta.url and not meta.rawcode and request.fileObject is None:
            raise BusinessError({"algorithm": "meta_oneof_url_rawcode_remote"})
        container = meta.container.model_dump()
        check_container(container, self._registries)
        files: tuple[FileObject, ...] = ()
        if meta.url:
            files = ({"type": "url", "url": meta.url, "method": "GET"},)
        elif request.fileObject is not None:
            files = (request.fileObject.model_dump(exclude_none=True),)
        planned = PlannedAlgorithm(
            did="", order=None, rawcode=meta.rawcode, files=files, container=container_fields(container),
            userdata=dict(request.userdata or {}), algocustomdata=dict(request.algocustomdata or {}),
        )
        return planned, AlgorithmFacts(raw=True, files=files, hasher=self._files_checksum)

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
