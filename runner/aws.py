"""boto3 clients, created lazily so tests (moto) and AWS_ENDPOINT_URL (local stack) apply."""
from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

_RETRIES = Config(retries={"max_attempts": 5, "mode": "standard"})


def s3_client() -> Any:
    """S3 with standard retries; region and endpoint come from the environment."""
    return boto3.client("s3", config=_RETRIES)


def events_client() -> Any:
    """EventBridge; the emitter does its own retries on top of botocore's."""
    return boto3.client("events", config=_RETRIES)
