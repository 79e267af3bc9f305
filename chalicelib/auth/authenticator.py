"""The one check every signed route goes through (DESIGN §3.2, §3.3).

Order matters: the signature (or token) is checked first, because it costs nothing and has no
side effect (a bad signature must not burn a consumer's nonce); only then is the nonce consumed,
and that happens before the route checks anything else (chalicelib.http), so a signature is good
once, on one route, whatever refuses the request after it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from chalicelib.auth.nonces import MessageUse, NonceStore, parse_nonce
from chalicelib.auth.signatures import is_address, keccak256, recover_address, to_checksum_address
from chalicelib.errors import InvalidSignature, Unauthorized, ValidationError

if TYPE_CHECKING:  # PyJWT is imported with the token service, by the first request that uses a token
    from chalicelib.auth.tokens import TokenService


class Authenticator:
    def __init__(self, nonces: NonceStore, tokens: Callable[[], TokenService] | None):
        """`tokens` is a factory so the JWT secret is read only when a token is actually used."""
        self._nonces = nonces
        self._tokens = tokens

    def authenticate(
        self,
        address: object,
        nonce: object,
        signature: object,
        message_prefix: str,
        auth_token: str | None = None,
        allow_token: bool = True,
        message_suffix: str = "",
        nonceless_message: str = "",
        other_suffixes: Sequence[str] = (),
    ) -> str:
        """The checksummed caller, once its signature or token is valid and its nonce consumed.

        The signed message is `message_prefix + nonce + message_suffix`: v4 calls put everything
        before the nonce, Ocean Node's calls put their command after it; `other_suffixes` are
        other forms of what follows the nonce, where client versions sign a call differently
        (ocean.js 9 appends the node's peer id to createAuthToken). Whichever form is signed, the
        one nonce is consumed once. `nonceless_message`, if given, is accepted as well
        (SignedParams.nonceless_fields says where).

        A signature sent without a nonce (ocean.js 3.x's delete signs one but does not send it)
        is taken to sign the next nonce, stored + 1; it is consumed like any other, so the
        signature is good once and a concurrent request with the same nonce loses."""
        checksummed = require_address(address)
        if nonce in (None, "") and signature not in (None, ""):
            nonce = self._nonces.current(checksummed) + 1  # what a client that sends none signed
        nonce_text, nonce_value = parse_nonce(nonce)
        use = None  # what to record or check of the message with the nonce: see message_use()
        if signature not in (None, ""):
            signed = next((message_prefix + nonce_text + suffix for suffix in (message_suffix, *other_suffixes)
                           if recover_address(message_prefix + nonce_text + suffix, signature) == checksummed),  # type: ignore[arg-type]
                          None)
            if signed is not None:
                use = message_use(signed, message_prefix, nonce_text, str(address))
            elif not nonceless_message or recover_address(nonceless_message, signature) != checksummed:  # type: ignore[arg-type]
                raise InvalidSignature("Invalid signature provided.")
        elif allow_token and auth_token:
            if self._tokens is None:
                raise InvalidSignature("Auth tokens are not enabled on this provider.")
            self._tokens().verify(auth_token, checksummed)
        else:
            raise ValidationError.field("signature", "signature is required")
        self._nonces.consume(checksummed, nonce_value, use)
        return checksummed

    def authenticate_bearer(self, address: object, token: str, nonce: object = None) -> str:
        """The caller proven by an `Authorization: <jwt>` header (Ocean Node's token header).

        The token's address must be the address the request names (Ocean Node accepts any valid
        token for any consumerAddress; we do not). A refusal is 401. Ocean Node's clients send
        no nonce with a token; one that is sent is consumed all the same (one nonce space)."""
        checksummed = require_address(address)
        if self._tokens is None:
            raise Unauthorized("Auth tokens are not enabled on this provider.")
        try:
            self._tokens().verify(bearer_token(token) or "", checksummed)
        except InvalidSignature as refusal:
            raise Unauthorized(next(iter(refusal.errors.values()))[0]) from None
        if nonce not in (None, ""):
            self._nonces.consume(checksummed, parse_nonce(nonce)[1])
        return checksummed


def message_use(message: str, message_prefix: str, nonce_text: str, signer: str) -> MessageUse | None:
    """What the nonce store must do with a signed message besides its nonce (auth.nonces).

    A message can be split elsewhere when the text before its nonce ends with a digit that is
    not the signer's own (an address has a fixed length, so its digits never move): the same
    message split a few digits earlier carries a greater nonce, which the stored nonce cannot
    refuse. Such a message is recorded; and one whose nonce has more than one digit may be a
    recorded one split that way, so it is checked. A one-digit nonce after a non-digit is
    neither."""
    if len(message_prefix) > len(signer) and message_prefix[-1:].isdigit():
        return MessageUse(keccak256(message.encode()), record=True)
    if len(nonce_text) > 1:
        return MessageUse(keccak256(message.encode()), record=False)
    return None


def require_address(value: object, field: str = "consumerAddress") -> str:
    if not is_address(value):
        raise ValidationError.field(field, "must be a 0x-prefixed 20-byte hex address")
    return to_checksum_address(value)  # type: ignore[arg-type]


def bearer_token(value: str | None) -> str | None:
    """The JWT of an Authorization header, sent bare (ocean.js) or as `Bearer <jwt>`."""
    if not value or not value.strip():
        return None
    text = value.strip()
    return text[7:].strip() if text[:7].lower() == "bearer " else text


def header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None
