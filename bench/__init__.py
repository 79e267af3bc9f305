"""Benchmarks: numbers for the issues' budgets, run with `make bench` (not part of `make test`)."""
