"""Request models of the data owner's routes (issue 22), both protocols: a v4 call signs its
fields then the nonce (`consumerAddress + jobId + nonce` ...), an Ocean Node call `address +
nonce + command`; both may carry a token instead, as every signed route (DESIGN §3.2, §3.8)."""
from __future__ import annotations

from typing import Annotated, ClassVar, Optional

from pydantic import Field, StringConstraints

from chalicelib.compute.paging import MAX_CURSOR_CHARS, Cursor
from chalicelib.compute.requests import DocumentId
from chalicelib.node.requests import NodeSigned
from chalicelib.schemas import Address, SignedParams

JobIdText = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Next = Optional[Annotated[str, StringConstraints(max_length=MAX_CURSOR_CHARS)]]
COMMANDS = {"receipt": "getComputeReceipt", "audit": "getComputeAudit"}


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


class NodeReceiptQuery(NodeSigned):
    command: ClassVar[str] = COMMANDS["receipt"]
    jobId: JobIdText


class NodeAuditQuery(_Paged, NodeSigned):
    command: ClassVar[str] = COMMANDS["audit"]
    documentId: DocumentId
    next: Next = Field(default=None, description="Older jobs: the Next-Page header of the previous answer")
