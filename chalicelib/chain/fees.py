"""Provider fees (DESIGN §3.4): what initializeCompute quotes and the datatoken contract checks.

A provider fee is signed by the provider key over

    keccak256(abi.encodePacked(bytes providerData, address feeAddress, address feeToken,
                               uint256 feeAmount, uint256 validUntil))

with the EIP-191 prefix, exactly as ERC20Template._checkProviderFee rebuilds it before
`ecrecover(message, v, r, s) == providerFeeAddress` (so v must be 27/28, as Solidity's ecrecover
wants). abi.encodePacked of these fixed types is plain concatenation (the bytes as they are,
addresses as 20 bytes, uint256 as 32 bytes big-endian), so neither web3 nor eth_account is needed:
quoting a fee stays on the cheap coincurve + keccak path.

The fee is the environment's priceMin per minute for the minutes until validUntil, in the fee
token's smallest unit (the original Provider: seconds × priceMin / 60, scaled by decimals); free
environments and environments without a fee token on that chain cost 0.
"""
from __future__ import annotations

import json
from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING, Any, Callable

from coincurve import PrivateKey, PublicKey

from chalicelib.auth.signatures import address_of_key, keccak256, to_checksum_address
from chalicelib.errors import ConfigurationError

if TYPE_CHECKING:
    from chalicelib.compute.environments import Environment

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
EIP191_PREFIX = b"\x19Ethereum Signed Message:\n32"
DEFAULT_DECIMALS = 18

Decimals = Callable[[int, str], int]
"""(chain id, token address) -> the token's ERC20 decimals."""


def _uint256(value: int) -> bytes:
    if not 0 <= value < 2**256:
        raise ValueError("uint256 out of range")
    return value.to_bytes(32, "big")


def _address(value: str) -> bytes:
    return bytes.fromhex(to_checksum_address(value)[2:])


def fee_message_hash(provider_data: bytes, fee_address: str, fee_token: str, amount: int, valid_until: int) -> bytes:
    """solidityKeccak(["bytes","address","address","uint256","uint256"], [...]) of a provider fee."""
    packed = provider_data + _address(fee_address) + _address(fee_token) + _uint256(amount) + _uint256(valid_until)
    return keccak256(packed)


def eip191_digest(message_hash: bytes) -> bytes:
    """What personal_sign / the contract's prefixed hash sign: keccak(prefix ‖ 32-byte hash)."""
    return keccak256(EIP191_PREFIX + message_hash)


def recover_fee_signer(digest: bytes, v: int, r: bytes, s: bytes) -> str | None:
    """The checksummed address that signed `digest` as (v, r, s), or None if it is not a signature."""
    recovery = v - 27 if v >= 27 else v
    if recovery not in (0, 1) or len(r) != 32 or len(s) != 32:
        return None
    try:
        public = PublicKey.from_signature_and_message(r + s + bytes([recovery]), digest, hasher=None)
    except Exception:  # coincurve raises plain Exception for values off the curve
        return None
    return to_checksum_address("0x" + keccak256(public.format(compressed=False)[1:])[-20:].hex())


def provider_data_json(environment: str, timestamp: int, datatoken: str, service_id: str) -> bytes:
    """The providerData bytes: compact JSON {"environment", "timestamp", "dt", "id"} (original's layout)."""
    data = {"environment": environment, "timestamp": timestamp, "dt": datatoken, "id": service_id}
    return json.dumps(data, separators=(",", ":")).encode()


class ProviderFees:
    """Quotes signed provider fees for compute environments.

    `decimals` reads a fee token's decimals (e.g. `Chains.token_decimals`, cached per container);
    without it every fee token is taken to have 18, which is what OCEAN and Ocean datatokens have.
    """

    def __init__(self, private_key_hex: str, provider_address: str, decimals: Decimals | None = None):
        self._key = PrivateKey(bytes.fromhex(private_key_hex.removeprefix("0x")))
        self.provider_address = to_checksum_address(provider_address)
        if address_of_key(private_key_hex) != self.provider_address:
            raise ConfigurationError("the provider address does not belong to the provider key")
        self._decimals = decimals or (lambda chain_id, token: DEFAULT_DECIMALS)

    def amount(self, *, chain_id: int, environment: "Environment", valid_until: int, now: int) -> int:
        """The fee in the fee token's smallest unit for running on `environment` until `valid_until`.

        Rounded up to a whole unit so a quote never undercharges; 0 for free environments, for
        environments without a fee token on this chain and when validUntil is not in the future.
        """
        token = environment.fee_token(chain_id)
        seconds = max(0, int(valid_until) - int(now))
        if environment.free or not environment.price_min or int(token, 16) == 0 or seconds == 0:
            return 0
        scale = 10 ** self._decimals(chain_id, token)
        fee = Decimal(str(environment.price_min)) * seconds * scale / 60
        return int(fee.to_integral_value(rounding=ROUND_CEILING))

    def quote(
        self,
        *,
        chain_id: int,
        environment: "Environment",
        datatoken: str,
        service_id: str,
        valid_until: int,
        now: int,
    ) -> dict[str, Any]:
        """The providerFee object of initializeCompute, ready for startOrder / reuseOrder."""
        fee_token = to_checksum_address(environment.fee_token(chain_id))
        amount = self.amount(chain_id=chain_id, environment=environment, valid_until=valid_until, now=now)
        data = provider_data_json(environment.id, int(now), datatoken, service_id)
        digest = eip191_digest(fee_message_hash(data, self.provider_address, fee_token, amount, int(valid_until)))
        signature = self._key.sign_recoverable(digest, hasher=None)
        return {
            "providerFeeAddress": self.provider_address,
            "providerFeeToken": fee_token,
            "providerFeeAmount": str(amount),
            "providerData": "0x" + data.hex(),
            "v": signature[64] + 27,
            "r": "0x" + signature[:32].hex(),
            "s": "0x" + signature[32:64].hex(),
            "validUntil": int(valid_until),
        }
