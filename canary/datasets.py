"""The canary's own datasets: what the probe is started on.

A probe job needs a dataset that allows raw algorithms, served by this provider. The canary
publishes its own (`python -m canary publish`), owned by the canary's key, so no data owner's
dataset is ever opened for raw code:
- "C2D canary (sealed)": `allowNetworkAccess: false`;
- "C2D canary (network)": `allowNetworkAccess: true`, for the environments' network queues.
Their one file is the provider's own root document (`GET <provider URL>/`): public, tiny, and
always there, so the datasets need no storage of their own. The key mints itself datatokens for
paid runs. Then the provider is told about them, as for any asset (README, "Register assets"):
locally with `python -m chalicelib.assets.register` in the local stack's settings, on a stage
through its `register_asset` function.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import requests
from eth_account import Account
from web3 import Web3

from devstack.contracts import OceanContracts
from devstack.orders import mint_datatokens
from devstack.publish import publish_asset

REPO_ROOT = Path(__file__).resolve().parent.parent
DATATOKENS = 100 * 10**18  # a hundred runs' orders
COMPUTE = {"allowRawAlgorithm": True, "publisherTrustedAlgorithms": [], "publisherTrustedAlgorithmPublishers": []}
Register = Callable[[int, str, str], None]


def datasets_file(project_dir: Path, stage: str) -> Path:
    return project_dir / ".chalice" / f"canary-{stage}.json"


def load(path: Path) -> dict[str, Any]:
    """{"chainId", "sealed": {...}, "network": {...} | None} as `publish` wrote it."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or "sealed" not in data or "chainId" not in data:
        raise ValueError(f"{path} is not a canary datasets file (python -m canary publish writes one)")
    return data


def contracts_of(chain_id: int) -> OceanContracts:
    """Ocean's deployed contracts on a public chain, from the ocean-contracts package's address.json."""
    from importlib.resources import files

    networks = json.loads(files("addresses").joinpath("address.json").read_text())
    for network in networks.values():
        if int(network.get("chainId", -1)) == chain_id:
            return OceanContracts(OceanToken=network["Ocean"], OPFCommunityFeeCollector=network["OPFCommunityFeeCollector"],
                                  FactoryRouter=network["Router"], ERC20Template=network["ERC20Template"]["1"],
                                  ERC721Template=network["ERC721Template"]["1"], ERC721Factory=network["ERC721Factory"],
                                  Escrow=network.get("Escrow", ""))
    raise ValueError(f"chain {chain_id} is not in ocean-contracts' address.json: Ocean is not deployed there")


def publish(w3: Web3, key: str, contracts: OceanContracts, provider_url: str, chain_id: int, register: Register,
            network: bool = True) -> dict[str, Any]:
    """Publish the canary datasets with `key` as their owner, mint it datatokens, register them."""
    provider_url = provider_url.rstrip("/")
    root = requests.get(provider_url + "/", timeout=30).json()
    provider_address = (root.get("providerAddresses") or {}).get(str(chain_id)) or root["providerAddress"]

    def encrypt(data: bytes) -> str:
        answer = requests.post(f"{provider_url}/api/services/encrypt", params={"chainId": chain_id}, data=data,
                               headers={"Content-Type": "application/octet-stream"}, timeout=30)
        answer.raise_for_status()
        return answer.text

    made: dict[str, Any] = {"chainId": chain_id, "providerUrl": provider_url, "network": None}
    for mode in ("sealed", "network") if network else ("sealed",):
        asset = publish_asset(
            w3, key, contracts, name=f"C2D canary ({mode})", provider_url=provider_url, provider_address=provider_address,
            files=[{"type": "url", "url": provider_url + "/", "method": "GET"}], encrypt=encrypt,
            compute={**COMPUTE, "allowNetworkAccess": mode == "network"},
            description="The compute-to-data canary's dataset: the provider's own root document. Only the canary's "
                        "probe runs on it (make canary).")
        mint_datatokens(w3, key, asset.datatoken, Account.from_key(key).address, DATATOKENS)
        register(chain_id, asset.nftAddress, asset.metadataTxId)
        made[mode] = {"did": asset.did, "serviceId": asset.serviceId, "serviceIndex": asset.serviceIndex,
                      "datatoken": asset.datatoken, "nftAddress": asset.nftAddress}
    return made


def register_locally(stack: dict[str, Any]) -> Register:
    """Register with the local stack's provider: the register CLI in the stack's settings."""
    from devstack.stack import stack_environment

    chains = {int(stack["chainId"]): stack["rpcUrl"]}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
           **stack_environment(stack["awsEndpoint"], chains, stack["providerUrl"]), "PYTHONPATH": str(REPO_ROOT)}

    def register(chain_id: int, nft: str, tx: str) -> None:
        done = subprocess.run([sys.executable, "-m", "chalicelib.assets.register", "--chain-id", str(chain_id),
                               "--nft", nft, "--tx", tx], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"registering {nft} failed: {done.stderr.strip()[-500:]}")

    return register


def register_on_stage(function_name: str, client: Any = None) -> Register:
    """Register through the stage's deployed `register_asset` function (the operator's AWS credentials)."""
    if client is None:
        import boto3

        client = boto3.client("lambda")

    def register(chain_id: int, nft: str, tx: str) -> None:
        answer = client.invoke(FunctionName=function_name, Payload=json.dumps(
            {"chainId": chain_id, "nftAddress": nft, "txHash": tx}).encode())
        body = answer["Payload"].read().decode()
        if answer.get("FunctionError"):
            raise RuntimeError(f"{function_name} could not register {nft}: {body[:500]}")

    return register
