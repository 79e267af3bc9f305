"""Request models of the admin routes. A call is signed by `address` over `address + nonce +
command` (the command names the route, so a signature is good for one route and once), or
carries `Authorization: <admin session token>` with its nonce."""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar, Optional, Union

from pydantic import Field, StrictBool, StrictInt, StringConstraints

from chalicelib.compute.requests import EnvironmentId, JobId
from chalicelib.schemas import Address, Signature, SignedParams

if TYPE_CHECKING:
    from chalicelib.auth.authenticator import Authenticator

StatusFilter = Annotated[str, StringConstraints(pattern=r"^(active|ended|failed|[0-9]{1,2})$")]
Cursor = Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=r"^[A-Za-z0-9_-]+$")]
ChainId = Union[StrictInt, Annotated[str, StringConstraints(pattern=r"^[0-9]{1,12}$")]]


class AdminSigned(SignedParams):
    """A call of the operator: `address` signs `address + nonce + command`, or an admin session
    (`Authorization`, chalicelib.admin.auth) proves it with its nonce; a consumer's auth token never does."""

    address: Address = Field(description="The operator's address (one of ADMIN_ADDRESSES)")
    signature: Optional[Signature] = None

    signer_field: ClassVar[str] = "address"
    message_fields: ClassVar[tuple[str, ...]] = ("address",)

    @classmethod
    def session_authenticator(cls) -> "Authenticator":
        from chalicelib.admin.auth import session_authenticator

        return session_authenticator()


class SignInRequest(AdminSigned):
    """POST /admin/api/session: signed (no token), answers a session token."""

    command: ClassVar[str] = "adminSignIn"
    signature: Signature
    allow_token: ClassVar[bool] = False


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
