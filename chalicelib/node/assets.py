"""Ocean Node's asset routes (`GET <node>/api/aquarius/assets/ddo/{did}` and `.../metadata/{did}`),
which Ocean's CLI and ocean.js read every DDO from, `POST <node>/api/aquarius/assets/ddo/validate`,
which ocean.js's publishing asks for the metaDataHash of an encrypted DDO, and its
`POST <node>/directCommand` `{"command": "status"}`, where ocean.js 9 finds the node's peer id
before it signs a token.

The DDO is what the resolver knows (registered or indexed assets, or METADATA_URL's), in Ocean
Node's shape: the DDO with `datatokens` and `indexedMetadata` {nft, event, purgatory, stats}
beside it. Unsigned and read-only, as Ocean Node's: a published DDO is public on chain anyway;
files stay encrypted. An unknown did is 404. Answers may be cached for CACHE_SECONDS.
"""
from __future__ import annotations

import time
from typing import Any

from chalice import Response

from chalicelib import services
from chalicelib.assets.ddo import Asset
from chalicelib.errors import BusinessError, NotFound
from chalicelib.http import Call, json_response
from chalicelib.root import VERSION

CACHE_SECONDS = 30
STATUS_COMMAND = "status"
_STARTED = time.time()


def ddo(call: Call) -> Response:
    """The asset in Ocean Node's shape, 404 when this provider does not know it."""
    try:
        asset = services.asset_resolver().resolve(call.params.did, "asset")
    except BusinessError as refusal:
        if "asset.documentId" in (refusal.error if isinstance(refusal.error, dict) else {}):
            raise NotFound("DDO not found") from None
        raise
    return json_response(ddo_view(asset), headers={"Cache-Control": f"public, max-age={CACHE_SECONDS}"})


def ddo_view(asset: Asset) -> dict[str, Any]:
    """The DDO with `datatokens` and `indexedMetadata` (the NFT's current state and owner)."""
    document = dict(asset.ddo)
    indexed = asset.indexed or {}
    services_ = [s for s in document.get("services") or [] if isinstance(s, dict)]
    datatokens = indexed.get("datatokens") or document.get("datatokens") or [
        {"address": s["datatokenAddress"], "name": "", "symbol": "", "serviceId": str(s.get("id", ""))}
        for s in services_ if isinstance(s.get("datatokenAddress"), str)]
    metadata = dict(indexed.get("indexedMetadata") or document.get("indexedMetadata") or {
        key: document[key] for key in ("nft", "event", "stats", "purgatory") if key in document})
    metadata["nft"] = {**(metadata.get("nft") or {"address": asset.nft_address}), "state": asset.state,
                       **({"owner": asset.owner} if asset.owner else {})}
    metadata.setdefault("purgatory", {"state": False})
    metadata.setdefault("stats", [])
    return {**document, "datatokens": datatokens, "indexedMetadata": metadata}


def validate_ddo(call: Call) -> dict[str, Any]:
    """Ocean Node's DDO validation, for its publishers: the DDO's shape is checked (what this
    provider needs to serve it: its did follows from its NFT and chain, a served chain, metadata,
    services with files, datatoken and endpoint), and the answer is the hash to set as
    metaDataHash (assets.document_hash), signed with the provider key as Ocean Node signs it.
    Signed by the publisher (address + nonce + validateDDO), so it is no free signing service."""
    from coincurve import PrivateKey

    from chalicelib.assets.document_hash import validation_hash
    from chalicelib.auth.signatures import signed_digest

    document = call.params.ddo  # the publisher's signature was checked and its nonce spent (chalicelib.http)
    problem = _unpublishable(document)
    if problem:
        raise BusinessError(f"Validation error: {problem}")
    try:
        digest = validation_hash(document)
    except ValueError:
        raise BusinessError("Validation error: the DDO holds a value JSON cannot carry") from None
    key = PrivateKey(bytes.fromhex(services.settings().provider_private_key().removeprefix("0x")))
    signature = key.sign_recoverable(signed_digest(digest), hasher=None)
    return {"hash": digest, "publicKey": services.provider_address(), "r": "0x" + signature[:32].hex(),
            "s": "0x" + signature[32:64].hex(), "v": signature[64] + 27}


def _unpublishable(document: dict[str, Any]) -> str:
    """Why this provider could not serve the DDO once set on chain ("" when it could)."""
    from chalicelib.assets.ddo import as_int, compute_did
    from chalicelib.auth.signatures import is_address

    chain_id, nft = as_int(document.get("chainId")), document.get("nftAddress")
    if not isinstance(document.get("version"), str) or not document["version"]:
        return "version is required"
    if chain_id not in services.settings().chain_ids:
        return f"chainId {document.get('chainId')!r} is not a chain this provider serves"
    if not is_address(nft):
        return "nftAddress must be the data NFT's address"
    if document.get("id") != compute_did(str(nft), chain_id):
        return "id must be did:op: + sha256(nftAddress + chainId)"
    metadata = document.get("metadata")
    if not isinstance(metadata, dict) or metadata.get("type") not in ("dataset", "algorithm") \
            or not isinstance(metadata.get("name"), str):
        return "metadata needs a type (dataset or algorithm) and a name"
    listed = document.get("services")
    if not isinstance(listed, list) or not listed:
        return "services must list at least one service"
    for position, service in enumerate(listed):
        if not isinstance(service, dict) or not all(
                isinstance(service.get(name), str) and service[name]
                for name in ("id", "type", "files", "datatokenAddress", "serviceEndpoint")):
            return f"services[{position}] needs id, type, files, datatokenAddress and serviceEndpoint"
    return ""


def direct_command(call: Call) -> dict[str, Any]:
    """Only `status` is served here: the rest of Ocean Node's commands are its P2P node's."""
    command = call.params.command
    if command != STATUS_COMMAND:
        raise BusinessError(f"Command {command!r} is not supported by this provider; only {STATUS_COMMAND!r} is")
    return status()


def status() -> dict[str, Any]:
    """Ocean Node's status answer (`core/utils/statusHandler.ts`) for what this provider is: its
    peer id and keys, the chains it serves and their escrows; no P2P, no indexer database."""
    from chalicelib.payments.setup import escrow_addresses

    settings = services.settings()

    escrows = escrow_addresses()
    chains = [str(chain_id) for chain_id in settings.chain_ids]
    return {
        "id": services.provider_peer_id(),
        "publicKey": services.provider_public_key().removeprefix("0x"),
        "address": services.provider_address(),
        "version": VERSION,
        "http": True,
        "p2p": False,
        "provider": [{"chainId": chain, "network": chain} for chain in chains],
        "indexer": [],
        "escrowAddress": {chain: escrows.get(int(chain)) for chain in chains},
        "supportedStorage": {"url": True, "arwave": True, "ipfs": True},
        "uptime": round(time.time() - _STARTED, 3),
    }


__all__ = ["CACHE_SECONDS", "ddo", "ddo_view", "direct_command", "status", "validate_ddo"]
