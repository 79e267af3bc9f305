"""Request models of the data owner's routes (issue 22), both protocols: a v4 call signs its
fields then the nonce (`consumerAddress + jobId + nonce` ...), an Ocean Node call `address +
nonce + command`; both may carry a token instead, as every signed route (DESIGN §3.2, §3.8)."""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Optional, Union

from pydantic import AfterValidator, Field, StrictInt, StringConstraints, WithJsonSchema

from chalicelib.compute.paging import MAX_CURSOR_CHARS, Cursor
from chalicelib.compute.requests import MAX_RESULT_INDEX_DIGITS, DocumentId, _index_text
from chalicelib.node.requests import NodeSigned
from chalicelib.schemas import Address, SignedParams

JobIdText = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Index = Annotated[
    Union[StrictInt, Annotated[str, StringConstraints(max_length=16)]],
    AfterValidator(_index_text),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0, "maximum": 10**MAX_RESULT_INDEX_DIGITS - 1},
                              {"type": "string", "pattern": rf"^[0-9]{{1,{MAX_RESULT_INDEX_DIGITS}}}$"}]}),
    Field(description="Index of the result in the job's `results` (outputs and logs, 0-based)."),
]
Next = Optional[Annotated[str, StringConstraints(max_length=MAX_CURSOR_CHARS)]]
Decision = Literal["release", "refuse"]
COMMANDS = {"receipt": "getComputeReceipt", "audit": "getComputeAudit", "audit_result": "getComputeAuditResult",
            "release": "releaseComputeResults"}


class _Paged:
    next: Next

    def cursor(self) -> Cursor | None:
        return Cursor.decode(self.next) if self.next else None


class ReceiptQuery(SignedParams):
    """GET /api/services/computeReceipt: signed over consumerAddress + jobId + nonce."""

    consumerAddress: Address
    jobId: JobIdText
    message_fields: ClassVar[tuple[str, ...]] = ("consumerAddress", "jobId")


class AuditQuery(_Paged, SignedParams):
    """GET /api/services/computeAudit: signed by the dataset's NFT owner over consumerAddress +
    documentId + nonce."""

    consumerAddress: Address
    documentId: DocumentId
    next: Next = Field(default=None, description="Older jobs: the Next-Page header of the previous answer")
    message_fields: ClassVar[tuple[str, ...]] = ("consumerAddress", "documentId")


class AuditResultQuery(SignedParams):
    """GET /api/services/computeAuditResult: the dataset's NFT owner downloads an output or log
    of a job in its audit log (302), signed over consumerAddress + documentId + jobId + index + nonce."""

    consumerAddress: Address
    documentId: DocumentId
    jobId: JobIdText
    index: Index
    message_fields: ClassVar[tuple[str, ...]] = ("consumerAddress", "documentId", "jobId", "index")

    @property
    def index_value(self) -> int:
        return int(self.index)


class ReleaseRequest(SignedParams):
    """POST /api/services/computeRelease: the dataset's NFT owner releases or refuses a job's
    results, signed over consumerAddress + documentId + jobId + decision + nonce."""

    consumerAddress: Address
    documentId: DocumentId
    jobId: JobIdText
    decision: Decision = Field(description="release: the consumer may download the outputs; refuse: they are deleted")
    message_fields: ClassVar[tuple[str, ...]] = ("consumerAddress", "documentId", "jobId", "decision")


class NodeReceiptQuery(NodeSigned):
    command: ClassVar[str] = COMMANDS["receipt"]
    jobId: JobIdText


class NodeAuditQuery(_Paged, NodeSigned):
    command: ClassVar[str] = COMMANDS["audit"]
    documentId: DocumentId
    next: Next = Field(default=None, description="Older jobs: the Next-Page header of the previous answer")


class NodeAuditResultQuery(NodeSigned):
    command: ClassVar[str] = COMMANDS["audit_result"]
    documentId: DocumentId
    jobId: JobIdText
    index: Index

    @property
    def index_value(self) -> int:
        return int(self.index)


class NodeReleaseRequest(NodeSigned):
    command: ClassVar[str] = COMMANDS["release"]
    documentId: DocumentId
    jobId: JobIdText
    decision: Decision
