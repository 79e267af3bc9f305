"""Request models: what each route accepts. The routes validate with these and /spec is built
from them, so the documentation cannot drift from the checks."""
from __future__ import annotations

import re
from typing import Annotated, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StringConstraints, WithJsonSchema

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


class SignedParams(Params):
    """A signed request: says who signs it and what the message is before the nonce (DESIGN §3.2)."""

    nonce: Nonce
    signature: Signature | None = None

    def signer(self) -> str:
        raise NotImplementedError

    def message_prefix(self) -> str:
        raise NotImplementedError

    def message_suffix(self) -> str:
        """What follows the nonce in the signed message: nothing in v4, the command in Ocean Node's."""
        return ""

    def nonceless_message(self) -> str:
        """A message signed without the nonce that is accepted too ("" for none): only where a
        client of the protocol signs so and a replay can change nothing (see ComputeStopQuery).
        The nonce is still required and consumed."""
        return ""


class _AddressSigned(SignedParams):
    """The auth-token calls: signed by `address` over address + nonce, signature mandatory."""

    address: Address
    signature: Signature

    def signer(self) -> str:
        return self.address

    def message_prefix(self) -> str:
        return self.address


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
