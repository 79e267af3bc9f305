"""The data owner's suites (issue 22) reuse the compute suites' helpers and fixtures
(lifecycle_helpers, test_lifecycle_compute, test_events) and the runc lab (tests/infra)."""
from __future__ import annotations

import sys
from pathlib import Path

for folder in ("compute", "infra", "payments", "node"):
    path = str(Path(__file__).resolve().parent.parent / folder)
    if path not in sys.path:
        sys.path.append(path)
