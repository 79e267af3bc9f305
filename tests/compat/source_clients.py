"""Ocean clients that are not on the npm registry, built from a local checkout of their public
repository for the compatibility tests: Ocean's CLI (oceanprotocol/ocean-cli, `OCEAN_CLI_SRC`)
and ocean.js 9 (oceanprotocol/ocean.js at v9.0.0-next.11, `OCEANJS9_SRC`).

The checkout is copied (its tracked files, or every file but node_modules/dist/.git) into
`.local/clients/<name>-<digest>/`, its registry pins applied to package.json (what the registry
lacks, see `dependencies` and `overrides` below), our lock file for that pinned package.json put
beside it (`source_locks/<name>/package-lock.json`: the checkout's own locks versions the registry
lacks), then `npm ci` and `npm run build` run there. The checkout itself is never changed and
nothing of it enters this repository; a checkout of another version than the lock's fails `npm ci`
and says so (for a new version: in the pinned copy, run npm with `install --package-lock-only`,
check what moved, and commit the new lock). A test whose variable is not set skips,
saying so; CI reaches only the registries, so these run where a developer gives a checkout.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_ROOT = REPO_ROOT / ".local" / "clients"
LOCKS = Path(__file__).resolve().with_name("source_locks")
BUILD_TIMEOUT = 900
SKIPPED = {"node_modules", "dist", ".git", "coverage", ".nyc_output"}


@dataclass(frozen=True)
class SourceClient:
    """A client built from source: which variable names its checkout, and what to pin."""

    name: str
    variable: str
    repository: str
    dependencies: dict[str, str] = field(default_factory=dict)  # package -> exact version (deps and devDeps)
    overrides: dict[str, str] = field(default_factory=dict)  # npm `overrides` (transitive pins)


# Ocean's CLI 2.0.0 locks ocean.js 8.0.6 and asks ddo-js ^0.3.0: neither is on the registry.
# It builds against ocean.js 8.6.2 (the one the ocean.js compatibility test runs) and ddo-js 0.2.0.
OCEAN_CLI = SourceClient(
    "ocean-cli", "OCEAN_CLI_SRC", "oceanprotocol/ocean-cli",
    dependencies={"@oceanprotocol/lib": "8.6.2", "@oceanprotocol/ddo-js": "0.2.0"},
    overrides={"@oceanprotocol/lib": "8.6.2", "@oceanprotocol/ddo-js": "0.2.0"},
)
# ocean.js 9.0.0-next.11 asks ddo-js ^0.4.1 and (to build) @oceanprotocol/contracts ^2.9.0; the
# registry has ddo-js 0.2.0 and contracts 2.6.0 at most (the artifacts it imports are there).
OCEAN_JS9 = SourceClient(
    "oceanjs9", "OCEANJS9_SRC", "oceanprotocol/ocean.js (v9.0.0-next.11)",
    dependencies={"@oceanprotocol/ddo-js": "0.2.0", "@oceanprotocol/contracts": "2.6.0"},
    overrides={"@oceanprotocol/ddo-js": "0.2.0", "@oceanprotocol/contracts": "2.6.0"},
)


def source_of(client: SourceClient) -> Path:
    """The checkout named by the client's variable; skips the test when it is not given."""
    value = os.environ.get(client.variable)
    if not value:
        pytest.skip(f"{client.variable} is not set: give a checkout of {client.repository} to build {client.name} "
                    "from source (it is not on the npm registry)")
    path = Path(value).expanduser().resolve()
    if not (path / "package.json").is_file():
        pytest.fail(f"{client.variable}={value} is not a checkout of {client.repository} (no package.json)")
    return path


def _files(source: Path) -> list[Path]:
    listed = subprocess.run(["git", "-C", str(source), "ls-files", "-z"], capture_output=True)
    if listed.returncode == 0 and listed.stdout:
        names = [Path(name) for name in listed.stdout.decode().split("\0") if name]
        return sorted(name for name in names if (source / name).is_file())
    found = []
    for root, dirs, files in os.walk(source):
        dirs[:] = [d for d in dirs if d not in SKIPPED]
        found += [Path(root, f).relative_to(source) for f in files]
    return sorted(found)


def lock_of(client: SourceClient) -> Path:
    return LOCKS / client.name / "package-lock.json"


def _digest(source: Path, files: list[Path], client: SourceClient) -> str:
    digest = hashlib.sha256(json.dumps([client.dependencies, client.overrides]).encode() + lock_of(client).read_bytes())
    for name in files:
        digest.update(str(name).encode() + b"\0" + (source / name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _pin(package_json: Path, client: SourceClient) -> None:
    package = json.loads(package_json.read_text())
    for section in ("dependencies", "devDependencies"):
        for name, version in client.dependencies.items():
            if name in package.get(section, {}):
                package[section][name] = version
    package["overrides"] = {**package.get("overrides", {}), **client.overrides}
    package_json.write_text(json.dumps(package, indent=2))


def _run(argv: list[str], cwd: Path, hint: str = "") -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=BUILD_TIMEOUT,
                          env={**os.environ, "CI": "true"})
    assert done.returncode == 0, f"{' '.join(argv)} failed in {cwd.name}{hint}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def built(client: SourceClient) -> Path:
    """The client's build directory, built once per content of its checkout (and pins)."""
    source = source_of(client)
    files = _files(source)
    target = BUILD_ROOT / f"{client.name}-{_digest(source, files, client)}"
    BUILD_ROOT.mkdir(parents=True, exist_ok=True)
    with open(BUILD_ROOT / f".{client.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs build it once
        if (target / ".built").exists():
            return target
        shutil.rmtree(target, ignore_errors=True)
        for name in files:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, target / name)
        _pin(target / "package.json", client)
        lock = lock_of(client)
        shutil.copy2(lock, target / "package-lock.json")  # the checkout's own locks what the registry lacks
        locked = json.loads(lock.read_text())["packages"][""].get("version")
        checkout = json.loads((target / "package.json").read_text()).get("version")
        began = time.monotonic()
        _run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], target,
             f" (the lock is for {client.name} {locked}, the checkout is {checkout})")
        _run(["npm", "run", "build"], target)
        (target / ".built").write_text(f"built in {time.monotonic() - began:.0f} s from {source.name}\n")
    return target
