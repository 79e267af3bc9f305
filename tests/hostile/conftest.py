"""The hostile suites reuse the compute suites' helpers and fixtures (lifecycle_helpers,
test_lifecycle_compute, test_events) and the escrow's consumer side (escrow_helpers): put their
folders on the import path."""
from __future__ import annotations

import sys
from pathlib import Path

for folder in ("compute", "payments"):
    path = str(Path(__file__).resolve().parent.parent / folder)
    if path not in sys.path:
        sys.path.append(path)
