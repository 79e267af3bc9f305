"""`make canary [STAGE=<stage>]`: probe every compute environment for escapes, as a consumer.

    python -m canary run [--stage STAGE] [--path paid|free] [--environment ID ...] [--image IMAGE] ...
    python -m canary publish --stage STAGE [--chain-id N] [--no-network]

`run` exits 0 when every line is PASS or SKIP, 1 on any FAIL (an escape, or a probe job that did
not complete), 2 when it could not run at all (the reason on stderr). See README, "Canary".
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from canary import datasets
from canary.client import Refused
from canary.run import Settings, run
from canary.target import TargetError, canary_key, local_target, publish_local, stage_target, stage_variables, \
    stage_url, state_dir, with_datasets
from canary.verdict import failed, render

PROJECT_DIR = Path(__file__).resolve().parent.parent
LOCAL_STAGES = ("", "local")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m canary", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    runs = commands.add_parser("run", help="start the probe jobs, print the table, exit 1 on any escape")
    runs.add_argument("--stage", default="", help="a deployed stage (dev, prod); none or 'local': the local stack")
    runs.add_argument("--stack", type=Path, help="the local stack's stack.json (default: .local/stack.json)")
    runs.add_argument("--path", choices=("paid", "free"), default="paid",
                      help="paid: Ocean Provider v4 start with an order; free: Ocean Node freeCompute (default: paid)")
    runs.add_argument("--environment", action="append", default=[], help="only this environment (repeatable)")
    runs.add_argument("--image", default="python:3.13-slim", help="the probe's image (default: python:3.13-slim)")
    runs.add_argument("--datasets", type=Path, help="a canary datasets file instead of the stage's (or a fresh local one)")
    runs.add_argument("--window", type=float, help="seconds each probe keeps trying the others (aws 120, local 8)")
    runs.add_argument("--timeout", type=float, help="seconds to wait for the jobs (aws 3600, local 300)")
    publish = commands.add_parser("publish", help="publish the canary datasets for a stage (once)")
    publish.add_argument("--stage", required=True)
    publish.add_argument("--chain-id", type=int, help="the chain (default: the stage's only one)")
    publish.add_argument("--no-network", action="store_true", help="no network-allowed dataset (no network queues)")
    return parser


def command_run(args: argparse.Namespace) -> int:
    local = args.stage in LOCAL_STAGES
    if local:
        target, stack = local_target(args.stack or state_dir(PROJECT_DIR) / "stack.json")
        if args.path == "free":
            from eth_account import Account

            target.key = Account.create().key.to_0x_hex()  # free compute needs no funds: a key of its own
        if args.datasets:
            with_datasets(target, args.datasets)
        else:
            publish_local(target, stack)
    else:
        target = stage_target(PROJECT_DIR, args.stage, args.datasets)
    settings = Settings(path=args.path, image=args.image, environments=args.environment,
                        window=args.window or (8.0 if local else 120.0), timeout=args.timeout or (300.0 if local else 3600.0),
                        poll=1.0 if local else 10.0)
    order = None
    if args.path == "paid":
        if not target.rpc_url:
            raise TargetError(f"no RPC URL for chain {target.chain_id} in the stage's CHAINS")
        from web3 import Web3

        from devstack.orders import start_order

        w3 = Web3(Web3.HTTPProvider(target.rpc_url))

        def order(dataset, fee):  # noqa: ANN001, ANN202 - the client's order callback
            return start_order(w3, target.key, dataset.datatoken, dataset.serviceIndex, fee)
    decoys = None
    if local:
        from canary.decoys import Decoys

        decoys = Decoys()
    rows = run(target, settings, say=lambda line: print(line, flush=True), order=order, decoys=decoys)
    print()
    print(render(rows), end="", flush=True)
    return 1 if failed(rows) else 0


def command_publish(args: argparse.Namespace) -> int:
    from web3 import Web3

    variables = stage_variables(PROJECT_DIR, args.stage)
    chains = {int(k): v for k, v in json.loads(variables.get("CHAINS", "{}")).items()}
    chain_id = args.chain_id or (next(iter(chains)) if len(chains) == 1 else None)
    if chain_id is None or chain_id not in chains:
        raise TargetError(f"give --chain-id, one of the stage's chains {sorted(chains)}")
    config = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())
    function = f"{config['app_name']}-{args.stage}-register_asset"
    made = datasets.publish(Web3(Web3.HTTPProvider(chains[chain_id])), canary_key(), datasets.contracts_of(chain_id),
                            stage_url(PROJECT_DIR, args.stage, variables), chain_id,
                            datasets.register_on_stage(function), network=not args.no_network)
    path = datasets.datasets_file(PROJECT_DIR, args.stage)
    path.write_text(json.dumps(made, indent=2) + "\n")
    print(f"published and registered; wrote {path}")
    print(json.dumps(made, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return command_run(args) if args.command == "run" else command_publish(args)
    except (TargetError, Refused, RuntimeError, ValueError, OSError) as error:
        print(f"canary: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
