"""The Ocean Node protocol tests reuse the compute lifecycle's and the escrow's helpers (published samples,
Batch behind botocore's Stubber, realistic events)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "compute"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "payments"))  # the escrow's consumer side
