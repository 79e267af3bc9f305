"""boto3 clients, created lazily once per container and shared by every request.

Creating a client costs tens of milliseconds, so routes never build their own; tests call
`reset()` after starting moto so the next access builds clients against the mock.
"""
from __future__ import annotations

import os
import threading
from typing import Any

_clients: dict[str, Any] = {}
_lock = threading.Lock()


def client(service: str) -> Any:
    """The shared boto3 client for `service` (honours AWS_ENDPOINT_URL for the local stack)."""
    found = _clients.get(service)
    if found is not None:
        return found
    with _lock:
        if service not in _clients:
            import boto3
            from botocore.config import Config

            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
            config = Config(
                signature_version="s3v4" if service == "s3" else None,
                connect_timeout=3,
                read_timeout=10,
                retries={"max_attempts": 3, "mode": "standard"},
            )
            _clients[service] = boto3.session.Session().client(service, region_name=region, config=config)
        return _clients[service]


def reset() -> None:
    """Forget every client (tests, after switching between moto and a server)."""
    with _lock:
        _clients.clear()
