"""Cold import of the Lambda's `app` module in a fresh interpreter: wall time, and that the chain
libraries stay out of it."""
from __future__ import annotations

import json
import statistics
import subprocess
import sys

PROBE = (
    "import sys, time; t = time.perf_counter(); import app; d = time.perf_counter() - t; import json; "
    "print(json.dumps({'seconds': d, 'chain_modules': sorted(m for m in sys.modules "
    "if m.split('.')[0] in ('web3', 'eth_account'))}))"
)
RUNS = 5


def measure() -> tuple[float, list[str]]:
    """Median seconds of `import app` alone (the interpreter's own start is Lambda's, not ours)."""
    samples, modules = [], []
    for _ in range(RUNS):
        output = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
        result = json.loads(output.strip().splitlines()[-1])
        samples.append(result["seconds"])
        modules = result["chain_modules"]
    return statistics.median(samples), modules


def run() -> tuple[str, float, str, float]:
    seconds, modules = measure()
    if modules:
        raise AssertionError(f"import app pulled in chain libraries: {modules}")
    return (f"cold `import app` (median of {RUNS}, no web3/eth_account)", seconds, "s", 0.8)
