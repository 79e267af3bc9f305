"""`python -m infra configure | gateway-responses | env | user-data` (see README, "Deploy to AWS")."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import ConfigurationError
from infra import gateway, network_rules, stage

DEFAULT_ENVIRONMENTS = Path("chalicelib/compute/environments.json")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m infra", description=__doc__)
    parser.add_argument("--project-dir", type=Path, default=Path("."), help="the Chalice project (default: .)")
    commands = parser.add_subparsers(dest="command", required=True)

    configure = commands.add_parser("configure", help="record a stack's outputs in .chalice/ for a stage")
    configure.add_argument("--stage", required=True, choices=["dev", "prod"])
    source = configure.add_mutually_exclusive_group()
    source.add_argument("--stack", help="the infrastructure stack (default: ocean-c2d-<stage>)")
    source.add_argument("--outputs-file", type=Path,
                        help="read the outputs from a JSON object {OutputKey: value} instead of CloudFormation")
    configure.add_argument("--chains", help='CHAINS, {"<chainId>": "<rpcUrl>"} (default: the stage\'s current value)')
    configure.add_argument("--provider-url", help="public URL of the API (default: the stage's, or the one chalice deploy recorded)")
    configure.add_argument("--metadata-url", help="an Aquarius-compatible metadata service ('' to drop it)")
    configure.add_argument("--environments", type=Path, help=f"compute environments file (default: the stage's current ones, else {DEFAULT_ENVIRONMENTS})")
    configure.add_argument("--runner-tag", default="latest", help="tag of the runner image in the stack's repository")
    configure.add_argument("--token-max-lifetime", type=int, help="TOKEN_MAX_LIFETIME in seconds")
    configure.add_argument("--admin-addresses", help="ADMIN_ADDRESSES: the operators' addresses, comma-separated "
                                                     "(the console at /admin; default: the stage's current ones)")

    responses = commands.add_parser("gateway-responses", help="after chalice deploy: JSON 404 for unknown routes")
    responses.add_argument("--stage", required=True)

    variables = commands.add_parser("env", help="print the stage's variables as `export` lines (for the asset CLI)")
    variables.add_argument("--stage", required=True)

    user_data = commands.add_parser("user-data", help="the Batch instances' user data (algorithm network rules)")
    user_data.add_argument("--write", action="store_true", help="rewrite it into infra/resources.yaml")
    return parser


def _current_variables(project_dir: Path, stage_name: str) -> dict[str, str]:
    config = json.loads((project_dir / ".chalice" / "config.json").read_text())
    return dict(config.get("stages", {}).get(stage_name, {}).get("environment_variables", {}))


def _outputs(args: argparse.Namespace) -> dict[str, str]:
    if args.outputs_file:
        return {str(k): str(v) for k, v in json.loads(args.outputs_file.read_text()).items()}
    import boto3

    return stage.read_stack_outputs(boto3.client("cloudformation"), args.stack or f"ocean-c2d-{args.stage}")


def _provider_url(args: argparse.Namespace, existing: str) -> str:
    """--provider-url, else the stage's own URL, else (while it is still the example's, on the
    reserved .invalid domain) the API URL `chalice deploy` recorded."""
    if args.provider_url:
        return args.provider_url
    host = urlsplit(existing).hostname or ""
    if host and not host.endswith(".invalid"):
        return existing
    return stage.deployed_url(args.project_dir, args.stage) or existing


def configure(args: argparse.Namespace) -> list[Path]:
    current = _current_variables(args.project_dir, args.stage)
    if args.environments:
        environments = json.loads(args.environments.read_text())
    elif current.get("COMPUTE_ENVIRONMENTS"):
        environments = json.loads(current["COMPUTE_ENVIRONMENTS"])
    else:
        environments = json.loads((args.project_dir / DEFAULT_ENVIRONMENTS).read_text())
    chains = args.chains or current.get("CHAINS")
    provider_url = _provider_url(args, current.get("PROVIDER_URL", ""))
    if not chains or not provider_url:
        raise ConfigurationError("give --chains and --provider-url (the stage has none yet)")
    env = stage.stage_environment(
        _outputs(args), stage=args.stage, chains=chains, provider_url=provider_url,
        environments=environments, runner_tag=args.runner_tag,
        metadata_url=current.get("METADATA_URL") if args.metadata_url is None else args.metadata_url,
        token_max_lifetime=args.token_max_lifetime or int(current.get("TOKEN_MAX_LIFETIME", "86400")),
        admin_addresses=current.get("ADMIN_ADDRESSES") if args.admin_addresses is None else args.admin_addresses,
    )
    return stage.write_stage(args.project_dir, args.stage, env)


def gateway_responses(args: argparse.Namespace) -> list[str]:
    import boto3

    rest_api_id, api_stage = gateway.deployed_rest_api(args.project_dir, args.stage)
    return gateway.put_gateway_responses(boto3.client("apigateway"), rest_api_id, api_stage)


def export_lines(args: argparse.Namespace) -> list[str]:
    """`eval "$(python -m infra env --stage dev)"` gives a shell the stage's Lambda environment."""
    variables = _current_variables(args.project_dir, args.stage)
    if not variables:
        raise LookupError(f"stage {args.stage} has no environment_variables in .chalice/config.json")
    return [f"export {name}={shlex.quote(value)}" for name, value in variables.items()]


def write_user_data(args: argparse.Namespace) -> int:
    if not args.write:
        print(network_rules.user_data(), end="")
        return 0
    template = args.project_dir / "infra" / "resources.yaml"
    template.write_text(network_rules.embed(template.read_text()))
    print(f"updated {template}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "env":
            print("\n".join(export_lines(args)))
            return 0
        if args.command == "user-data":
            return write_user_data(args)
        result: Any = configure(args) if args.command == "configure" else gateway_responses(args)
    except (ConfigurationError, FileNotFoundError, LookupError, ValueError, ClientError, BotoCoreError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for item in result:
        print(f"updated {item}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
