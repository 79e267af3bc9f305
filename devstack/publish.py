"""Publish assets and place orders on a dev chain exactly as Ocean publishers and consumers do.

Publishing = createNftWithErc20 on the factory, a DDO v4.1 whose service `files` are
ECIES-encrypted for the provider, then setMetaData on the NFT (which emits MetadataCreated,
where the provider and Aquarius read the DDO from). Ordering = ERC20Template.startOrder with a
provider fee signed by the provider (the contract checks that signature even for a zero fee).
"""

from __future__ import annotations

import hashlib
import json
import lzma
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Literal

from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from web3 import Web3

from devstack.contracts import (
    CALL_GAS,
    DEPLOY_GAS,
    OCEAN_UNIT,
    ZERO_ADDRESS,
    OceanContracts,
    as_account,
    contract,
    decode_events,
    send,
)

Encrypt = Callable[[bytes], str]
"""Encrypts bytes for the provider and returns hex (the provider's POST /encrypt contract)."""

# Bits of the one-byte `flags` of setMetaData, as the original Provider's /decrypt reads them.
FLAG_LZMA = 1  # data is lzma-compressed (applied before encryption)
FLAG_ECIES = 2  # data is ECIES-encrypted for the provider (metaDataDecryptorAddress)


@dataclass(frozen=True)
class PublishedAsset:
    """What a publish produced; field names follow the DDO's own."""

    did: str
    ddo: dict[str, Any]
    nftAddress: str
    datatoken: str
    serviceId: str
    serviceIndex: int
    metadataTxId: str


def ecies_encrypt_for(public_key_hex: str) -> Encrypt:
    """An in-process `encrypt` for a provider public key (hex, 64/65/33 bytes, 0x optional).

    Same output as the provider's /encrypt: 0x-prefixed hex of eciespy's ciphertext.
    """
    import ecies

    key = public_key_hex.removeprefix("0x")
    if len(key) == 128:  # raw x||y, as eth-keys prints it: add the SEC1 uncompressed prefix
        key = "04" + key
    return lambda plain: "0x" + ecies.encrypt(key, plain).hex()


def compute_did(nft_address: str, chain_id: int) -> str:
    """did:op: + sha256(checksummed NFT address + decimal chain id), the DDO v4 rule."""
    seed = Web3.to_checksum_address(nft_address) + str(chain_id)
    return "did:op:" + hashlib.sha256(seed.encode()).hexdigest()


def ddo_bytes(ddo: dict[str, Any]) -> bytes:
    """The canonical serialization that is hashed and stored on chain (ocean.py's choice)."""
    return json.dumps(ddo, separators=(",", ":")).encode()


def _now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _hex_to_bytes(value: str) -> bytes:
    return bytes.fromhex(value.removeprefix("0x"))


def create_nft_with_datatoken(
    w3: Web3,
    publisher: LocalAccount | str,
    contracts: OceanContracts,
    name: str,
    symbol: str = "DN",
    *,
    datatoken_cap: int = 1_000_000 * OCEAN_UNIT,
) -> tuple[str, str]:
    """factory.createNftWithErc20 with template 1 for both; returns (nft, datatoken).

    The publisher owns the NFT, mints the datatoken and collects payments; no publish
    market fee (address 0, amount 0), as ocean.py's defaults.
    """
    acct = as_account(publisher)
    factory = contract(w3, "ERC721Factory", contracts.ERC721Factory)
    nft_data = (name, symbol, 1, "", True, acct.address)
    erc20_data = (
        1,
        [f"{name}: DT1", "DT1"],
        [acct.address, acct.address, ZERO_ADDRESS, contracts.OceanToken],
        [datatoken_cap, 0],
        [],
    )
    receipt = send(
        w3, acct, factory.functions.createNftWithErc20(nft_data, erc20_data), gas=DEPLOY_GAS
    )
    nft = decode_events(w3, receipt, "ERC721Factory", "NFTCreated", contracts.ERC721Factory)
    dt = decode_events(w3, receipt, "ERC721Factory", "TokenCreated", contracts.ERC721Factory)
    return nft[0]["args"]["newTokenAddress"], dt[0]["args"]["newTokenAddress"]


def build_ddo(
    *,
    nft_address: str,
    chain_id: int,
    datatoken: str,
    encrypted_files: str,
    provider_url: str,
    name: str,
    asset_type: Literal["dataset", "algorithm"] = "dataset",
    description: str = "",
    author: str = "devstack",
    license: str = "CC0: PublicDomain",
    algorithm: dict[str, Any] | None = None,
    service_id: str = "0",
    service_type: str = "compute",
    timeout: int = 0,
    compute: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A DDO v4.1 dict with one service; `compute` options only on compute services."""
    if asset_type == "algorithm" and not algorithm:
        raise ValueError("an algorithm needs metadata.algorithm (language, version, container)")
    created = _now_iso()
    metadata: dict[str, Any] = {
        "created": created,
        "updated": created,
        "type": asset_type,
        "name": name,
        "description": description or name,
        "author": author,
        "license": license,
    }
    if algorithm:
        metadata["algorithm"] = algorithm
    service: dict[str, Any] = {
        "id": service_id,
        "type": service_type,
        "files": encrypted_files,
        "datatokenAddress": datatoken,
        "serviceEndpoint": provider_url,
        "timeout": timeout,
    }
    if service_type == "compute":
        service["compute"] = {
            "allowRawAlgorithm": False,
            "allowNetworkAccess": True,
            "publisherTrustedAlgorithms": [],
            "publisherTrustedAlgorithmPublishers": [],
            **(compute or {}),
        }
    return {
        "@context": ["https://w3id.org/did/v1"],
        "id": compute_did(nft_address, chain_id),
        "version": "4.1.0",
        "chainId": chain_id,
        "nftAddress": Web3.to_checksum_address(nft_address),
        "metadata": metadata,
        "services": [service],
    }


def set_ddo(
    w3: Web3,
    publisher: LocalAccount | str,
    ddo: dict[str, Any],
    *,
    provider_url: str,
    provider_address: str,
    flags: int = 0,
    encrypt: Encrypt | None = None,
    metadata_state: int = 0,
) -> str:
    """setMetaData on the DDO's NFT; returns the tx hash (MetadataCreated, then MetadataUpdated).

    metaDataHash is sha256 of the plain serialized DDO whatever the flags; with FLAG_LZMA the
    data is compressed, with FLAG_ECIES it is (after compression) encrypted with `encrypt`.
    """
    plain = ddo_bytes(ddo)
    data = lzma.compress(plain) if flags & FLAG_LZMA else plain
    if flags & FLAG_ECIES:
        if encrypt is None:
            raise ValueError("FLAG_ECIES needs an encrypt function")
        data = _hex_to_bytes(encrypt(data))
    nft = contract(w3, "ERC721Template", ddo["nftAddress"])
    call = nft.functions.setMetaData(
        metadata_state,
        provider_url,
        provider_address,
        bytes([flags]),
        data,
        hashlib.sha256(plain).digest(),
        [],
    )
    return send(w3, publisher, call, gas=DEPLOY_GAS)["transactionHash"].to_0x_hex()


def publish_asset(
    w3: Web3,
    publisher: LocalAccount | str,
    contracts: OceanContracts,
    *,
    name: str,
    files: list[dict[str, Any]],
    provider_url: str,
    provider_address: str,
    encrypt: Encrypt,
    asset_type: Literal["dataset", "algorithm"] = "dataset",
    algorithm: dict[str, Any] | None = None,
    compute: dict[str, Any] | None = None,
    service_type: str = "compute",
    service_id: str | None = None,
    timeout: int = 0,
    description: str = "",
    flags: int = 0,
) -> PublishedAsset:
    """Publish one asset (NFT + datatoken + DDO on chain) with one service at index 0.

    `files` are Ocean file objects, e.g. [{"type": "url", "url": ..., "method": "GET"}];
    they are wrapped as {"datatokenAddress", "nftAddress", "files"} and passed to `encrypt`
    (the provider's /encrypt over HTTP, or ecies_encrypt_for(provider public key)).
    `compute` overrides the compute options (allowRawAlgorithm, allowNetworkAccess,
    publisherTrustedAlgorithms, publisherTrustedAlgorithmPublishers).
    """
    chain_id = w3.eth.chain_id
    nft, datatoken = create_nft_with_datatoken(w3, publisher, contracts, name)
    files_plain = json.dumps({"datatokenAddress": datatoken, "nftAddress": nft, "files": files})
    encrypted = encrypt(files_plain.encode())
    sid = service_id or hashlib.sha256((datatoken + encrypted).encode()).hexdigest()
    ddo = build_ddo(
        nft_address=nft,
        chain_id=chain_id,
        datatoken=datatoken,
        encrypted_files=encrypted,
        provider_url=provider_url,
        name=name,
        asset_type=asset_type,
        description=description,
        algorithm=algorithm,
        service_id=sid,
        service_type=service_type,
        timeout=timeout,
        compute=compute,
    )
    tx = set_ddo(
        w3, publisher, ddo, provider_url=provider_url, provider_address=provider_address,
        flags=flags, encrypt=encrypt,
    )  # fmt: skip
    return PublishedAsset(ddo["id"], ddo, nft, datatoken, sid, 0, tx)


# ---------------------------------------------------------------- tokens and orders


def mint_datatokens(
    w3: Web3, minter: LocalAccount | str, datatoken: str, to: str, amount: int = OCEAN_UNIT
) -> str:
    """Mint `amount` (wei; 1 token = 10**18, what one order costs) to `to`; returns tx hash."""
    call = contract(w3, "ERC20Template", datatoken).functions.mint(to, amount)
    return send(w3, minter, call)["transactionHash"].to_0x_hex()


def transfer_ocean(
    w3: Web3, sender: LocalAccount | str, ocean_token: str, to: str, amount: int
) -> str:
    """Transfer OCEAN (wei) so a consumer can pay fees; returns tx hash."""
    call = contract(w3, "OceanToken", ocean_token).functions.transfer(to, amount)
    return send(w3, sender, call)["transactionHash"].to_0x_hex()


def provider_data(environment: str, datatoken: str, service_id: str) -> dict[str, Any]:
    """The providerData object the provider signs into a compute provider fee."""
    now = int(time.time())
    return {"environment": environment, "timestamp": now, "dt": datatoken, "id": service_id}


def sign_provider_fee(
    provider: LocalAccount | str,
    *,
    data: dict[str, Any] | bytes,
    fee_token: str,
    valid_until: int,
    fee_amount: int = 0,
    fee_address: str | None = None,
) -> dict[str, Any]:
    """Build and sign a providerFee as initializeCompute returns it (for tests and tooling).

    Signature: EIP-191 personal_sign over solidityKeccak(bytes providerData, address
    feeAddress, address feeToken, uint256 amount, uint256 validUntil); the contract's
    ecrecover must yield providerFeeAddress, which defaults to the signer.
    """
    acct = as_account(provider)
    raw = data if isinstance(data, bytes) else json.dumps(data, separators=(",", ":")).encode()
    address = Web3.to_checksum_address(fee_address or acct.address)
    token = Web3.to_checksum_address(fee_token)
    digest = Web3.solidity_keccak(
        ["bytes", "address", "address", "uint256", "uint256"],
        [raw, address, token, fee_amount, valid_until],
    )
    sig = acct.sign_message(encode_defunct(primitive=digest))
    return {
        "providerFeeAddress": address,
        "providerFeeToken": token,
        "providerFeeAmount": fee_amount,
        "providerData": "0x" + raw.hex(),
        "v": sig.v,
        "r": "0x" + sig.r.to_bytes(32, "big").hex(),
        "s": "0x" + sig.s.to_bytes(32, "big").hex(),
        "validUntil": valid_until,
    }


def _provider_fee_tuple(fee: dict[str, Any]) -> tuple[Any, ...]:
    """providerFee struct in ABI order; accepts ints or numeric strings and v in {0,1,27,28}."""
    v = int(fee["v"])
    return (
        Web3.to_checksum_address(fee["providerFeeAddress"]),
        Web3.to_checksum_address(fee["providerFeeToken"]),
        int(fee["providerFeeAmount"]),
        v + 27 if v < 27 else v,
        _hex_to_bytes(fee["r"]).rjust(32, b"\0"),
        _hex_to_bytes(fee["s"]).rjust(32, b"\0"),
        int(fee["validUntil"]),
        _hex_to_bytes(fee["providerData"]),
    )


def _approve_fees(
    w3: Web3, payer: LocalAccount, datatoken: str, fees: list[tuple[str, str, int]]
) -> None:
    """Approve each (fee address, token, amount) the datatoken will pull from the payer.

    The contract skips a fee whose amount, token or address is zero, so those need nothing.
    """
    totals: dict[str, int] = {}
    for address, token, amount in fees:
        if amount > 0 and int(token, 16) and int(address, 16):
            totals[token] = totals.get(token, 0) + amount
    for token, amount in totals.items():
        call = contract(w3, "OceanToken", token).functions.approve(datatoken, amount)
        send(w3, payer, call, gas=CALL_GAS)


def start_order(
    w3: Web3,
    consumer_key: LocalAccount | str,
    datatoken: str,
    service_index: int,
    provider_fee: dict[str, Any],
    consumer: str | None = None,
    consume_market_fee: tuple[str, str, int] = (ZERO_ADDRESS, ZERO_ADDRESS, 0),
) -> str:
    """ERC20Template.startOrder paid by `consumer_key` (it must hold 1 datatoken).

    Approves the provider fee, the consume market fee and the datatoken's publish market
    fee first when they are non-zero. `consumer` (default: the payer) is who may use the
    order. Returns the transaction hash (the transferTxId of compute requests).
    """
    payer = as_account(consumer_key)
    dt = contract(w3, "ERC20Template", datatoken)
    pfee = _provider_fee_tuple(provider_fee)
    publish_fee = dt.functions.getPublishingMarketFee().call()
    _approve_fees(
        w3, payer, dt.address,
        [(pfee[0], pfee[1], pfee[2]), consume_market_fee, tuple(publish_fee)],
    )  # fmt: skip
    call = dt.functions.startOrder(
        Web3.to_checksum_address(consumer or payer.address),
        service_index,
        pfee,
        (
            Web3.to_checksum_address(consume_market_fee[0]),
            Web3.to_checksum_address(consume_market_fee[1]),
            int(consume_market_fee[2]),
        ),
    )
    return send(w3, payer, call)["transactionHash"].to_0x_hex()


def reuse_order(
    w3: Web3,
    payer_key: LocalAccount | str,
    datatoken: str,
    order_tx_id: str,
    provider_fee: dict[str, Any],
) -> str:
    """ERC20Template.reuseOrder: pay a new provider fee for an existing order (no datatoken)."""
    payer = as_account(payer_key)
    dt = contract(w3, "ERC20Template", datatoken)
    pfee = _provider_fee_tuple(provider_fee)
    _approve_fees(w3, payer, dt.address, [(pfee[0], pfee[1], pfee[2])])
    call = dt.functions.reuseOrder(_hex_to_bytes(order_tx_id), pfee)
    return send(w3, payer, call)["transactionHash"].to_0x_hex()
