"""The dev chain tooling against a real anvil: deploy, publish (MetadataCreated), order."""

from __future__ import annotations

import hashlib
import json
import lzma
import time

import ecies
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from web3 import Web3

from devstack.anvil import Anvil, find_anvil, revert, rpc_call, snapshot
from devstack.contracts import OCEAN_UNIT, contract, decode_events
from devstack.devchain import DevChain
from devstack.publish import FLAG_ECIES, FLAG_LZMA, PublishedAsset, publish_asset, set_ddo
from devstack.orders import mint_datatokens, provider_data, reuse_order, sign_provider_fee, start_order

PROVIDER_URL = "http://127.0.0.1:8000"
FILES = [{"type": "url", "url": "https://example.com/data.csv", "method": "GET"}]
ALGORITHM = {
    "language": "python",
    "version": "0.1",
    "container": {
        "entrypoint": "python $ALGO",
        "image": "python",
        "tag": "3.11-slim",
        "checksum": "sha256:" + "0" * 64,
    },
}


def _publish(chain: DevChain, **kw: object) -> PublishedAsset:
    return publish_asset(
        chain.w3, chain.publisher, chain.contracts,
        name=str(kw.pop("name", "sample dataset")), files=FILES, provider_url=PROVIDER_URL,
        provider_address=chain.provider.address, encrypt=chain.encrypt_for_provider(),
        **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def _provider_decrypt(chain: DevChain, data: bytes | str) -> bytes:
    raw = data if isinstance(data, bytes) else bytes.fromhex(data.removeprefix("0x"))
    return ecies.decrypt(chain.provider.key.hex(), raw)


def _fee(chain: DevChain, asset: PublishedAsset, amount: int = 0, signer=None) -> dict:
    return sign_provider_fee(
        signer or chain.provider,
        data=provider_data("ocean-c2d-cpu", asset.datatoken, asset.serviceId),
        fee_token=chain.contracts.OceanToken,
        fee_amount=amount,
        fee_address=chain.provider.address,
        valid_until=int(time.time()) + 3600,
    )


def test_deploy(chain: DevChain) -> None:
    w3, c = chain.w3, chain.contracts
    assert w3.eth.chain_id == 8996
    for address in c.as_dict().values():
        assert len(w3.eth.get_code(address)) > 0
    factory = contract(w3, "ERC721Factory", c.ERC721Factory)
    assert factory.functions.getTokenTemplate(1).call() == (c.ERC20Template, True)
    assert factory.functions.getNFTTemplate(1).call() == (c.ERC721Template, True)
    router = contract(w3, "FactoryRouter", c.FactoryRouter)
    assert router.functions.factory().call() == c.ERC721Factory
    ocean = contract(w3, "OceanToken", c.OceanToken)
    assert ocean.functions.balanceOf(chain.consumer.address).call() == 10_000 * OCEAN_UNIT


def test_snapshot_revert(chain: DevChain) -> None:
    asset = _publish(chain)
    dt = contract(chain.w3, "ERC20Template", asset.datatoken)
    snap = snapshot(chain.w3)
    mint_datatokens(chain.w3, chain.publisher, asset.datatoken, chain.consumer.address)
    assert dt.functions.balanceOf(chain.consumer.address).call() == OCEAN_UNIT
    assert revert(chain.w3, snap)
    assert dt.functions.balanceOf(chain.consumer.address).call() == 0


def test_publish_dataset_metadata_created(chain: DevChain) -> None:
    w3 = chain.w3
    trusted = {"publisherTrustedAlgorithmPublishers": [chain.publisher.address]}
    asset = _publish(chain, compute=trusted)
    receipt = w3.eth.get_transaction_receipt(asset.metadataTxId)
    (log,) = decode_events(w3, receipt, "ERC721Template", "MetadataCreated", asset.nftAddress)
    args = log["args"]
    assert args["createdBy"] == chain.publisher.address
    assert args["state"] == 0 and args["decryptorUrl"] == PROVIDER_URL and args["flags"] == b"\x00"
    # did = "did:op:" + sha256(checksummed NFT address + chain id)
    seed = Web3.to_checksum_address(asset.nftAddress) + "8996"
    assert asset.did == "did:op:" + hashlib.sha256(seed.encode()).hexdigest()
    # data is the plain DDO and metaDataHash its sha256
    assert args["metaDataHash"] == hashlib.sha256(args["data"]).digest()
    ddo = json.loads(args["data"])
    assert ddo == asset.ddo and ddo["id"] == asset.did and ddo["chainId"] == 8996
    assert ddo["version"] == "4.1.0" and ddo["nftAddress"] == asset.nftAddress
    (service,) = ddo["services"]
    assert service["id"] == asset.serviceId and service["type"] == "compute"
    assert service["datatokenAddress"] == asset.datatoken
    assert service["serviceEndpoint"] == PROVIDER_URL
    assert service["compute"] == {
        "allowRawAlgorithm": False,
        "allowNetworkAccess": True,
        "publisherTrustedAlgorithms": [],
        **trusted,
    }
    # only the provider can read the files object
    files = json.loads(_provider_decrypt(chain, service["files"]))
    assert files == {
        "datatokenAddress": asset.datatoken, "nftAddress": asset.nftAddress, "files": FILES
    }
    nft = contract(w3, "ERC721Template", asset.nftAddress)
    # getMetaData() -> (decryptorUrl, decryptorAddress, state, hasMetaData)
    assert tuple(nft.functions.getMetaData().call()) == (PROVIDER_URL, chain.provider.address, 0, True)


def test_algorithm_compressed_encrypted_and_update(chain: DevChain) -> None:
    w3 = chain.w3
    flags = FLAG_LZMA | FLAG_ECIES
    asset = _publish(chain, name="algo", asset_type="algorithm", algorithm=ALGORITHM, flags=flags)
    assert asset.ddo["metadata"]["algorithm"] == ALGORITHM
    receipt = w3.eth.get_transaction_receipt(asset.metadataTxId)
    (log,) = decode_events(w3, receipt, "ERC721Template", "MetadataCreated", asset.nftAddress)
    assert log["args"]["flags"] == b"\x03"
    plain = lzma.decompress(_provider_decrypt(chain, log["args"]["data"]))
    assert hashlib.sha256(plain).digest() == log["args"]["metaDataHash"]
    assert json.loads(plain)["id"] == asset.did

    # a second setMetaData is an update
    ddo = {**asset.ddo, "metadata": {**asset.ddo["metadata"], "description": "v2"}}
    tx = set_ddo(
        w3, chain.publisher, ddo, provider_url=PROVIDER_URL, provider_address=chain.provider.address
    )
    receipt = w3.eth.get_transaction_receipt(tx)
    assert not decode_events(w3, receipt, "ERC721Template", "MetadataCreated", asset.nftAddress)
    (upd,) = decode_events(w3, receipt, "ERC721Template", "MetadataUpdated", asset.nftAddress)
    assert upd["args"]["updatedBy"] == chain.publisher.address
    assert json.loads(upd["args"]["data"])["metadata"]["description"] == "v2"


def test_start_order_zero_fee(chain: DevChain) -> None:
    w3 = chain.w3
    asset = _publish(chain)
    mint_datatokens(w3, chain.publisher, asset.datatoken, chain.consumer.address)
    fee = _fee(chain, asset)
    tx = start_order(w3, chain.consumer, asset.datatoken, asset.serviceIndex, fee)
    receipt = w3.eth.get_transaction_receipt(tx)
    assert receipt["status"] == 1

    (started,) = decode_events(w3, receipt, "ERC20Template", "OrderStarted", asset.datatoken)
    a = started["args"]
    assert a["consumer"] == a["payer"] == chain.consumer.address
    assert a["amount"] == OCEAN_UNIT and a["serviceIndex"] == 0
    assert a["blockNumber"] == receipt["blockNumber"]

    (pf,) = decode_events(w3, receipt, "ERC20Template", "ProviderFee", asset.datatoken)
    p = pf["args"]
    assert p["providerFeeAddress"] == chain.provider.address and p["providerFeeAmount"] == 0
    assert p["providerFeeToken"] == chain.contracts.OceanToken
    assert p["validUntil"] == fee["validUntil"]
    data = json.loads(p["providerData"])
    assert data["dt"] == asset.datatoken and data["id"] == asset.serviceId
    assert data["environment"] == "ocean-c2d-cpu"
    # the signature in the log recovers to the provider, as order verification will check
    digest = Web3.solidity_keccak(
        ["bytes", "address", "address", "uint256", "uint256"],
        [
            p["providerData"], p["providerFeeAddress"], p["providerFeeToken"],
            p["providerFeeAmount"], p["validUntil"],
        ],
    )  # fmt: skip
    message = encode_defunct(primitive=digest)
    signer = Account.recover_message(message, vrs=(p["v"], p["r"], p["s"]))
    assert signer == chain.provider.address
    dt = contract(w3, "ERC20Template", asset.datatoken)
    assert dt.functions.balanceOf(chain.consumer.address).call() == 0


def test_paid_fee_other_consumer_and_reuse(chain: DevChain) -> None:
    w3 = chain.w3
    ocean = contract(w3, "OceanToken", chain.contracts.OceanToken)
    asset = _publish(chain)
    mint_datatokens(w3, chain.publisher, asset.datatoken, chain.consumer.address)
    before = ocean.functions.balanceOf(chain.provider.address).call()
    fee = _fee(chain, asset, amount=2 * OCEAN_UNIT)  # needs an OCEAN approval first
    tx = start_order(
        w3, chain.consumer, asset.datatoken, 0, fee, consumer=chain.other.address
    )  # payer != consumer
    receipt = w3.eth.get_transaction_receipt(tx)
    (started,) = decode_events(w3, receipt, "ERC20Template", "OrderStarted", asset.datatoken)
    assert started["args"]["consumer"] == chain.other.address
    assert started["args"]["payer"] == chain.consumer.address
    # the provider receives the fee minus the community (OPC) cut set on the router
    router = contract(w3, "FactoryRouter", chain.contracts.FactoryRouter)
    paid = 2 * OCEAN_UNIT
    opc_cut = paid * router.functions.getOPCProviderFee().call() // OCEAN_UNIT
    assert ocean.functions.balanceOf(chain.provider.address).call() == before + paid - opc_cut

    fee2 = _fee(chain, asset, amount=OCEAN_UNIT)
    tx2 = reuse_order(w3, chain.consumer, asset.datatoken, tx, fee2)
    receipt2 = w3.eth.get_transaction_receipt(tx2)
    (reused,) = decode_events(w3, receipt2, "ERC20Template", "OrderReused", asset.datatoken)
    assert reused["args"]["orderTxId"] == bytes.fromhex(tx[2:])
    assert reused["args"]["caller"] == chain.consumer.address
    assert decode_events(w3, receipt2, "ERC20Template", "ProviderFee", asset.datatoken)
    assert not decode_events(w3, receipt2, "ERC20Template", "OrderStarted")


def test_fee_not_signed_by_provider_reverts(chain: DevChain) -> None:
    asset = _publish(chain)
    mint_datatokens(chain.w3, chain.publisher, asset.datatoken, chain.consumer.address)
    forged = _fee(chain, asset, signer=chain.other)
    with pytest.raises(RuntimeError, match="Invalid provider fee"):
        start_order(chain.w3, chain.consumer, asset.datatoken, 0, forged)


def test_find_anvil_env_override_and_missing(tmp_path, monkeypatch) -> None:
    fake = tmp_path / "anvil"
    fake.write_text("")
    monkeypatch.setenv("ANVIL_BIN", str(fake))
    assert find_anvil(tmp_path) == fake
    monkeypatch.delenv("ANVIL_BIN")
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="npm ci"):
        find_anvil(tmp_path)


def test_anvil_start_failure_reports_output(anvil: DevChain) -> None:
    node = Anvil(binary=anvil.node.binary or find_anvil(), extra_args=["--no-such-flag"])
    with pytest.raises(RuntimeError, match="no-such-flag"):
        node.start(timeout=10)
    assert not node.running


def test_anvil_refuses_a_busy_port(anvil: DevChain) -> None:
    with pytest.raises(RuntimeError, match="already in use"):
        Anvil(anvil.node.port, binary=find_anvil()).start()
    assert anvil.w3.eth.chain_id == 8996  # the session node is untouched


def test_anvil_context_manager_stops_the_node(anvil: DevChain) -> None:
    with Anvil(chain_id=1337, binary=find_anvil()) as node:
        assert node.running and node.w3().eth.chain_id == 1337
        url = node.rpc_url
    assert not node.running
    with pytest.raises(OSError):
        rpc_call(url, "eth_chainId", timeout=1.0)
