"""The provider as an Ocean Node names itself: its libp2p peer id, and the `status` answer of
`POST /node/directCommand` (what ocean.js 9 reads the peer id from before it signs a token).

Ocean Node derives its peer id from its secp256k1 key with libp2p
(`src/components/KeyManager/providers/RawPrivateKeyProvider.ts`: `privateKeyFromRaw(key)`, then
`peerIdFromPrivateKey`): the public key, compressed (33 bytes), wrapped in libp2p's protobuf
`PublicKey {Type = Secp256k1 (2), Data}`; that message (37 bytes, shorter than 42) is the peer id
as an identity multihash (code 0x00, length), written in base58btc: `16Uiu2HA…`
(libp2p specs, peer-ids.md). The tests check it against Ocean Node's own key/peer-id pairs.
"""
from __future__ import annotations

import base58
import coincurve

SECP256K1_KEY_TYPE = 2  # libp2p's KeyType enum
IDENTITY_MULTIHASH = 0x00
MAX_INLINE_KEY_BYTES = 42  # libp2p inlines (identity-hashes) keys whose protobuf is at most this long


def _field(number: int, wire_type: int, value: bytes | int) -> bytes:
    """One protobuf field; only what libp2p's PublicKey needs (a varint < 128, bytes < 128)."""
    key = bytes([(number << 3) | wire_type])
    if isinstance(value, int):
        return key + bytes([value])
    return key + bytes([len(value)]) + value


def compressed_public_key(private_key_hex: str) -> bytes:
    return coincurve.PrivateKey(bytes.fromhex(private_key_hex.removeprefix("0x"))).public_key.format(compressed=True)


def peer_id(private_key_hex: str) -> str:
    """The libp2p peer id of a secp256k1 private key (hex), as Ocean Node derives its own."""
    public_key = _field(1, 0, SECP256K1_KEY_TYPE) + _field(2, 2, compressed_public_key(private_key_hex))
    assert len(public_key) <= MAX_INLINE_KEY_BYTES
    return base58.b58encode(bytes([IDENTITY_MULTIHASH, len(public_key)]) + public_key).decode("ascii")


__all__ = ["compressed_public_key", "peer_id"]
