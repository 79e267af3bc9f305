"""The committed ABI fragments are the ocean-contracts package's, and all the provider needs."""
from __future__ import annotations

import pytest

from chalicelib.chain import abi


@pytest.mark.parametrize("contract", sorted(abi.FRAGMENTS))
def test_committed_fragments_equal_the_package(contract: str) -> None:
    assert abi.load(contract) == abi.extract(contract), "run: python -m chalicelib.chain.abi --refresh"


def test_fragments_hold_the_events_and_functions_the_provider_uses() -> None:
    erc20 = {(item["type"], item["name"]) for item in abi.load("ERC20Template")}
    assert {("event", "OrderStarted"), ("event", "OrderReused"), ("event", "ProviderFee")} <= erc20
    assert {("function", "decimals"), ("function", "getId"), ("function", "getERC721Address")} <= erc20
    erc721 = {(item["type"], item["name"]) for item in abi.load("ERC721Template")}
    assert {("event", "MetadataCreated"), ("event", "MetadataUpdated"), ("function", "getMetaData")} <= erc721
    escrow = {(item["type"], item["name"]) for item in abi.load("Escrow")}
    assert {("event", "Lock"), ("event", "Claimed"), ("event", "Canceled"), ("function", "createLock"),
            ("function", "claimLockAndWithdraw"), ("function", "getUserFunds"), ("function", "getAuthorizations")} <= escrow
    claim = next(item for item in abi.load("Escrow") if item["name"] == "claimLockAndWithdraw")
    assert [i["name"] for i in claim["inputs"]][-2:] == ["jobType", "subsidyProviders"]


def test_unknown_contract_is_refused() -> None:
    with pytest.raises(KeyError):
        abi.load("BPool")


def test_importing_the_chain_package_does_not_import_web3() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import chalicelib.chain.orders, chalicelib.chain.fees, chalicelib.chain.web3access, "
        "chalicelib.chain.abi; assert 'web3' not in sys.modules and 'eth_account' not in sys.modules, "
        "sorted(m for m in sys.modules if m.startswith(('web3', 'eth_account')))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
