"""`python -m runner configure|publish`: the job stages around the consumer's algorithm.

Exit codes: 0 the stage succeeded (30 / 70 sent), 1 it failed (31, 32 / 62 sent),
2 the environment is invalid (no event can be sent).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from . import configure, publish
from .events import make_emitter
from .settings import ConfigError, Settings

STAGES = {"configure": configure.run, "publish": publish.run}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the stage, read settings from the environment and run it."""
    parser = argparse.ArgumentParser(
        prog="python -m runner",
        description="Ocean C2D job runner; configured by environment variables "
                    "(JOB_ID, MANIFEST_URI, DATA_DIR, RESULTS_BUCKET, RUNNER_EVENTS, ...).")
    parser.add_argument("stage", choices=sorted(STAGES))
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ, need_manifest=args.stage == "configure")
    except ConfigError as exc:
        print(f"runner: {exc}", file=sys.stderr)
        return 2
    return STAGES[args.stage](settings, make_emitter(settings))


if __name__ == "__main__":
    sys.exit(main())
