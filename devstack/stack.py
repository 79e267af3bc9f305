"""`make run`: the whole provider on one machine, no AWS account and no Docker.

Brings up a moto server as the local AWS, creates the tables and bucket, and serves the API
(Chalice's local server) on PORT (8030). Every child stops on Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
import time
from pathlib import Path

from devstack.processes import ProcessGroup, wait_for_http

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


class LocalStack:
    def __init__(self, port: int, moto_port: int, chain_port: int, log_dir: Path):
        self.port, self.moto_port, self.chain_port = port, moto_port, chain_port
        self.log_dir = log_dir
        self.group = ProcessGroup()
        self.provider_url = f"http://127.0.0.1:{port}"
        self.moto_url = f"http://127.0.0.1:{moto_port}"
        self.env: dict[str, str] = {}

    def start(self) -> dict:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        python = sys.executable
        self.group.start("moto", [python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.moto_port)],
                         log_path=str(self.log_dir / "moto.log"))
        wait_for_http(self.moto_url + "/moto-api/", group=self.group)
        chains = {8996: f"http://127.0.0.1:{self.chain_port}"}
        self.env = {**os.environ, **stack_environment(self.moto_url, chains, self.provider_url)}
        os.environ.update(self.env)
        from chalicelib.bootstrap import bootstrap
        from chalicelib.config import load_settings

        bootstrap(load_settings(self.env), with_bucket=True)
        self.group.start("api", [python, "-m", "devstack.api_server", "--port", str(self.port)], env=self.env,
                         log_path=str(self.log_dir / "api.log"))
        wait_for_http(self.provider_url + "/", group=self.group)
        return self.describe()

    def describe(self) -> dict:
        return {"providerUrl": self.provider_url, "awsEndpoint": self.moto_url}

    def stop(self) -> None:
        self.group.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8030")))
    parser.add_argument("--moto-port", type=int, default=int(os.environ.get("MOTO_PORT", "5010")))
    parser.add_argument("--chain-port", type=int, default=int(os.environ.get("CHAIN_PORT", "8545")))
    args = parser.parse_args(argv)
    stack = LocalStack(args.port, args.moto_port, args.chain_port, STATE_DIR / "logs")

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        info = stack.start()
        STATE_DIR.mkdir(exist_ok=True)
        (STATE_DIR / "stack.json").write_text(json.dumps(info, indent=2))
        print(json.dumps(info, indent=2))
        print(f"Provider API on {stack.provider_url} (Ctrl-C stops everything)", flush=True)
        while True:
            stack.group.check()
            time.sleep(1)
    except KeyboardInterrupt:
        print("stopping...", flush=True)
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
