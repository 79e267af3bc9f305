"""Publish assets on a dev chain exactly as Ocean publishers do.

Publishing = createNftWithErc20 on the factory, a DDO v4.1 whose service `files` are
ECIES-encrypted for the provider, then setMetaData on the NFT (which emits MetadataCreated,
where the provider and Aquarius read the DDO from). Ordering them is `devstack.orders`.
"""

from __future__ import annotations

import hashlib
import json
import lzma
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Literal

from eth_account.signers.local import LocalAccount
from web3 import Web3

from devstack.contracts import (
    DEPLOY_GAS,
    OCEAN_UNIT,
    ZERO_ADDRESS,
    OceanContracts,
    as_account,
    contract,
    decode_events,
    hex_to_bytes,
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
        data = hex_to_bytes(encrypt(data))
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
















