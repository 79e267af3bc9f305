"""Run every benchmark and print its numbers against its budget."""
from __future__ import annotations

import sys

from bench import aws_calls, cold_start, escrow_gas, observability, package, scale, signatures

# Each gives one row (name, value, unit, budget) or a list of them.
BENCHMARKS = [signatures.run, cold_start.run, observability.run, aws_calls.run, escrow_gas.run, scale.run, package.run]


def main() -> int:
    if "--load" in sys.argv[1:]:  # the load benchmark starts a whole local stack: only on request
        from bench import load

        return load.main([arg for arg in sys.argv[1:] if arg != "--load"])
    failures = 0
    for run in BENCHMARKS:
        rows = run()
        for name, value, unit, budget in rows if isinstance(rows, list) else [rows]:
            verdict = "ok" if value <= budget else "OVER BUDGET"
            failures += value > budget
            print(f"{name}: {value:.3f} {unit} (budget {budget} {unit}) {verdict}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
