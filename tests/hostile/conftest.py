"""The hostile suites reuse the compute suites' helpers and fixtures (lifecycle_helpers,
test_lifecycle_compute, test_events): put their folder on the import path."""
from __future__ import annotations

import sys
from pathlib import Path

COMPUTE_TESTS = str(Path(__file__).resolve().parent.parent / "compute")
if COMPUTE_TESTS not in sys.path:
    sys.path.append(COMPUTE_TESTS)
