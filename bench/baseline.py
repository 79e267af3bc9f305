"""Today's numbers (main before issue 12, baseline.json) that `make bench` prints beside its own."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BASELINE = Path(__file__).with_name("baseline.json")


def today(section: str) -> Any:
    return json.loads(BASELINE.read_text())[section]
