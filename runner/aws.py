"""boto3 clients, created lazily so tests (moto) and AWS_ENDPOINT_URL (local stack) apply.

Every client gets the job's region explicitly (Settings.region: C2D_REGION, else AWS_REGION,
else AWS_DEFAULT_REGION): Batch sets no region variable and older ECS agents none either, and a
client built without one raises NoRegionError, which would silently lose every stage event.
"""
from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

_RETRIES = Config(retries={"max_attempts": 5, "mode": "standard"})


def s3_client(region: str) -> Any:
    """S3 with standard retries in the job's region; the endpoint comes from the environment."""
    return boto3.client("s3", region_name=region, config=_RETRIES)


def events_client(region: str) -> Any:
    """EventBridge in the job's region; the emitter does its own retries on top of botocore's."""
    return boto3.client("events", region_name=region, config=_RETRIES)
