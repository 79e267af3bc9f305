"""`python -m runner configure|publish`: the job stages around the consumer's algorithm.

Exit codes (docs/internals.md, "Runner stages"), the same numbers as the statuses sent:
configure 0 (30 sent), 31 data provisioning failed, 32 algorithm provisioning failed (a checksum
mismatch included); publish 0 (70 sent), 62 an upload failed; 2 the environment is invalid (no
region, no job id...: no event can be sent, the reason is on stderr).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from . import configure, publish
from .events import make_emitter
from .layout import Layout
from .settings import ConfigError, Settings, busybox_source

STAGES = {"configure": configure.run, "publish": publish.run}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the stage, read settings from the environment and run it."""
    parser = argparse.ArgumentParser(
        prog="python -m runner",
        description="Ocean C2D job runner; configured by environment variables "
                    "(JOB_ID, MANIFEST_URI, DATA_DIR, RESULTS_BUCKET, RUNNER_EVENTS, C2D_REGION, "
                    "ALGORITHM_UID, ...).")
    parser.add_argument("stage", choices=sorted(STAGES))
    args = parser.parse_args(argv)
    if args.stage == "configure":
        _busybox_first(os.environ)
    try:
        settings = Settings.from_env(os.environ, need_manifest=args.stage == "configure")
    except ConfigError as exc:
        print(f"runner: {exc}", file=sys.stderr)
        return 2
    return STAGES[args.stage](settings, make_emitter(settings))


def _busybox_first(env: "os._Environ[str]") -> None:
    """configure's very first action, before the environment is even checked: the algorithm
    container's command is /data/.c2d/busybox, so it must exist for that container to start
    (and report that nothing ran) whatever happens next."""
    try:
        Layout(Path(env.get("DATA_DIR", "/data"))).install_busybox(busybox_source(env))
    except OSError as exc:
        print(f"runner: could not install busybox ({type(exc).__name__})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
