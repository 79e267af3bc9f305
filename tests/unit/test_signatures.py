"""Signature recovery against what eth_account (ocean.py's signer) produces."""
from __future__ import annotations

import pytest

from chalicelib.auth.signatures import address_of_key, recover_address, to_checksum_address
from signing import CONSUMER_KEY, OTHER_KEY, address, sign

MESSAGE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8did:op:abc42"


@pytest.mark.parametrize("wallet_v", [False, True], ids=["v01", "v2728"])
def test_recovers_signer_for_both_v_conventions(wallet_v):
    signature = sign(CONSUMER_KEY, MESSAGE, wallet_v=wallet_v)
    assert int(signature[-2:], 16) in ((27, 28) if wallet_v else (0, 1))
    assert recover_address(MESSAGE, signature) == address(CONSUMER_KEY)


def test_other_message_recovers_someone_else():
    signature = sign(CONSUMER_KEY, MESSAGE)
    assert recover_address(MESSAGE + "1", signature) != address(CONSUMER_KEY)


def test_signature_without_0x_prefix_is_accepted():
    assert recover_address(MESSAGE, sign(CONSUMER_KEY, MESSAGE)[2:]) == address(CONSUMER_KEY)


@pytest.mark.parametrize(
    "signature",
    ["", "0x", "0x1234", "zz" * 65, "0x" + "00" * 65, "0x" + "ff" * 64 + "1d", None, 12, "0x" + "ab" * 66],
)
def test_malformed_signatures_recover_nobody(signature):
    assert recover_address(MESSAGE, signature) is None


def test_checksum_matches_eth_utils():
    from eth_utils import to_checksum_address as reference

    for key in (CONSUMER_KEY, OTHER_KEY):
        lower = address(key).lower()
        assert to_checksum_address(lower) == reference(lower)
        assert address_of_key(key) == address(key)


def test_checksum_refuses_non_addresses():
    with pytest.raises(ValueError):
        to_checksum_address("0x1234")
