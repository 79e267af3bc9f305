"""Run a local anvil node (from the npm package `@foundry-rs/anvil`) for development and tests.

anvil is installed into the repository's own ./node_modules (`npm ci`), never globally, so
the version is pinned by package-lock.json. We start the native binary directly rather than
the `node_modules/.bin/anvil` node wrapper: one process less, and our SIGTERM reaches anvil.
"""

from __future__ import annotations

import atexit
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from web3 import Web3

CHAIN_ID = 8996
DEFAULT_MNEMONIC = "test test test test test test test test test test test junk"
REPO_ROOT = Path(__file__).resolve().parent.parent

# npm's platform sub-packages of @foundry-rs/anvil, keyed by (sys.platform, machine).
_PLATFORM_PACKAGES = {
    ("linux", "x86_64"): "anvil-linux-amd64",
    ("linux", "amd64"): "anvil-linux-amd64",
    ("linux", "aarch64"): "anvil-linux-arm64",
    ("linux", "arm64"): "anvil-linux-arm64",
    ("darwin", "x86_64"): "anvil-darwin-amd64",
    ("darwin", "arm64"): "anvil-darwin-arm64",
    ("win32", "amd64"): "anvil-win32-amd64",
    ("win32", "x86_64"): "anvil-win32-amd64",
}


def _anvil_candidates(root: Path) -> list[Path]:
    """Where `npm ci` may have put the binary, best first."""
    exe = "anvil.exe" if sys.platform == "win32" else "anvil"
    scope = root / "node_modules" / "@foundry-rs"
    pkg = _PLATFORM_PACKAGES.get((sys.platform, platform.machine().lower()))
    found = [scope / pkg / "bin" / exe] if pkg else []
    # The package's postinstall (when npm runs it) downloads into the package dir if the
    # optional platform package was skipped; the .bin entry is the node wrapper (last resort).
    found += [scope / "anvil" / exe, root / "node_modules" / ".bin" / exe]
    return found


def find_anvil(root: Path | None = None) -> Path:
    """Locate the anvil binary: $ANVIL_BIN, then ./node_modules, then PATH.

    Raises FileNotFoundError with the fix (run `npm ci`) when there is none.
    """
    env = os.environ.get("ANVIL_BIN")
    if env:
        if Path(env).is_file():
            return Path(env)
        raise FileNotFoundError(f"ANVIL_BIN={env} does not exist")
    for cand in _anvil_candidates(root or REPO_ROOT):
        if cand.is_file() and os.access(cand, os.X_OK):
            return cand
    on_path = shutil.which("anvil")
    if on_path:
        return Path(on_path)
    raise FileNotFoundError("anvil not found: run `npm ci` at the repository root")


def ensure_anvil(root: Path | None = None) -> Path:
    """Return the anvil binary, running `npm ci` first only if it is missing.

    Idempotent and instant when anvil is already installed (no npm call at all).
    """
    root = root or REPO_ROOT
    try:
        return find_anvil(root)
    except FileNotFoundError:
        pass
    npm = shutil.which("npm")
    if not npm:
        raise FileNotFoundError("anvil not installed and npm not found (install Node.js >= 20)")
    cmd = "ci" if (root / "package-lock.json").exists() else "install"
    subprocess.run([npm, cmd, "--no-audit", "--no-fund"], cwd=root, check=True)
    return find_anvil(root)


def free_port(host: str = "127.0.0.1") -> int:
    """An unused TCP port, so parallel test sessions do not collide on 8545."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def rpc_call(url: str, method: str, params: Sequence[Any] = (), timeout: float = 5.0) -> Any:
    """One raw JSON-RPC call with the stdlib (used before web3 is needed, e.g. readiness)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    req = urllib.request.Request(url, body.encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        reply = json.loads(resp.read())
    if "error" in reply:
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply["result"]


def dev_accounts(n: int = 4, mnemonic: str = DEFAULT_MNEMONIC) -> list[LocalAccount]:
    """The first n accounts anvil funds for `mnemonic` (path m/44'/60'/0'/0/i).

    Derived rather than hard-coded so no private key literal lives in the repository; the
    seed (the slow PBKDF2 step) is computed once, not once per account.
    """
    from eth_account import Account
    from eth_account.hdaccount import key_from_seed, seed_from_mnemonic

    seed = seed_from_mnemonic(mnemonic, "")
    return [Account.from_key(key_from_seed(seed, f"m/44'/60'/0'/0/{i}")) for i in range(n)]


class Anvil:
    """An anvil subprocess on host:port; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        chain_id: int = CHAIN_ID,
        mnemonic: str = DEFAULT_MNEMONIC,
        accounts: int = 10,
        balance_eth: int = 10_000,
        block_time: float | None = None,
        binary: Path | None = None,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.chain_id = chain_id
        self.mnemonic = mnemonic
        self.binary = binary
        self.log_path = log_path
        self._args = [
            "--host", host, "--port", str(self.port), "--chain-id", str(chain_id),
            "--mnemonic", mnemonic, "--accounts", str(accounts), "--balance", str(balance_eth),
            *(["--block-time", str(block_time)] if block_time else []),
            *extra_args,
        ]  # fmt: skip
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def rpc_url(self) -> str:
        """HTTP JSON-RPC endpoint of this node."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """True while the subprocess is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> Anvil:
        """Spawn anvil and block until it answers eth_chainId with our chain id."""
        if self.running:
            return self
        binary = self.binary or find_anvil()
        if _port_in_use(self.host, self.port):
            # Fail loudly: a stale node on this port would otherwise answer our readiness probe.
            raise RuntimeError(f"{self.host}:{self.port} is already in use (a stale anvil?)")
        if self.log_path:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        else:
            self._log = tempfile.TemporaryFile()  # noqa: SIM115 - read on failure, closed in stop()
        # Output goes to a file, not a pipe: an unread pipe would fill up and block anvil.
        self._proc = subprocess.Popen(
            [str(binary), *self._args], stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code, tail = self._proc.returncode, self._log_tail()
                self.stop()
                raise RuntimeError(f"anvil exited with {code}: {tail}")
            try:
                if int(rpc_call(self.rpc_url, "eth_chainId", timeout=1.0), 16) == self.chain_id:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        tail = self._log_tail()
        self.stop()
        raise TimeoutError(f"anvil did not answer on {self.rpc_url} within {timeout}s: {tail}")

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate anvil (SIGTERM, then SIGKILL after `timeout`); safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        atexit.unregister(self.stop)

    def w3(self) -> Web3:
        """A web3 client for this node."""
        from web3 import Web3

        return Web3(Web3.HTTPProvider(self.rpc_url, request_kwargs={"timeout": 30}))

    def accounts(self, n: int = 4) -> list[LocalAccount]:
        """The first n funded dev accounts of this node's mnemonic."""
        return dev_accounts(n, self.mnemonic)

    def _log_tail(self, size: int = 2000) -> str:
        if self._log is None or self._log.closed:
            return ""
        self._log.flush()
        self._log.seek(0, os.SEEK_END)
        self._log.seek(max(0, self._log.tell() - size))
        return self._log.read().decode(errors="replace")

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _rpc(w3: Web3, method: str, params: Sequence[Any] = ()) -> Any:
    reply = w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
    if reply.get("error"):
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply["result"]


def snapshot(w3: Web3) -> str:
    """Save the chain state (evm_snapshot); returns the id to pass to revert()."""
    return str(_rpc(w3, "evm_snapshot"))


def revert(w3: Web3, snapshot_id: str) -> bool:
    """Restore a snapshot (evm_revert). anvil drops it (and later ones) afterwards."""
    return bool(_rpc(w3, "evm_revert", [snapshot_id]))


def increase_time(w3: Web3, seconds: int) -> None:
    """Move the chain clock forward and mine a block, to test expiries (validUntil, timeout)."""
    _rpc(w3, "evm_increaseTime", [int(seconds)])
    _rpc(w3, "evm_mine")
