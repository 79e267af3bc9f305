"""The test-only node project under tests/compat/oceanjs (ocean.js 8.6.2, ethers 6,
playwright-core), installed with `npm ci` from its lock file the first time a test needs it,
as the ocean.py test builds its venv; `make clean` does not need to know about it (node_modules
is ignored and rebuilt whenever the lock file changes)."""
from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().with_name("oceanjs")
INSTALL_TIMEOUT = 900


def installed() -> float:
    """Install the project if its lock file changed; the seconds it took (0 when already there)."""
    lock_file = PROJECT / "package-lock.json"
    digest = hashlib.sha256(lock_file.read_bytes()).hexdigest()[:16]
    marker = PROJECT / "node_modules" / f".installed-{digest}"
    with open(PROJECT / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once install it once
        if marker.exists():
            return 0.0
        began = time.monotonic()
        shutil.rmtree(PROJECT / "node_modules", ignore_errors=True)
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PROJECT,
                              capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
        assert done.returncode == 0, f"npm ci in {PROJECT.name} failed:\n{done.stderr[-3000:]}"
        marker.write_text(f"installed in {time.monotonic() - began:.0f} s\n")
        return time.monotonic() - began
