"""Create the provider's tables (and, for a local stack, its bucket) if they do not exist yet.

Run it as `python -m chalicelib.bootstrap [--bucket]` against the moto server or an AWS account;
`bootstrap()` is also callable from a Lambda. It is idempotent.
"""
from __future__ import annotations

import argparse
import logging
import time

from pynamodb.exceptions import TableError

from chalicelib import aws, models
from chalicelib.config import Settings, load_settings

logger = logging.getLogger(__name__)


def create_tables(settings: Settings) -> list[str]:
    models.bind(settings)
    created = []
    for model in models.ALL_MODELS:
        try:
            model.create_table(wait=False, billing_mode="PAY_PER_REQUEST")
            created.append(model)
        except TableError as error:
            if getattr(error, "cause_response_code", None) != "ResourceInUseException":
                raise
    for model in created:
        _wait_active(model)
    for model in models.TTL_ATTRIBUTES:
        model.update_ttl(ignore_update_ttl_errors=True)
    return [model.Meta.table_name for model in created]


def _wait_active(model: type, timeout: float = 120.0) -> None:
    """Create all tables first, then wait: AWS builds them in parallel (PynamoDB's wait polls slowly)."""
    deadline = time.monotonic() + timeout
    while model.describe_table().get("TableStatus") != "ACTIVE":
        if time.monotonic() > deadline:
            raise TimeoutError(f"table {model.Meta.table_name} is not active after {timeout:.0f} s")
        time.sleep(0.5)


def create_bucket(settings: Settings) -> None:
    s3 = aws.client("s3")
    existing = {bucket["Name"] for bucket in s3.list_buckets().get("Buckets", [])}
    if settings.bucket not in existing:
        if settings.region == "us-east-1":
            s3.create_bucket(Bucket=settings.bucket)
        else:
            s3.create_bucket(Bucket=settings.bucket, CreateBucketConfiguration={"LocationConstraint": settings.region})


def bootstrap(settings: Settings, with_bucket: bool = False) -> list[str]:
    created = create_tables(settings)
    if with_bucket:
        create_bucket(settings)
    return created


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bucket", action="store_true", help="also create the results bucket (local stacks)")
    args = parser.parse_args(argv)
    created = bootstrap(load_settings(), with_bucket=args.bucket)
    print("created tables: " + (", ".join(created) if created else "none (all existed)"))


if __name__ == "__main__":
    main()
