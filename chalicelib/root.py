"""The root document (DESIGN §3.1): what ocean.py and ocean.js discover the provider by."""
from __future__ import annotations

from typing import Any

from chalicelib.http import Operation

SOFTWARE = "Serverless Ocean Provider"
VERSION = "0.1.0"


def root_document(operations: list[Operation], chain_ids: list[int], provider_address: str) -> dict[str, Any]:
    """Built once per container: clients fetch `/` several times per call."""
    return {
        "software": SOFTWARE,
        "version": VERSION,
        "chainIds": chain_ids,
        "providerAddresses": {str(chain_id): provider_address for chain_id in chain_ids},
        "providerAddress": provider_address,
        "serviceEndpoints": {op.endpoint: [op.method, op.path] for op in operations if op.endpoint},
    }
