"""The test-only node projects under tests/compat (oceanjs: ocean.js 8.6.2, ethers 6,
playwright-core; oceanjs3: ocean.js 3.4.6, ethers 5), each installed with `npm ci` from its lock
file the first time a test needs it, as the ocean.py test builds its venv (node_modules is
ignored and rebuilt whenever the lock file changes), and the drivers they run."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

OCEAN_JS = Path(__file__).resolve().with_name("oceanjs")
OCEAN_JS3 = Path(__file__).resolve().with_name("oceanjs3")
INSTALL_TIMEOUT = 900


def installed(project: Path) -> float:
    """Install the project if its lock file changed; the seconds it took (0 when already there)."""
    lock_file = project / "package-lock.json"
    digest = hashlib.sha256(lock_file.read_bytes()).hexdigest()[:16]
    marker = project / "node_modules" / f".installed-{digest}"
    with open(project / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once install it once
        if marker.exists():
            return 0.0
        began = time.monotonic()
        shutil.rmtree(project / "node_modules", ignore_errors=True)
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=project,
                              capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
        assert done.returncode == 0, f"npm ci in {project.name} failed:\n{done.stderr[-3000:]}"
        marker.write_text(f"installed in {time.monotonic() - began:.0f} s\n")
        return time.monotonic() - began


def run_driver(project: Path, script: str, stack: dict[str, Any], work: Path, timeout: float = 300,
               args: list[str] = ()) -> dict[str, Any]:
    """`node <script> [args...] stack.json report.json` in the project; the report it wrote."""
    (work / "stack.json").write_text(json.dumps(stack))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", str(work))}
    done = subprocess.run(["node", str(project / script), *args, str(work / "stack.json"), str(work / "report.json")],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=project)
    assert done.returncode == 0, f"{project.name}/{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return json.loads((work / "report.json").read_text())
