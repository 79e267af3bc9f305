"""The few Ocean contract ABI fragments the provider reads at runtime.

The full `ocean-contracts` artifacts (bytecode included) are a development dependency, far too big
for the Lambda bundle; the provider only decodes a handful of events and calls a handful of view
functions, so those fragments are extracted once and committed under `abi/` as JSON:

    python -m chalicelib.chain.abi --refresh

A test checks that the committed fragments still equal the installed package's.
"""
from __future__ import annotations

import argparse
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

ABI_DIR = Path(__file__).with_name("abi")

FRAGMENTS: dict[str, tuple[str, ...]] = {
    # Orders and provider fees (DESIGN §3.5), the datatoken's identity and the fee token's decimals.
    "ERC20Template": (
        "OrderStarted",
        "OrderReused",
        "ProviderFee",
        "getId",
        "getERC721Address",
        "decimals",
        # what an indexer shows of a datatoken (chalicelib.assets.indexed)
        "name",
        "symbol",
        "getFixedRates",
        "getDispensers",
    ),
    # Where DDOs are published and read back (MetadataCreated/Updated carry the DDO).
    "ERC721Template": (
        "MetadataCreated",
        "MetadataUpdated",
        "getMetaData",
        "ownerOf",
        "isDeployed",
        "getId",
        "Transfer",
        "MetadataState",
        "name",
        "symbol",
        "tokenURI",
    ),
    # Who created a data NFT (the free tier is keyed on it, not on the transferable owner).
    "ERC721Factory": ("NFTCreated",),
    # Ocean's access lists (environments' `access`): holding one of its tokens lists an address.
    "AccessList": ("balanceOf",),
    # a datatoken's fixed price (chalicelib.assets.indexed)
    "FixedRateExchange": ("getExchange",),
    # Ocean Node's escrow payments (issue 14): what the provider (payee) sends and checks.
    "Escrow": (
        "Lock",
        "Claimed",
        "Canceled",
        "createLock",
        "claimLock",
        "claimLockAndWithdraw",
        "getUserFunds",
        "getAuthorizations",
        "getLocks",
    ),
}


@lru_cache(maxsize=None)
def load(contract: str) -> list[dict[str, Any]]:
    """The committed ABI fragments of `contract` (e.g. "ERC20Template"), as web3 takes them."""
    if contract not in FRAGMENTS:
        raise KeyError(f"no ABI fragments for {contract!r}")
    return json.loads((ABI_DIR / f"{contract}.json").read_text())


def extract(contract: str) -> list[dict[str, Any]]:
    """The fragments of `contract` as the installed `ocean-contracts` package defines them.

    Keeps the artifact's order, so a refresh only changes the files when the ABI changed.
    """
    from importlib.resources import files

    artifact = json.loads(files("artifacts").joinpath(f"{contract}.json").read_text())
    wanted = FRAGMENTS[contract]
    fragments = [item for item in artifact["abi"] if item.get("name") in wanted]
    missing = set(wanted) - {item["name"] for item in fragments}
    if missing:
        raise LookupError(f"{contract} artifact lacks {sorted(missing)}")
    return fragments


def refresh() -> list[Path]:
    """Rewrite every committed fragment file from the installed package; returns the paths."""
    ABI_DIR.mkdir(exist_ok=True)
    written = []
    for contract in FRAGMENTS:
        path = ABI_DIR / f"{contract}.json"
        path.write_text(json.dumps(extract(contract), indent=1, sort_keys=True) + "\n")
        written.append(path)
    load.cache_clear()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chalicelib.chain.abi", description=__doc__.splitlines()[0])
    parser.add_argument("--refresh", action="store_true", help="rewrite abi/*.json from the ocean-contracts package")
    args = parser.parse_args(argv)
    if not args.refresh:
        parser.print_help()
        return 0
    for path in refresh():
        print(f"wrote {path.parent.name}/{path.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
