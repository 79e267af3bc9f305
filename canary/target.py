"""Where the canary runs its probes: the local stack of `make run`, or a deployed stage.

- local (no stage, or `local`): `.local/stack.json` (or DEVSTACK_STATE_DIR's) gives the provider
  URL, the chain and a funded consumer key; the canary publishes fresh canary datasets with that
  key each run. Local environments have no network queue (a network-allowed local job shares the
  host's network, README "Local mode, plainly"), so only sealed probes run.
- a stage (`dev`, `prod`): `.chalice/config.json` gives PROVIDER_URL (or the URL `chalice deploy`
  recorded), CHAINS and COMPUTE_ENVIRONMENTS (which ones have a networkJobQueue);
  `.chalice/canary-<stage>.json` names the canary datasets (`python -m canary publish`), and the
  canary's key comes from CANARY_PRIVATE_KEY, never from the command line.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from canary import datasets
from canary.client import Dataset

KEY_VARIABLE = "CANARY_PRIVATE_KEY"


class TargetError(Exception):
    """The canary cannot run against this target; the message says what to do."""


@dataclass
class Target:
    where: str  # "local" | "aws"
    name: str
    provider_url: str
    chain_id: int
    rpc_url: str
    key: str
    sealed: Dataset | None = None
    network: Dataset | None = None
    networked: dict[str, bool] | None = None  # environment id -> has a network queue (None: none do)

    def has_network_queue(self, environment: str) -> bool:
        return bool((self.networked or {}).get(environment))


def state_dir(project_dir: Path) -> Path:
    return Path(os.environ.get("DEVSTACK_STATE_DIR") or project_dir / ".local")


def local_target(stack_file: Path) -> tuple[Target, dict[str, Any]]:
    if not stack_file.exists():
        raise TargetError(f"{stack_file} not found: start the local stack with `make run` first")
    stack = json.loads(stack_file.read_text())
    target = Target("local", "local", stack["providerUrl"], int(stack["chainId"]), stack["rpcUrl"],
                    stack["consumerPrivateKey"])
    return target, stack


def publish_local(target: Target, stack: dict[str, Any]) -> None:
    """Fresh canary datasets on the local chain, owned by the stack's funded consumer."""
    from web3 import Web3

    from devstack.contracts import OceanContracts

    addresses = stack["contracts"]
    contracts = OceanContracts(OceanToken=addresses["OceanToken"], OPFCommunityFeeCollector="",
                               FactoryRouter=addresses["FactoryRouter"], ERC20Template="", ERC721Template="",
                               ERC721Factory=addresses["ERC721Factory"], Escrow=addresses.get("Escrow", ""))
    w3 = Web3(Web3.HTTPProvider(target.rpc_url))
    made = datasets.publish(w3, target.key, contracts, target.provider_url, target.chain_id,
                            datasets.register_locally(stack), network=False)
    target.sealed = Dataset.from_dict(made["sealed"])


def stage_variables(project_dir: Path, stage: str) -> dict[str, str]:
    config = json.loads((project_dir / ".chalice" / "config.json").read_text())
    variables = config.get("stages", {}).get(stage, {}).get("environment_variables")
    if not variables:
        raise TargetError(f"stage {stage!r} has no environment_variables in .chalice/config.json")
    return variables


def stage_url(project_dir: Path, stage: str, variables: dict[str, str]) -> str:
    from infra.stage import deployed_url

    url = variables.get("PROVIDER_URL", "")
    if not url or (urlsplit(url).hostname or "").endswith(".invalid"):
        url = deployed_url(project_dir, stage) or ""
    if not url:
        raise TargetError(f"stage {stage!r} has no provider URL yet: deploy it first (README, Deploy to AWS)")
    return url


def canary_key() -> str:
    key = os.environ.get(KEY_VARIABLE, "").strip()
    if not key:
        raise TargetError(f"set {KEY_VARIABLE} to the canary's key (0x-hex; README, 'Canary')")
    return key


def stage_target(project_dir: Path, stage: str, datasets_path: Path | None = None) -> Target:
    variables = stage_variables(project_dir, stage)
    path = datasets_path or datasets.datasets_file(project_dir, stage)
    if not path.exists():
        raise TargetError(f"{path} not found: publish the canary datasets first (python -m canary publish --stage {stage})")
    published = datasets.load(path)
    chain_id = int(published["chainId"])
    chains = json.loads(variables.get("CHAINS", "{}"))
    environments = json.loads(variables.get("COMPUTE_ENVIRONMENTS", "[]"))
    networked = {str(e["id"]): bool(e.get("networkJobQueue")) for e in environments}
    return Target("aws", stage, stage_url(project_dir, stage, variables), chain_id, chains.get(str(chain_id), ""),
                  canary_key(), Dataset.from_dict(published["sealed"]),
                  Dataset.from_dict(published["network"]) if published.get("network") else None, networked)


def with_datasets(target: Target, path: Path) -> Target:
    """Run on the datasets of a file instead (e.g. an operator's own, or the local sample)."""
    published = datasets.load(path)
    target.sealed = Dataset.from_dict(published["sealed"])
    target.network = Dataset.from_dict(published["network"]) if published.get("network") else None
    return target
