"""Request models of the data owner's routes (issue 22), both protocols: a v4 call signs its
fields then the nonce (`consumerAddress + jobId + nonce`), an Ocean Node call `address +
nonce + command`; both may carry a token instead, as every signed route (DESIGN §3.2, §3.8)."""
from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import StringConstraints

from chalicelib.node.requests import NodeSigned
from chalicelib.schemas import Address, SignedParams

JobIdText = Annotated[str, StringConstraints(min_length=1, max_length=256)]
COMMANDS = {"receipt": "getComputeReceipt"}


class ReceiptQuery(SignedParams):
    """GET /api/services/computeReceipt: signed over consumerAddress + jobId + nonce."""

    consumerAddress: Address
    jobId: JobIdText
    message_fields: ClassVar[tuple[str, ...]] = ("consumerAddress", "jobId")


class NodeReceiptQuery(NodeSigned):
    command: ClassVar[str] = COMMANDS["receipt"]
    jobId: JobIdText
