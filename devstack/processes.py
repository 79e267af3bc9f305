"""Child processes of the local stack: started in their own process group, stopped together."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent


class ProcessGroup:
    """Starts services and guarantees every one is stopped (Ctrl-C, SIGTERM or an error)."""

    def __init__(self) -> None:
        self.processes: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None, log_path: str | None = None) -> subprocess.Popen:
        output = open(log_path, "ab") if log_path else subprocess.DEVNULL
        process = subprocess.Popen(list(argv), env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append((name, process))
        return process

    def check(self) -> None:
        """Raise if a service died, naming it."""
        for name, process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with code {process.returncode}")

    def stop(self, timeout: float = 10.0) -> None:
        for _, process in reversed(self.processes):
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _, process in reversed(self.processes):
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
        self.processes.clear()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, timeout: float = 60.0, group: ProcessGroup | None = None) -> None:
    """Wait until `url` answers any HTTP status (a 4xx still means the server is up)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if group:
                group.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout:.0f} s") from None
            time.sleep(0.2)


@contextlib.contextmanager
def background_stack(state_dir: Path, timeout: float = 300.0) -> Iterator[dict]:
    """`python -m devstack` on free loopback ports, its state in `state_dir`; yields what it
    wrote to stack.json and stops it (SIGTERM, then SIGKILL) afterwards. For tests and benchmarks."""
    ports = {flag: free_port() for flag in ("--port", "--moto-port", "--chain-port", "--files-port")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CHAINS", "PROVIDER_", "JWT_", "ADMIN_"))}
    env["DEVSTACK_STATE_DIR"] = str(state_dir)
    argv = [sys.executable, "-m", "devstack", *[part for flag, port in ports.items() for part in (flag, str(port))]]
    log = state_dir / "stack.out"
    process = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    stack_file = state_dir / "stack.json"
    try:
        deadline = time.monotonic() + timeout
        while not stack_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the local stack did not start:\n" + log.read_text()[-3000:])
            time.sleep(0.2)
        yield json.loads(stack_file.read_text())
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
