"""Request models: what each route accepts. The routes validate with these and /spec is built
from them, so the documentation cannot drift from the checks."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Mapping, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StringConstraints, WithJsonSchema

if TYPE_CHECKING:
    from chalicelib.auth.authenticator import Authenticator

ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"
NONCE_PATTERN = r"^[0-9]{1,38}$"

Address = Annotated[str, StringConstraints(pattern=ADDRESS_PATTERN)]
Signature = Annotated[str, StringConstraints(pattern=r"^(0x)?[0-9a-fA-F]{130}$")]
ShortText = Annotated[str, StringConstraints(max_length=256)]


_NONCE_TEXT = re.compile(r"[0-9]{1,38}")


def _nonce_text(value: Union[int, str]) -> str:
    """Keep the nonce as the signer wrote it: query text verbatim, JSON numbers as str().
    Plain ASCII decimals only, all of the text (`fullmatch`: `$` would accept "7\n")."""
    text = str(value)
    if not _NONCE_TEXT.fullmatch(text):
        raise ValueError("nonce must be a non-negative integer of at most 38 ASCII digits")
    return text


Nonce = Annotated[
    Union[StrictInt, Annotated[str, StringConstraints(max_length=64)]],
    AfterValidator(_nonce_text),
    # What _nonce_text accepts, so /spec documents the real rule (clients and fuzzers read it).
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0, "maximum": 10**38 - 1},
                              {"type": "string", "pattern": NONCE_PATTERN}]}),
    Field(description="Strictly greater than the last nonce this address used (see /api/services/nonce)."),
]


class Params(BaseModel):
    """Base: unknown fields are ignored (clients send extras), strings are bounded. A model's
    validator is built when it first validates (defer_build): a cold start builds its route's
    model only, not all forty."""

    model_config = ConfigDict(extra="ignore", str_max_length=65536, defer_build=True)


@dataclass(frozen=True)
class SignedParts:
    """What authenticates a signed request, read from the request as sent (DESIGN §3.2, §3.8):
    the signer, the nonce and the signature, and the signed message around the nonce."""

    signer: object
    nonce: object  # None: not sent
    signature: object  # None: not sent (a token may prove the caller instead)
    before: str  # the message before the nonce, the signer's own field first
    after: str = ""  # the message after the nonce (Ocean Node's command)
    nonceless: str = ""  # a message without the nonce that is accepted too ("" for none)
    other_after: tuple[str, ...] = ()  # other forms of `after` that other client versions sign


class SignedParams(Params):
    """A signed request: says who signs it and what the message is (DESIGN §3.2).

    The message is declared, not computed by each route, so the nonce can be spent from the
    request as sent before anything else of it is checked (services.authenticate_request): the
    values of `message_fields` (dotted paths, a missing one counting as ""), the nonce, then
    `command`."""

    nonce: Nonce
    signature: Signature | None = None

    signer_field: ClassVar[str] = "consumerAddress"
    message_fields: ClassVar[tuple[str, ...]] = ("consumerAddress",)
    command: ClassVar[str] = ""
    # A message signed without the nonce that is accepted too, only when all these fields are
    # given: only where a client of the protocol signs so and a replay can change nothing (see
    # ComputeStopQuery). The nonce is still required and consumed.
    nonceless_fields: ClassVar[tuple[str, ...]] = ()
    allow_token: ClassVar[bool] = True  # may an auth token replace the signature
    proof_optional: ClassVar[bool] = False  # unsigned, the route answers a reduced view (v4 status)

    @classmethod
    def signed_parts(cls, raw: Mapping[str, Any]) -> SignedParts | None:
        """The signed parts of a request as sent (query string and JSON body merged), or None
        if a signed field holds something no client signs (neither text nor a whole number)."""
        before = _signed_text(raw, cls.message_fields)
        if before is None:
            return None
        nonceless = ""
        if cls.nonceless_fields and all(_signed_text(raw, (path,)) for path in cls.nonceless_fields):
            nonceless = _signed_text(raw, cls.nonceless_fields) or ""
        return SignedParts(raw.get(cls.signer_field), raw.get("nonce"), raw.get("signature"), before, cls.command,
                           nonceless, cls.other_commands())

    @classmethod
    def other_commands(cls) -> tuple[str, ...]:
        """Other texts that may follow the nonce, where client versions sign the call differently
        (Ocean Node's token calls); the one nonce is spent whichever form is signed."""
        return ()

    @classmethod
    def session_authenticator(cls) -> "Authenticator | None":
        """Who checks the session an `Authorization` header carries on this route, with its nonce
        (the operator's console, chalicelib.admin); None: the provider's auth tokens."""
        return None

    def signer(self) -> str:
        return getattr(self, self.signer_field)

    def message_prefix(self) -> str:
        """What precedes the nonce in the signed message (the command follows it)."""
        return _signed_text(self, self.message_fields) or ""


def _signed_text(source: Any, paths: tuple[str, ...]) -> str | None:
    """The values at `paths` joined as the signer wrote them; a missing value counts as "".
    None if one is neither text nor a whole number (nothing a client signs)."""
    text = []
    for path in paths:
        value = source
        for part in path.split("."):
            value = value.get(part) if isinstance(value, Mapping) else getattr(value, part, None)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            return None
        text.append(str(value))
    return "".join(text)


class _AddressSigned(SignedParams):
    """The auth-token calls: signed by `address` over address + nonce, signature mandatory, no token."""

    address: Address
    signature: Signature

    signer_field: ClassVar[str] = "address"
    message_fields: ClassVar[tuple[str, ...]] = ("address",)
    allow_token: ClassVar[bool] = False


class NonceQuery(Params):
    userAddress: Address


class CreateAuthTokenQuery(_AddressSigned):
    expiration: Union[StrictInt, Annotated[str, StringConstraints(pattern=r"^[0-9]{1,12}$")]] = Field(
        description="Unix time in seconds at which the token expires; in the future, within the provider's maximum lifetime."
    )


class DeleteAuthTokenQuery(_AddressSigned):
    token: Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class EncryptQuery(Params):
    """POST /api/services/encrypt: the body is the raw bytes to encrypt, not JSON."""

    chainId: Union[StrictInt, Annotated[str, StringConstraints(pattern=r"^[0-9]{1,12}$")], None] = Field(
        default=None, description="Chain the data is for (ocean.py and ocean.js send it); one this provider serves."
    )

    def chain_id(self) -> int | None:
        return None if self.chainId is None else int(self.chainId)


class EnvironmentsQuery(Params):
    """GET /api/services/computeEnvironments: optionally one chain only."""

    chainId: Annotated[
        Union[StrictInt, Annotated[str, StringConstraints(pattern=r"^[0-9]{1,12}$")], None],
        AfterValidator(lambda value: None if value is None else int(value)),
    ] = None
