"""Register an NFT whose DDO this provider reads from the chain (no metadata service needed).

    python -m chalicelib.assets.register --chain-id 8996 --nft 0x... [--tx 0x... | --from-block N]
    python -m chalicelib.assets.register --remove did:op:...

It uses the provider's own settings (CHAINS, ASSETS_TABLE, PROVIDER_PRIVATE_KEY...), reads the
NFT's latest MetadataCreated/MetadataUpdated event, checks the DDO and caches it. Give the
setMetaData transaction (`--tx`) or a block before it (`--from-block`) on long chains: without
them the search starts at block 0. `register_asset` and `handle_event` do the same from Lambda.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Mapping

from chalicelib.assets.ddo import Asset
from chalicelib.assets.resolver import AssetResolver
from chalicelib.errors import ProviderError


def register_asset(
    chain_id: int, nft_address: str, *, tx_hash: str | None = None, from_block: int = 0,
    resolver: AssetResolver | None = None,
) -> Asset:
    """Register (or refresh) an NFT's asset with the container's resolver; returns the Asset."""
    if resolver is None:
        from chalicelib import services

        resolver = services.asset_resolver()
    return resolver.register(chain_id, nft_address, tx_hash=tx_hash, from_block=from_block)


def handle_event(event: Mapping[str, Any], resolver: AssetResolver | None = None) -> dict[str, Any]:
    """A Lambda-friendly entry: {"chainId", "nftAddress", "txHash"?, "fromBlock"?} -> summary."""
    asset = register_asset(
        int(event["chainId"]), str(event["nftAddress"]),
        tx_hash=event.get("txHash"), from_block=int(event.get("fromBlock") or 0), resolver=resolver,
    )  # fmt: skip
    return summary(asset)


def summary(asset: Asset) -> dict[str, Any]:
    """What an operator wants to see: no encrypted files, just what was registered."""
    return {
        "did": asset.did,
        "chainId": asset.chain_id,
        "nftAddress": asset.nft_address,
        "state": asset.state,
        "type": asset.type,
        "name": asset.metadata.get("name"),
        "services": [{"id": s.get("id"), "type": s.get("type")} for s in asset.services],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chalicelib.assets.register", description=__doc__.splitlines()[0])
    parser.add_argument("--chain-id", type=int, help="chain of the NFT (one of CHAINS)")
    parser.add_argument("--nft", help="the data NFT address")
    bound = parser.add_mutually_exclusive_group()
    bound.add_argument("--tx", help="the setMetaData transaction hash (fastest)")
    bound.add_argument("--from-block", type=int, default=0, help="search metadata events from this block")
    parser.add_argument("--remove", metavar="DID", help="forget a registered did instead")
    args = parser.parse_args(argv)
    from chalicelib import services

    try:
        if args.remove:
            removed = services.asset_resolver().unregister(args.remove)
            print(json.dumps({"did": args.remove, "removed": removed}))
            return 0 if removed else 1
        if args.chain_id is None or not args.nft:
            parser.error("--chain-id and --nft are required (or --remove DID)")
        asset = register_asset(args.chain_id, args.nft, tx_hash=args.tx, from_block=args.from_block)
    except ProviderError as error:
        print(f"error: {json.dumps(error.body())}", file=sys.stderr)
        return 2
    print(json.dumps(summary(asset), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
