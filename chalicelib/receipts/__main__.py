"""`python -m chalicelib.receipts verify receipt.json [output ...] [--provider 0x…]`: check a
signed compute receipt with nothing but this file and eth-account, no provider running.

It rebuilds the EIP-712 message from the receipt's own fields (the keccak-256 of its canonical
JSON included), recovers who signed it and requires that to be the receipt's `provider` (and
`--provider`, the address the DDO's service names, when given); then, for each output file
given, finds the receipt's output of that name (as computeResult names the download) and
recomputes its size and sha256. Exit 0 when everything holds, 1 when anything is refused (each
line says what), 2 when the command cannot run (a file missing, not JSON).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

_SAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")  # chalicelib.results: the name a download gets


def download_name(name: str) -> str:
    return _SAFE_FILENAME.sub("_", name.rsplit("/", 1)[-1]).strip("._") or "result"


def file_digest(path: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def verify(signed: Mapping[str, Any], outputs: Sequence[Path], provider: str | None = None) -> list[str]:
    """What is wrong with a signed receipt and these outputs ([] when nothing is)."""
    from chalicelib.receipts.signing import signer

    problems: list[str] = []
    receipt = signed.get("receipt") if isinstance(signed, Mapping) else None
    if not isinstance(receipt, Mapping) or not isinstance(signed.get("signature"), str):
        return ["not a signed receipt: it needs `receipt` and `signature`"]
    recovered = signer(signed)
    claimed = str(receipt.get("provider", ""))
    if recovered is None or recovered.lower() != claimed.lower():
        problems.append(f"signature: not signed by the receipt's provider {claimed} "
                        "(the receipt was changed, or another key signed it)")
    from chalicelib.receipts.canonical import typed_data
    from chalicelib.receipts.signing import SCHEME

    try:
        rebuilt = typed_data(receipt)
    except (KeyError, TypeError, ValueError) as problem:
        rebuilt = None
        problems.append(f"receipt: not a receipt this version knows ({problem})")
    if signed.get("eip712") != rebuilt or signed.get("scheme") != SCHEME:
        problems.append("eip712: the typed data it carries is not the one its receipt makes")
    if provider and claimed.lower() != provider.lower():
        problems.append(f"provider: the receipt names {claimed}, not {provider}")
    listed = {}
    for item in receipt.get("outputs") or []:
        if isinstance(item, Mapping) and isinstance(item.get("name"), str):
            listed[item["name"]] = item
            listed.setdefault(download_name(item["name"]), item)
    for path in outputs:
        item = listed.get(path.name)
        if item is None:
            problems.append(f"{path.name}: no output of that name in the receipt")
            continue
        size, digest = file_digest(path)
        if item.get("sha256") != digest or item.get("size") != size:
            problems.append(f"{path.name}: sha256 {digest} ({size} bytes) is not the receipt's "
                            f"{item.get('sha256')} ({item.get('size')} bytes)")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chalicelib.receipts", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("verify", help="check a receipt's signature and the outputs downloaded")
    check.add_argument("receipt", type=Path)
    check.add_argument("outputs", type=Path, nargs="*")
    check.add_argument("--provider", help="the provider address the dataset's DDO names (optional)")
    args = parser.parse_args(argv)
    try:
        signed = json.loads(args.receipt.read_text(encoding="utf-8"))
        missing = [str(path) for path in args.outputs if not path.is_file()]
    except (OSError, ValueError) as error:
        print(f"cannot read {args.receipt}: {error}", file=sys.stderr)
        return 2
    if missing:
        print(f"no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    problems = verify(signed, args.outputs, args.provider)
    receipt = signed.get("receipt", {}) if isinstance(signed, Mapping) else {}
    for problem in problems:
        print(f"REFUSED {problem}")
    if problems:
        return 1
    print(f"OK job {receipt.get('jobId')}: signed by {receipt.get('provider')} (chain {receipt.get('chainId')}), "
          f"status {receipt.get('status')}; {len(args.outputs)} output(s) match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
