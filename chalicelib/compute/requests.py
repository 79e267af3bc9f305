"""Request models of the compute routes (DESIGN §3.2, §3.4).

Field names and shapes are those ocean.py (`DataServiceProvider._prepare_compute_payload`,
`initialize_compute`, `_send_compute_request`, `compute_job_result`) and ocean.js
(`ProviderInstance.computeStart`, `initializeCompute`, `computeStop`, `computeDelete`,
`computeStatus`, `getComputeResultUrl`) send. Every string and list is bounded; userdata and
algocustomdata are JSON objects (or a JSON text of one, as ocean.py sends userdata on
downloads) of at most MAX_JSON_BYTES once serialized.

These models only check shapes. The rules that need the DDOs (service types, trusted
algorithms, raw algorithms, environments) live in `chalicelib.compute.validation` and answer
with the original Provider's error codes.
"""
from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictInt,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from chalicelib.compute.paging import MAX_CURSOR_CHARS, Cursor
from chalicelib.http import MAX_JSON_DEPTH, within_depth
from chalicelib.schemas import Address, Nonce, Params, SignedParams

MAX_ADDITIONAL_DATASETS = 10
MAX_JSON_BYTES = 16 * 1024
MAX_RAWCODE_CHARS = 256 * 1024
MAX_RESULT_INDEX_DIGITS = 6
MAX_FILE_HEADERS = 16

DocumentId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=256, pattern=r"^did:[a-z0-9]+:[A-Za-z0-9._:%-]+$"),
    Field(description="The asset's DID, e.g. did:op:<64 hex>."),
]
LooseDocumentId = Annotated[str, StringConstraints(max_length=256)]
"""documentId as a filter (status, stop, delete): any text, since it is only compared."""
JobId = Annotated[str, StringConstraints(max_length=256)]
EnvironmentId = Annotated[str, StringConstraints(min_length=1, max_length=256)]


def _invalid(message: str) -> PydanticCustomError:
    """A field error whose message is shown as is (ValueError would prefix "Value error, ")."""
    return PydanticCustomError("value_error", message)


def _service_id_text(value: Any) -> Any:
    """Service ids are strings in DDOs; the original also takes a JSON number (e.g. 0)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


ServiceId = Annotated[
    str,
    BeforeValidator(_service_id_text),
    StringConstraints(min_length=1, max_length=256),
    Field(description="The id of the service in the asset's DDO."),
]


def _tx_id(value: str) -> str:
    """A transaction hash, 0x-prefixed and lower case whatever the client's hex library did."""
    return "0x" + value.removeprefix("0x").lower()


TxId = Annotated[
    str,
    StringConstraints(pattern=r"^(0x)?[0-9a-fA-F]{64}$"),
    AfterValidator(_tx_id),
    Field(description="Hash of the order transaction (startOrder or reuseOrder)."),
]


def _json_object(value: Any) -> Any:
    """A JSON object, or a JSON text holding one; bounded once serialized."""
    if isinstance(value, str):
        if len(value) > MAX_JSON_BYTES:
            raise _invalid(f"must be at most {MAX_JSON_BYTES} bytes of JSON")
        if not within_depth(value):
            raise _invalid(f"must be a JSON object nested at most {MAX_JSON_DEPTH} levels deep")
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            raise _invalid("must be a JSON object") from None
    if not isinstance(value, dict):
        raise _invalid("must be a JSON object")
    if len(json.dumps(value, separators=(",", ":")).encode()) > MAX_JSON_BYTES:
        raise _invalid(f"must be at most {MAX_JSON_BYTES} bytes of JSON")
    return value


JsonObject = Annotated[dict[str, Any], BeforeValidator(_json_object)]


def _none_as_empty_list(value: Any) -> Any:
    return [] if value is None else value


# -- raw file objects: the consumer's own files (Ocean Node's `fileObject`) -----------------------

RAW_FILE_TYPES = ("url", "ipfs", "arweave")
_STRICT = ConfigDict(extra="forbid", str_max_length=4096)


def _plain_file_object(value: Any) -> Any:
    """Only a file object in clear, of a kind fetched from the public network. An encrypted one
    (Ocean Node decrypts a hex string with its key) is refused: every published asset's encrypted
    `files` are public on chain, so decrypting one for a consumer would hand out the data of an
    asset nobody ordered. `s3` and `ftp` objects carry credentials or reach places only the
    operator may name (S3_FILE_SOURCES), so they are refused too."""
    if isinstance(value, str):
        raise _invalid("an encrypted fileObject is not taken here: give the file object itself "
                       f"({', '.join(RAW_FILE_TYPES)})")
    if isinstance(value, dict) and value.get("type") not in RAW_FILE_TYPES:
        raise _invalid(f"fileObject.type must be one of {', '.join(RAW_FILE_TYPES)}")
    return value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


HeaderName = Annotated[str, StringConstraints(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")]
HeaderValue = Annotated[str, StringConstraints(pattern=r"^[\x20-\x7e\t]{0,2048}$")]


class UrlFile(Params):
    """A file at an http(s) URL, fetched like every download (chalicelib.netsafe: no private,
    loopback or metadata-service address, directly, by DNS or by redirect)."""

    model_config = _STRICT
    type: Literal["url"]
    url: Annotated[str, StringConstraints(max_length=2048, pattern=r"^[hH][tT][tT][pP][sS]?://[^\s]+$")]
    method: Annotated[Literal["GET", "POST"], BeforeValidator(_upper)] = "GET"
    headers: Optional[Annotated[dict[HeaderName, HeaderValue], Field(max_length=MAX_FILE_HEADERS)]] = None


def _no_dot_segments(value: str) -> str:
    """A path inside the CID's DAG, never out of it through the gateway."""
    if {".", ".."} & set(value.split("/")):
        raise _invalid("must not contain . or .. segments")
    return value


class IpfsFile(Params):
    """A file by IPFS CID, fetched through the operator's gateway."""

    model_config = _STRICT
    type: Literal["ipfs"]
    hash: Annotated[str, StringConstraints(max_length=512, pattern=r"^[A-Za-z0-9]+(/[A-Za-z0-9._~-]+)*$"),
                    AfterValidator(_no_dot_segments)]


class ArweaveFile(Params):
    """A file by Arweave transaction id, fetched through the operator's gateway."""

    model_config = _STRICT
    type: Literal["arweave"]
    transactionId: Annotated[str, StringConstraints(max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]


RawFileObject = Annotated[
    Annotated[Union[UrlFile, IpfsFile, ArweaveFile], Discriminator("type")],
    BeforeValidator(_plain_file_object),
    Field(description="A file object in clear (url, ipfs or arweave): the consumer's own file."),
]


class DatasetInput(Params):
    """One input of a start request: the main `dataset` or an additional one."""

    documentId: DocumentId
    serviceId: ServiceId
    transferTxId: TxId
    userdata: Optional[JsonObject] = None


class InitializeDatasetInput(DatasetInput):
    """An input of initializeCompute: not ordered yet, or an order to reuse."""

    transferTxId: Optional[TxId] = None


class FreeDatasetInput(Params):
    """An input of a free job (Ocean Node's freeCompute): a published dataset (documentId and
    serviceId, no order), or the consumer's own file (`fileObject`, no DID). Ocean's CLI sends
    documentId and serviceId "" beside a fileObject: empty means absent."""

    documentId: Optional[DocumentId] = None
    serviceId: Optional[ServiceId] = None
    transferTxId: Optional[TxId] = None
    fileObject: Optional[RawFileObject] = None
    userdata: Optional[JsonObject] = None

    @model_validator(mode="before")
    @classmethod
    def empty_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(data.get(name) == "" for name in ("documentId", "serviceId")):
            return {key: value for key, value in data.items() if not (key in ("documentId", "serviceId") and value == "")}
        return data

    @model_validator(mode="after")
    def one_source(self) -> "FreeDatasetInput":
        if self.fileObject is not None and (self.documentId or self.serviceId):
            raise _invalid("give documentId and serviceId, or fileObject, not both")
        if self.fileObject is None and not (self.documentId and self.serviceId):
            raise _invalid("documentId and serviceId (a published dataset) or fileObject (your own file) is required")
        return self

    @property
    def is_raw(self) -> bool:
        return self.fileObject is not None


class AlgorithmContainer(Params):
    """The Docker image that runs a raw algorithm; emptiness is a business rule (original codes)."""

    entrypoint: Annotated[str, StringConstraints(max_length=1024)] = ""
    image: Annotated[str, StringConstraints(max_length=512)] = ""
    tag: Annotated[str, StringConstraints(max_length=128)] = ""
    checksum: Annotated[str, StringConstraints(max_length=128)] = ""


def _json_text_object(value: Any) -> Any:
    """The original accepts `meta` as a JSON text too."""
    if isinstance(value, str):
        if len(value) > MAX_RAWCODE_CHARS + 64 * 1024:
            raise _invalid("meta is too large")
        try:
            return json.loads(value)
        except ValueError:
            raise _invalid("must be a JSON object") from None
    return value


class AlgorithmMeta(Params):
    """A raw algorithm (DDO metadata.algorithm shape): code inline or at a URL, and its image."""

    rawcode: Annotated[str, StringConstraints(max_length=MAX_RAWCODE_CHARS)] = ""
    url: Annotated[str, StringConstraints(max_length=2048)] = ""
    container: AlgorithmContainer
    language: Annotated[str, StringConstraints(max_length=64)] = ""
    version: Annotated[str, StringConstraints(max_length=64)] = ""
    format: Annotated[str, StringConstraints(max_length=64)] = ""


class AlgorithmInput(Params):
    """The algorithm: by documentId (a published algorithm with its own order) or raw `meta`
    (its container, and its code inline, at `meta.url`, or in `fileObject`, Ocean Node's form).

    One of the two is required. A `documentId` decides, as Ocean Node does: a published
    algorithm's container, files and trust come from its DDO, whatever `meta` rides along (Ocean's
    CLI sends the DDO's algorithm section beside it), so such `meta` is dropped here. A
    `fileObject` beside a `documentId` is refused: the code would not be the one the DDO names.
    """

    documentId: Optional[DocumentId] = None
    serviceId: Optional[ServiceId] = None
    transferTxId: Optional[TxId] = None
    meta: Annotated[Optional[AlgorithmMeta], BeforeValidator(_json_text_object)] = None
    fileObject: Optional[RawFileObject] = None
    userdata: Optional[JsonObject] = None
    algocustomdata: Optional[JsonObject] = None

    @model_validator(mode="before")
    @classmethod
    def published_wins(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("documentId") and data.get("meta") is not None:
            return {key: value for key, value in data.items() if key != "meta"}
        return data

    @model_validator(mode="after")
    def check_documentId_or_meta(self) -> "AlgorithmInput":
        if self.fileObject is not None:
            if self.documentId:
                raise _invalid("give algorithm.documentId or algorithm.fileObject, not both")
            if self.meta is None:
                raise _invalid("algorithm.meta (its container) is required with algorithm.fileObject")
            if self.meta.rawcode or self.meta.url:
                raise _invalid("give the algorithm's code in one place: meta.rawcode, meta.url or fileObject")
        if self.meta is None and not self.documentId:
            raise _invalid("one of algorithm.documentId or algorithm.meta is required")
        return self

    @property
    def is_raw(self) -> bool:
        return self.meta is not None


AdditionalDatasets = Annotated[
    list[DatasetInput],
    BeforeValidator(_none_as_empty_list),
    Field(default_factory=list, max_length=MAX_ADDITIONAL_DATASETS),
]


class ComputeStartRequest(SignedParams):
    """POST /api/services/compute, signed by consumerAddress over consumerAddress + dataset.documentId.

    ocean.js sends `additionalDatasets`, ocean.py `additionalInputs`: either is accepted, not
    two different lists. `signature` may be replaced by an AuthToken header; `nonce` may not.
    """

    consumerAddress: Address
    environment: EnvironmentId
    dataset: DatasetInput
    algorithm: AlgorithmInput
    additionalDatasets: AdditionalDatasets
    additionalInputs: AdditionalDatasets

    @field_validator("additionalInputs")
    @classmethod
    def check_one_list(cls, value: list[DatasetInput], info: ValidationInfo) -> list[DatasetInput]:
        other = info.data.get("additionalDatasets")
        if value and other and value != other:
            raise _invalid("give additional datasets in additionalDatasets or additionalInputs, not both")
        return value

    message_fields: ClassVar[tuple[str, ...]] = ("consumerAddress", "dataset.documentId")

    @property
    def additional_datasets(self) -> list[DatasetInput]:
        return self.additionalDatasets or self.additionalInputs

    @property
    def all_datasets(self) -> list[DatasetInput]:
        """The main dataset first, then the additional ones: the order of job inputs."""
        return [self.dataset, *self.additional_datasets]


class ComputeSettings(Params):
    env: EnvironmentId
    validUntil: Annotated[
        Union[StrictInt, Annotated[str, StringConstraints(pattern=r"^[0-9]{1,12}$")]],
        AfterValidator(int),
        Field(description="Unix time (seconds) until which the provider fee must be valid."),
    ]


class InitializeComputeRequest(Params):
    """POST /api/services/initializeCompute (unsigned): what to order before starting a job."""

    datasets: Annotated[list[InitializeDatasetInput], Field(min_length=1, max_length=1 + MAX_ADDITIONAL_DATASETS)]
    algorithm: AlgorithmInput
    compute: ComputeSettings
    consumerAddress: Address
    chainId: Optional[StrictInt] = None

    @property
    def all_datasets(self) -> list[InitializeDatasetInput]:
        return list(self.datasets)


class ComputeJobQuery(SignedParams):
    """GET /api/services/compute (status): the signature is optional (ocean.js sends none).

    Signed (or with an AuthToken) the caller sees its jobs in full; unsigned, a reduced view.
    Prefix: consumerAddress + jobId + documentId, a missing field counting as "".
    """

    consumerAddress: Address
    jobId: Optional[JobId] = None
    documentId: Optional[LooseDocumentId] = None
    nonce: Optional[Nonce] = None
    next: Optional[Annotated[str, StringConstraints(max_length=MAX_CURSOR_CHARS)]] = Field(
        default=None, description="Without jobId: continue with older jobs, from the Next-Page header of the "
                                  "previous answer (each answer holds the newest 50 jobs at most)")

    message_fields: ClassVar[tuple[str, ...]] = ("consumerAddress", "jobId", "documentId")
    # Unsigned, the caller gets the reduced view; with a signature or a token it must prove who
    # it is (the nonce then required and consumed), and a failure is an error, not the reduced view.
    proof_optional: ClassVar[bool] = True

    def cursor(self) -> Cursor | None:
        return Cursor.decode(self.next) if self.next else None


class ComputeJobSignedQuery(ComputeJobQuery):
    """PUT (stop, ComputeStopQuery) /api/services/compute: always signed (or AuthToken)."""

    nonce: Nonce
    proof_optional: ClassVar[bool] = False


class ComputeDeleteQuery(ComputeJobQuery):
    """DELETE /api/services/compute: always signed (or AuthToken). The nonce may be left out:
    ocean.js 3.x signs the next one (our nonce + 1) without sending it, and the authenticator
    then verifies and consumes exactly that one."""

    proof_optional: ClassVar[bool] = False


class ComputeStopQuery(ComputeJobSignedQuery):
    """PUT /api/services/compute (stop).

    ocean.js 3.x signs a stop over consumerAddress + jobId alone, without the nonce (the original
    Provider checks no more), so that message is accepted too, for one named job only. Such a
    signature can be replayed, but all a replay can do is stop that job, which its owner already
    asked for; stopping every job (no jobId) needs the full message with the nonce."""

    nonceless_fields: ClassVar[tuple[str, ...]] = ("consumerAddress", "jobId")


def _index_text(value: Union[int, str]) -> str:
    text = str(value)
    if not text.isascii() or not text.isdigit() or len(text) > MAX_RESULT_INDEX_DIGITS:
        raise _invalid(f"index must be a non-negative integer of at most {MAX_RESULT_INDEX_DIGITS} digits")
    return text


class ComputeResultQuery(SignedParams):
    """GET /api/services/computeResult, signed over consumerAddress + jobId + index.

    `index` keeps the text as sent (it is part of the signed message); `index_value` is the number.
    """

    consumerAddress: Address
    jobId: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    index: Annotated[
        Union[StrictInt, Annotated[str, StringConstraints(max_length=16)]],
        AfterValidator(_index_text),
        WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0, "maximum": 10**MAX_RESULT_INDEX_DIGITS - 1},
                                  {"type": "string", "pattern": rf"^[0-9]{{1,{MAX_RESULT_INDEX_DIGITS}}}$"}]}),
        Field(description="Index of the result in the job's `results` list (0-based)."),
    ]

    message_fields: ClassVar[tuple[str, ...]] = ("consumerAddress", "jobId", "index")

    @property
    def index_value(self) -> int:
        return int(self.index)
