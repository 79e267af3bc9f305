"""The cold-start cost of logging and metrics (issue 23): importing AWS Lambda Powertools' Logger
and Metrics in a fresh interpreter that already holds what `import app` imports (botocore,
pydantic, Chalice), and writing a first line and EMF metric. `import app` does not pay it: the
first line of a container imports it (chalicelib/observability/emit.py)."""
from __future__ import annotations

import json
import statistics
import subprocess
import sys

PROBE = (
    "import io, sys, time, json; import app; out = sys.stdout; sys.stdout = io.StringIO(); "
    "t = time.perf_counter(); import aws_lambda_powertools.logging, aws_lambda_powertools.metrics; "
    "i = time.perf_counter(); from chalicelib.observability import context as o\n"
    "with o.invocation('request', 'bench'): o.record('Requests')\n"
    "d = time.perf_counter(); sys.stdout = out; "
    "print(json.dumps({'import': i - t, 'first_line': d - i, 'in_app': 'aws_lambda_powertools' in sys.modules}))"
)
APP_ONLY = "import sys, app, json; print(json.dumps({'loaded': 'aws_lambda_powertools' in sys.modules}))"
RUNS = 7


def run() -> list[tuple[str, float, str, float]]:
    imports, lines = [], []
    for _ in range(RUNS):
        result = json.loads(subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                                           check=True).stdout.strip().splitlines()[-1])
        imports.append(result["import"] * 1000)
        lines.append(result["first_line"] * 1000)
    loaded = json.loads(subprocess.run([sys.executable, "-c", APP_ONLY], capture_output=True, text=True,
                                       check=True).stdout.strip().splitlines()[-1])["loaded"]
    if loaded:
        raise AssertionError("import app imported Powertools: it must stay off the cold path")
    return [(f"Powertools Logger+Metrics import, paid by a container's first line, not by import app (median of {RUNS})",
             statistics.median(imports), "ms", 60),
            ("first JSON line and EMF metric after that import", statistics.median(lines), "ms", 10)]
