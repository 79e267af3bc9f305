"""Request models of the Ocean Node routes, with the field names ocean.js 8 sends
(`HttpProvider.initializeCompute`, `computeStart`, `freeComputeStart`, `computeStop`,
`computeStatus`, `getComputeResultUrl`, `computeStreamableLogs`, `generateAuthToken`,
`invalidateAuthToken`).

A signed call carries `consumerAddress` (or `address`), `nonce` and `signature` over
`address + nonce + command`; with an `Authorization: <jwt>` header ocean.js sends neither
nonce nor signature, so both are optional here and the authenticator decides.
"""
from __future__ import annotations

from typing import Annotated, Any, ClassVar, Optional, Union

from pydantic import (
    AfterValidator, BeforeValidator, ConfigDict, Field, StrictInt, StringConstraints, field_validator, model_validator,
)

from chalicelib.compute.requests import (
    MAX_ADDITIONAL_DATASETS,
    AlgorithmInput,
    _index_text,
    DatasetInput,
    EnvironmentId,
    FreeDatasetInput,
    InitializeDatasetInput,
    JobId,
    TxId,
    _invalid,
)
from chalicelib.compute.image_digests import RegistryLogin
from chalicelib.compute.job_options import JobMetadata, JobOptions, Viewers
from chalicelib.schemas import Address, Nonce, Params, SignedParams

MAX_RESOURCES = 8
COMMANDS = {
    "start": "startCompute",
    "free": "freeStartCompute",
    "stop": "stopCompute",
    "result": "getComputeResult",
    "logs": "getComputeStreamableLogs",
    "token": "createAuthToken",
    "invalidate": "invalidateAuthToken",
}

ResourceId = Annotated[str, StringConstraints(min_length=1, max_length=32)]


def _seconds(value: Any) -> Any:
    """ocean.js sends durations as numbers, sometimes as numeric text; fractions are floored."""
    if isinstance(value, bool):
        raise _invalid("must be a number of seconds")
    if isinstance(value, str) and value.strip().replace(".", "", 1).isdigit():
        value = float(value)
    if isinstance(value, float) and value == value and value not in (float("inf"), float("-inf")):
        value = int(value)
    return value


# ocean.js's initializeCompute puts its `validUntil` (a Unix time) in maxJobDuration; Ocean Node
# caps any duration at the environment's maximum, and so do we: accept numbers that large.
Seconds = Annotated[int, BeforeValidator(_seconds), Field(ge=0, le=2**53, description="Seconds (capped by the environment).")]


class ResourceRequest(Params):
    """One requested resource, Ocean Node's `{id, amount}` (cpu in cores, ram and disk in GB)."""

    id: ResourceId
    amount: Annotated[float, Field(ge=0, le=10**6, allow_inf_nan=False)]


Resources = Annotated[Optional[list[ResourceRequest]], Field(default=None, max_length=MAX_RESOURCES)]
Datasets = Annotated[list[InitializeDatasetInput], Field(min_length=1, max_length=1 + MAX_ADDITIONAL_DATASETS)]
PaidDatasets = Annotated[list[DatasetInput], Field(min_length=1, max_length=1 + MAX_ADDITIONAL_DATASETS)]
FreeDatasets = Annotated[list[FreeDatasetInput], Field(min_length=1, max_length=1 + MAX_ADDITIONAL_DATASETS)]


def _no_raw_inputs(value: Any) -> Any:
    """Raw inputs (`fileObject`) are the consumer's own files, taken by free compute only: a
    paid job's every input is a published dataset paid with its order."""
    if isinstance(value, list) and any(isinstance(item, dict) and item.get("fileObject") is not None for item in value):
        raise _invalid("raw inputs (fileObject) are taken by freeCompute only; a paid job's datasets are published ones")
    return value


class Payment(Params):
    """Ocean Node's `payment` (escrow): the chain and token the job is paid in (payments.paid_start)."""

    chainId: Optional[StrictInt] = None
    token: Optional[Annotated[str, StringConstraints(max_length=64)]] = None
    maxJobDuration: Optional[Seconds] = None
    resources: Resources = None


class NodeSigned(SignedParams):
    """A call signed over `address + nonce + command` (or proven by `Authorization`)."""

    consumerAddress: Address
    nonce: Optional[Nonce] = None


def _datasets_or_dataset(data: Any) -> Any:
    """ocean.js sends `datasets` and, for old providers, `dataset` = datasets[0]; either will do."""
    if isinstance(data, dict) and "dataset" in data:
        data = dict(data)
        dataset = data.pop("dataset")
        if not data.get("datasets") and isinstance(dataset, dict):
            data["datasets"] = [dataset]
    return data


# A start option this provider does not honour is refused with a 400 naming it, never dropped:
# Ocean Node's `output`, `outputBucketId` and `queueMaxWaitTime` among them (ocean.js 8 sends
# them when given); `policyServer` by its own validator.
STRICT = ConfigDict(extra="forbid", str_max_length=65536)
MAX_REGISTRY_AUTH = 16384  # hex of ECIES over a login of compute.registry_auth.MAX_LOGIN_CHARS
NO_POLICY_SERVER = "not supported: this provider has no policy server configured"


def _no_policy_server(value: Any) -> Any:
    """Ocean Node hands a start carrying `policyServer` to its policy server (POLICY_SERVER_URL),
    which then decides instead of the DDO's credentials; this provider has none to ask, so the
    option is refused by name rather than dropped."""
    if value is not None:
        raise _invalid(NO_POLICY_SERVER)
    return value


class JobOptionFields(NodeSigned):
    """Ocean Node's options a start stores with its job (compute.job_options)."""

    metadata: Optional[JobMetadata] = None
    additionalViewers: Optional[Viewers] = None
    policyServer: Optional[Any] = Field(default=None, description="Refused: " + NO_POLICY_SERVER + ".")
    encryptedDockerRegistryAuth: Optional[Annotated[str, StringConstraints(max_length=MAX_REGISTRY_AUTH)]] = Field(
        default=None, description="The consumer's login to the algorithm image's registry, ECIES-encrypted to the "
                                  'provider key (0x-hex) JSON {"username", "password"} or {"auth": base64 of '
                                  "username:password}: pins the image and pulls it (a registry ALGORITHM_REGISTRIES "
                                  "allows), kept in Secrets Manager only while the job exists; 400 naming "
                                  "this field when it cannot be read; refused where no image is pulled (local).")

    _policy = field_validator("policyServer", mode="before")(_no_policy_server)

    def job_options(self, owner: str, registry_login: Optional[RegistryLogin] = None) -> JobOptions:
        """`registry_login`: `encryptedDockerRegistryAuth` as the edge decrypted it."""
        return JobOptions.of(self.metadata, self.additionalViewers, owner, registry_login)


class FreeComputeRequest(JobOptionFields):
    """POST /node/api/services/freeCompute, command `freeStartCompute`: no payment, no order."""

    model_config = STRICT
    command: ClassVar[str] = COMMANDS["free"]
    environment: EnvironmentId
    datasets: FreeDatasets
    algorithm: AlgorithmInput
    resources: Resources = None
    maxJobDuration: Optional[Seconds] = None

    _from_dataset = model_validator(mode="before")(_datasets_or_dataset)


class PaidComputeRequest(JobOptionFields):
    """POST /node/api/services/compute, command `startCompute`: datasets (and a published
    algorithm) paid with orders, as v4's start."""

    model_config = STRICT
    command: ClassVar[str] = COMMANDS["start"]
    environment: EnvironmentId
    datasets: PaidDatasets
    algorithm: AlgorithmInput
    resources: Resources = None
    maxJobDuration: Optional[Seconds] = None
    chainId: Optional[StrictInt] = None
    payment: Optional[Payment] = None

    _from_dataset = model_validator(mode="before")(_datasets_or_dataset)
    _published_only = field_validator("datasets", mode="before")(_no_raw_inputs)


class NodeInitializeRequest(Params):
    """POST /node/api/services/initializeCompute (unsigned), Ocean Node's shape."""

    datasets: Datasets
    algorithm: AlgorithmInput
    environment: EnvironmentId
    consumerAddress: Address
    payment: Optional[Payment] = None
    maxJobDuration: Optional[Seconds] = None

    _published_only = field_validator("datasets", mode="before")(_no_raw_inputs)


class NodeStatusQuery(Params):
    """GET /node/api/services/compute (status): unsigned, as ocean.js sends it."""

    consumerAddress: Address
    jobId: Optional[JobId] = None
    agreementId: Optional[Annotated[str, StringConstraints(max_length=256)]] = None


class NodeStopQuery(NodeSigned):
    """PUT /node/api/services/compute?consumerAddress&nonce&signature&jobId, command `stopCompute`."""

    command: ClassVar[str] = COMMANDS["stop"]
    jobId: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    agreementId: Optional[Annotated[str, StringConstraints(max_length=256)]] = None


class NodeResultQuery(NodeSigned):
    """GET /node/api/services/computeResult, command `getComputeResult`; `index` as in v4."""

    command: ClassVar[str] = COMMANDS["result"]
    jobId: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    index: Annotated[Union[StrictInt, Annotated[str, StringConstraints(max_length=16)]], AfterValidator(_index_text),
                     Field(description="Index of the result in the status object's `results` (0-based).")]

    @property
    def index_value(self) -> int:
        return int(self.index)


class NodeLogsQuery(NodeSigned):
    """GET /node/api/services/computeStreamableLogs, command `getComputeStreamableLogs`."""

    command: ClassVar[str] = COMMANDS["logs"]
    jobId: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class _AddressSigned(NodeSigned):
    """The token calls name the signer `address`; a signature is mandatory."""

    consumerAddress: Optional[Address] = None  # type: ignore[assignment]
    address: Address
    nonce: Nonce
    signature: Annotated[str, StringConstraints(pattern=r"^(0x)?[0-9a-fA-F]{130}$")]

    signer_field: ClassVar[str] = "address"
    message_fields: ClassVar[tuple[str, ...]] = ("address",)
    allow_token: ClassVar[bool] = False


class NodeCreateTokenRequest(_AddressSigned):
    """POST /node/api/services/auth/token {address, signature, nonce[, validUntil]}, command `createAuthToken`."""

    command: ClassVar[str] = COMMANDS["token"]

    @classmethod
    def other_commands(cls) -> tuple[str, ...]:
        """ocean.js 9 signs `address + nonce + createAuthToken + <the node's peer id>`."""
        from chalicelib import services

        return (cls.command + services.provider_peer_id(),)

    validUntil: Optional[Union[StrictInt, Annotated[str, StringConstraints(pattern=r"^[0-9]{1,13}$")]]] = Field(
        default=None, description="Expiry (Unix seconds or ms); default and cap: the provider's maximum token lifetime.")


class DdoPath(Params):
    """GET /node/api/aquarius/assets/ddo/{did} (and .../metadata/{did})."""

    did: Annotated[str, StringConstraints(pattern=r"^did:op:[0-9a-fA-F]{64}$")]


class NodeValidateDdoRequest(_AddressSigned):
    """POST /node/api/aquarius/assets/ddo/validate {ddo, publisherAddress, nonce, signature},
    command `validateDDO`: ocean.js's createAsset (and so Ocean's CLI's publish) asks it for the
    hash it sets on the NFT beside a DDO encrypted for this provider."""

    command: ClassVar[str] = "validateDDO"
    signer_field: ClassVar[str] = "publisherAddress"
    message_fields: ClassVar[tuple[str, ...]] = ("publisherAddress",)
    address: Optional[Address] = None  # type: ignore[assignment]
    publisherAddress: Address
    ddo: dict[str, Any]


class DirectCommandRequest(Params):
    """POST /node/directCommand: Ocean Node's command envelope; only `status` is served here."""

    command: Annotated[str, StringConstraints(min_length=1, max_length=64)]


class NodeInvalidateTokenRequest(_AddressSigned):
    """POST /node/api/services/auth/token/invalidate {address, signature, nonce, token}: ocean.js
    8 signs `address + nonce`, with no command; ocean.js 9 `address + nonce + invalidateAuthToken`."""

    command: ClassVar[str] = ""
    token: Annotated[str, StringConstraints(min_length=1, max_length=4096)]

    @classmethod
    def other_commands(cls) -> tuple[str, ...]:
        return (COMMANDS["invalidate"],)


__all__ = [
    "COMMANDS", "DdoPath", "DirectCommandRequest", "FreeComputeRequest", "NodeCreateTokenRequest", "NodeInitializeRequest", "NodeInvalidateTokenRequest",
    "NodeLogsQuery", "NodeResultQuery", "NodeSigned", "NodeStatusQuery", "NodeStopQuery", "NodeValidateDdoRequest",
    "PaidComputeRequest",
    "Payment", "ResourceRequest", "TxId",
]
