"""Run every benchmark and print its numbers against its budget."""
from __future__ import annotations

import sys

from bench import aws_calls, cold_start, escrow_gas, first_requests, package_import, scale, signatures

BENCHMARKS = [signatures.run, cold_start.run, aws_calls.run, escrow_gas.run, scale.run, package_import.run,
              first_requests.run]


def main() -> int:
    if "--load" in sys.argv[1:]:  # the load benchmark starts a whole local stack: only on request
        from bench import load

        return load.main([arg for arg in sys.argv[1:] if arg != "--load"])
    failures = 0
    for run in BENCHMARKS:
        name, value, unit, budget = run()
        verdict = "ok" if value <= budget else "OVER BUDGET"
        failures += value > budget
        print(f"{name}: {value:.3f} {unit} (budget {budget} {unit}) {verdict}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
