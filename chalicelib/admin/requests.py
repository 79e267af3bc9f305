"""Request models of the admin routes. A call is signed by `address` over `address + nonce +
command` (the command names the route, so a signature is good for one route and once), or
carries `Authorization: <admin session token>` with its nonce."""
from __future__ import annotations

from typing import Annotated, ClassVar, Optional, Union

from pydantic import Field, StrictBool, StrictInt, StringConstraints

from chalicelib.compute.requests import EnvironmentId, JobId
from chalicelib.schemas import Address, Signature, SignedParams

StatusFilter = Annotated[str, StringConstraints(pattern=r"^(active|ended|failed|[0-9]{1,2})$")]
Cursor = Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=r"^[A-Za-z0-9_-]+$")]
ChainId = Union[StrictInt, Annotated[str, StringConstraints(pattern=r"^[0-9]{1,12}$")]]


class AdminSigned(SignedParams):
    """A call of the operator: `address` signs `address + nonce + command`."""

    address: Address = Field(description="The operator's address (one of ADMIN_ADDRESSES)")
    signature: Optional[Signature] = None
    command: ClassVar[str] = ""

    def signer(self) -> str:
        return self.address

    def message_prefix(self) -> str:
        return self.address

    def message_suffix(self) -> str:
        return self.command


class SignInRequest(AdminSigned):
    """POST /admin/api/session: signed (no token), answers a session token."""

    command: ClassVar[str] = "adminSignIn"
    signature: Signature


class SignOutRequest(AdminSigned):
    command: ClassVar[str] = "adminSignOut"


class OverviewQuery(AdminSigned):
    command: ClassVar[str] = "adminOverview"


class JobsQuery(AdminSigned):
    command: ClassVar[str] = "adminJobs"
    environment: Optional[EnvironmentId] = None
    status: Optional[StatusFilter] = Field(default=None, description="active, ended, failed or a status code")
    consumer: Optional[Address] = None
    next: Optional[Cursor] = None
    limit: Optional[Annotated[int, Field(ge=1, le=100)]] = None


class StopJobRequest(AdminSigned):
    command: ClassVar[str] = "adminStopJob"
    jobId: JobId


class DrainRequest(AdminSigned):
    command: ClassVar[str] = "adminDrain"
    environment: EnvironmentId
    drain: StrictBool = Field(description="true: no new starts (running jobs finish); false: accept starts again")


class PaymentsQuery(AdminSigned):
    command: ClassVar[str] = "adminPayments"
    chainId: Optional[ChainId] = None
    next: Optional[Cursor] = None


class FreeTierQuery(AdminSigned):
    command: ClassVar[str] = "adminFreeTier"


__all__ = ["AdminSigned", "DrainRequest", "FreeTierQuery", "JobsQuery", "OverviewQuery", "PaymentsQuery",
           "SignInRequest", "SignOutRequest", "StopJobRequest"]
