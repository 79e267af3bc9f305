"""`make run`: the whole provider on one machine, no AWS account and no Docker.

Brings up a moto server as the local AWS (tables, bucket), anvil with the Ocean contracts, a
static file server for the sample data, and the API (Chalice's local server) on PORT (8030)
with the local compute backend; publishes the sample dataset and algorithm, funds a consumer,
and writes what it set up to .local/stack.json. Every child stops on Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
import threading
import time
from pathlib import Path

from chalicelib.auth.signatures import address_of_key
from devstack.processes import ProcessGroup, wait_for_http
from devstack.samples import SAMPLE_DIR, publish_samples

REPO_ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = Path(os.environ.get("DEVSTACK_STATE_DIR") or REPO_ROOT / ".local")

# anvil's well-known development key #9 stands in for the provider's key: never a real key.
DEV_PROVIDER_KEY = "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6"


def stack_environment(moto_url: str, chains: dict[int, str], provider_url: str) -> dict[str, str]:
    """What the API and the tools need to reach the local AWS and chain."""
    return {
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "RESOURCE_PREFIX": "local",
        "RESULTS_BUCKET": "local-c2d-results",
        "CHAINS": json.dumps({str(k): v for k, v in chains.items()}),
        "PROVIDER_PRIVATE_KEY": os.environ.get("PROVIDER_PRIVATE_KEY", DEV_PROVIDER_KEY),
        "JWT_SECRET": os.environ.get("JWT_SECRET") or secrets.token_hex(32),
        "PROVIDER_URL": provider_url,
    }


def local_environments(chain) -> str:
    """The configured environments, on the local chain, paid in its OCEAN, on local queues. Both
    are paid: v4 starts through the providerFee (priceMin), Ocean Node starts at /node also
    through the Escrow (ESCROW_CONTRACTS), at the v2 view's `fees` (priceMin spread over the
    CPUs, per minute); the consumer holds 10,000 OCEAN (devchain) to deposit."""
    from chalicelib.compute.environments import DEFAULT_FILE

    configured = json.loads(DEFAULT_FILE.read_text())
    for environment in configured:
        environment["chainIds"] = [chain.chain_id]
        environment["feeToken"] = {str(chain.chain_id): chain.contracts.OceanToken}
        environment["maxJobDuration"] = min(environment["maxJobDuration"], 600)
    # Ocean Node's free compute on the CPU environment (FREE_COMPUTE_PUBLISHERS allows the samples)
    configured[0]["freeCompute"] = {"maxJobDuration": 300, "maxJobs": 2, "maxJobsPerConsumer": 2}
    return json.dumps(configured)


def http_encrypt(provider_url: str):
    """Publishers encrypt their files for this provider through its own encrypt endpoint."""
    import urllib.request

    def encrypt(data: bytes) -> str:
        request = urllib.request.Request(provider_url + "/api/services/encrypt?chainId=8996", data=data, method="POST",
                                         headers={"Content-Type": "application/octet-stream"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read().decode("ascii")

    return encrypt


class IndexerLoop:
    """What the scheduled `index_assets` Lambda does on AWS every minute, every INTERVAL seconds
    here: an asset published against this stack (Ocean's CLI, ocean.js) is found on chain and
    becomes computable without an operator step."""

    INTERVAL = 5.0

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="asset-indexer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _loop(self) -> None:
        from chalicelib.assets.indexer import build_indexer

        indexer = build_indexer()
        with open(self.log_path, "a") as log:
            while not self._stopped.wait(self.INTERVAL):
                try:
                    chains = indexer.run()
                except Exception as error:  # noqa: BLE001 - as a failed Lambda run: the next one tries again
                    chains = [{"error": f"run failed: {type(error).__name__}: {error}"}]
                for chain in chains:
                    if chain.get("registered") or chain.get("forgotten") or chain.get("error"):
                        log.write(json.dumps(chain) + "\n")
                        log.flush()


class LocalStack:
    def __init__(self, port: int, moto_port: int, chain_port: int, files_port: int, log_dir: Path):
        self.port, self.moto_port, self.chain_port, self.files_port = port, moto_port, chain_port, files_port
        self.chain = None
        self.samples = None
        self.log_dir = log_dir
        self.group = ProcessGroup()
        self.provider_url = f"http://127.0.0.1:{port}"
        self.moto_url = f"http://127.0.0.1:{moto_port}"
        self.env: dict[str, str] = {}
        # A key of this run only (never a deployed provider's): `make run` prints a console URL
        # that signs in with it from the page, on loopback (chalicelib/admin/static/console.js).
        self.admin_key = os.environ.get("ADMIN_PRIVATE_KEY") or "0x" + secrets.token_hex(32)
        self.indexer = IndexerLoop(log_dir / "indexer.log")

    def start(self) -> dict:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        python = sys.executable
        self.group.start("moto", [python, "-m", "devstack.moto_server", "-H", "127.0.0.1", "-p", str(self.moto_port)],
                         log_path=str(self.log_dir / "moto.log"))
        self.group.start("files", [python, "-m", "http.server", "--bind", "127.0.0.1", "--directory",
                                   str(SAMPLE_DIR), str(self.files_port)], log_path=str(self.log_dir / "files.log"))
        from devstack.devchain import start_devchain

        self.chain = start_devchain(self.chain_port, provider_key=os.environ.get("PROVIDER_PRIVATE_KEY", DEV_PROVIDER_KEY),
                                    log_path=self.log_dir / "anvil.log", install=True)
        wait_for_http(self.moto_url + "/moto-api/", group=self.group)
        self.env = {**os.environ, **stack_environment(self.moto_url, {self.chain.chain_id: self.chain.rpc_url}, self.provider_url),
                    # Ocean Node's escrow payments (chalicelib.payments.setup)
                    "ESCROW_CONTRACTS": json.dumps({str(self.chain.chain_id): self.chain.contracts.Escrow}),
                    "COMPUTE_BACKEND": "local", "COMPUTE_ENVIRONMENTS": local_environments(self.chain),
                    # the sample files are served on loopback: let the provider and runner reach them
                    "ALLOW_PRIVATE_NETWORKS": "1",
                    # the sample dataset's publisher may be computed on for free (Ocean Node protocol)
                    "FREE_COMPUTE_PUBLISHERS": self.chain.publisher.address,
                    "NFT_FACTORIES": json.dumps({str(self.chain.chain_id): self.chain.contracts.ERC721Factory}),
                    # the asset indexer reads the dev chain from its first block
                    "INDEXER_START_BLOCKS": json.dumps({str(self.chain.chain_id): 0}),
                    "DEVSTACK_STATE_DIR": str(STATE_DIR),
                    # the operator's console (/admin): this stack's own admin key, made for this run
                    "ADMIN_ADDRESSES": address_of_key(self.admin_key)}
        os.environ.update(self.env)
        from chalicelib.bootstrap import bootstrap
        from chalicelib.config import load_settings

        bootstrap(load_settings(self.env), with_bucket=True)
        self.group.start("api", [python, "-m", "devstack.api_server", "--port", str(self.port)], env=self.env,
                         log_path=str(self.log_dir / "api.log"))
        wait_for_http(self.provider_url + "/", group=self.group)
        self.samples = publish_samples(self.chain, http_encrypt(self.provider_url), self.provider_url,
                                       f"http://127.0.0.1:{self.files_port}", with_held=True)
        from chalicelib.assets.register import register_asset

        for asset in (self.samples.dataset, self.samples.algorithm, self.samples.held):
            register_asset(self.chain.chain_id, asset.nftAddress)
        self.write_address_file()
        self.indexer.start()
        return self.describe()

    @property
    def address_file(self) -> Path:
        return STATE_DIR / "address.json"

    def write_address_file(self) -> None:
        """Ocean's address file (ocean-contracts' `address.json` layout): what Ocean's CLI and
        ocean.js read through ADDRESS_FILE to find the Ocean token, factory, Dispenser,
        FixedRateExchange and Escrow of the chain (network name `development`, chain 8996)."""
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        self.address_file.write_text(json.dumps(self.chain.contracts.address_file(self.chain.chain_id), indent=2))

    def describe(self) -> dict:
        chain, samples = self.chain, self.samples

        def asset(published) -> dict:
            return {"did": published.did, "serviceId": published.serviceId, "serviceIndex": published.serviceIndex,
                    "datatoken": published.datatoken}

        contracts = chain.contracts.as_dict()
        return {
            "providerUrl": self.provider_url,
            "chainId": chain.chain_id,
            "rpcUrl": chain.rpc_url,
            "providerAddress": chain.provider.address,
            "consumerPrivateKey": "0x" + bytes(chain.consumer.key).hex(),
            "dataset": asset(samples.dataset),
            "algorithm": asset(samples.algorithm),
            "contracts": {name: contracts[name] for name in ("ERC721Factory", "FactoryRouter", "OceanToken", "Escrow",
                                                             "Dispenser", "FixedPrice")},
            "addressFile": str(self.address_file),
            "filesUrl": f"http://127.0.0.1:{self.files_port}",
            # the dataset whose results its publisher releases (make demo's third run), and that publisher's key
            "heldDataset": asset(samples.held),
            "publisherPrivateKey": "0x" + bytes(chain.publisher.key).hex(),
            "awsEndpoint": self.moto_url,
            "adminPrivateKey": self.admin_key,
            "adminAddress": address_of_key(self.admin_key),
            "consoleUrl": f"{self.provider_url}/admin#localKey={self.admin_key}",
            "logDir": str(self.log_dir),
        }

    def stop(self) -> None:
        self.indexer.stop()
        self.group.stop()
        if self.chain is not None:
            self.chain.stop()


def sandbox_notice() -> str:
    """What `make run` says first: how the algorithm of every local job will be isolated, or,
    loudly, that it will not be."""
    from devstack.local_dispatch import detect_sandbox, unsandboxed_warning

    sandbox, reason = detect_sandbox()
    if sandbox is None:
        rule = "!" * 78
        return "\n".join([rule, unsandboxed_warning(reason), "Local jobs' logs say so too. Fine for the sample "
                          "algorithm; do not run algorithms you do not trust.", rule])
    return f"Local jobs run their algorithm in a {sandbox.describe()}."


def summary(info: dict) -> str:
    return "\n".join([
        "Local Ocean C2D provider is up (Ctrl-C stops everything)",
        f"  Provider API     {info['providerUrl']}   (spec: {info['providerUrl']}/spec)",
        f"  Ocean Node API   {info['providerUrl']}/node   (ocean.js >= 4)",
        f"  Chain            {info['rpcUrl']}   chainId {info['chainId']}",
        f"  Local AWS (moto) {info['awsEndpoint']}",
        f"  Provider address {info['providerAddress']}",
        f"  Sample dataset   {info['dataset']['did']}",
        f"  Sample algorithm {info['algorithm']['did']}",
        f"  Operator console {info['consoleUrl']}",
        f"                   (signs in as {info['adminAddress']}, this run's local admin key)",
        f"  Contracts        {json.dumps(info['contracts'])}",
        f"  Address file     {info['addressFile']}   (Ocean's format: ADDRESS_FILE of ocean.js and Ocean's CLI)",
        "  Ocean's CLI / ocean.js:",
        f"    export RPC={info['rpcUrl']} NODE_URL={info['providerUrl']}/node ADDRESS_FILE={info['addressFile']}",
        "    export PRIVATE_KEY=<a funded key: the consumer's is consumerPrivateKey in stack.json>",
        "  Written to .local/stack.json; logs in .local/logs/. Try `make demo` in another terminal.",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8030")))
    parser.add_argument("--moto-port", type=int, default=int(os.environ.get("MOTO_PORT", "5010")))
    parser.add_argument("--chain-port", type=int, default=int(os.environ.get("CHAIN_PORT", "8545")))
    parser.add_argument("--files-port", type=int, default=int(os.environ.get("FILES_PORT", "8031")))
    args = parser.parse_args(argv)
    stack = LocalStack(args.port, args.moto_port, args.chain_port, args.files_port, STATE_DIR / "logs")

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    parent = os.getppid()
    print(sandbox_notice(), flush=True)
    try:
        info = stack.start()
        STATE_DIR.mkdir(exist_ok=True)
        (STATE_DIR / "stack.json").write_text(json.dumps(info, indent=2))
        print(summary(info), flush=True)
        while os.getppid() == parent:  # `make run` itself killed: stop rather than linger orphaned
            stack.group.check()
            time.sleep(1)
    except KeyboardInterrupt:
        print("stopping...", flush=True)
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
