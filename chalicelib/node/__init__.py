"""The Ocean Node protocol (C2D v2) at `<api>/node`: ocean.js ≥ 4 and Ocean's CLI speak it.

A second edge over the same core, as Ocean Node keeps `httpRoutes/` apart from `core/`: its own
request models (`requests`), signed messages `address + nonce + command`, the environments in
Ocean Node's shape (`environments`), free compute (`free`), the algorithm's log so far (`logs`)
and the route functions (`handlers`), all calling the services the v4 routes use (one nonce
space per address, one job service, one compute workflow, one token service).
"""
from __future__ import annotations

from typing import Any

PREFIX = "/node"


def is_node_operation(operation: Any) -> bool:
    """Whether a registered operation (chalicelib.http.Operation) is one of this protocol's."""
    return operation.path == PREFIX or operation.path.startswith(PREFIX + "/")
