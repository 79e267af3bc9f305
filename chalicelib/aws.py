"""boto3 clients, created lazily once per container and shared by every request.

Creating a client costs tens of milliseconds, so routes never build their own; tests call
`reset()` after starting moto so the next access builds clients against the mock. Every client
has connect and read timeouts and a retry count sized to the request budget (chalicelib.budget),
so an AWS endpoint that never answers costs a request seconds, not minutes.
"""
from __future__ import annotations

import os
import threading
from typing import Any

from chalicelib import budget

_clients: dict[str, Any] = {}
_lock = threading.Lock()


def client_config(service: str) -> Any:
    """The botocore Config of our clients of `service`: the budget's timeouts and attempts."""
    from botocore.config import Config

    return Config(
        signature_version="s3v4" if service == "s3" else None,
        connect_timeout=budget.AWS_CONNECT_SECONDS,
        read_timeout=budget.AWS_READ_SECONDS,
        retries={"total_max_attempts": budget.AWS_ATTEMPTS, "mode": "standard"},
    )


def client(service: str) -> Any:
    """The shared boto3 client for `service` (honours AWS_ENDPOINT_URL for the local stack)."""
    found = _clients.get(service)
    if found is not None:
        return found
    with _lock:
        if service not in _clients:
            import boto3

            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
            _clients[service] = boto3.session.Session().client(service, region_name=region,
                                                               config=client_config(service))
        return _clients[service]


def reset() -> None:
    """Forget every client (tests, after switching between moto and a server)."""
    with _lock:
        _clients.clear()
