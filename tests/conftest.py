"""Shared fixtures: in-process moto for AWS, settings for a test provider, signing helpers."""
from __future__ import annotations

import os

import pytest

for _name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL")]:
    del os.environ[_name]

TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "CHAINS": '{"8996": "http://127.0.0.1:8545"}',
    "RESULTS_BUCKET": "test-results",
    # anvil's development key #9: never a real key.
    "PROVIDER_PRIVATE_KEY": "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
    "JWT_SECRET": "test-jwt-secret-that-is-long-enough-0123456789",
    "RESOURCE_PREFIX": "test",
}
os.environ.update(TEST_ENV)

from moto import mock_aws  # noqa: E402  (moto must patch before any client exists)


@pytest.fixture(scope="module")
def _moto():
    """In-process moto with the provider's tables and bucket, once per test module: building
    botocore clients for five tables costs about a second, so tests share them and
    `aws` empties the tables and the bucket after each test instead."""
    from chalicelib import services
    from chalicelib.bootstrap import bootstrap

    with mock_aws(config={"batch": {"use_docker": False}}):
        services.reset()
        bootstrap(services.settings(), with_bucket=True)
        yield
        services.reset()


@pytest.fixture
def aws(_moto):
    """Empty provider tables and bucket on in-process moto; emptied again after the test."""
    yield
    _empty_everything()


def _empty_everything() -> None:
    from chalicelib import aws as clients
    from chalicelib import models, services

    services.settings()
    for model in models.ALL_MODELS:
        with model.batch_write() as batch:
            for item in model.scan():
                batch.delete(item)
    s3 = clients.client("s3")
    for bucket in s3.list_buckets().get("Buckets", []):
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket["Name"]):
            for version in page.get("Versions", []) + page.get("DeleteMarkers", []):
                s3.delete_object(Bucket=bucket["Name"], Key=version["Key"], VersionId=version["VersionId"])


pytest_plugins = ["chain_fixtures"]


@pytest.fixture
def client(aws):
    """Chalice's in-process test client against the app, on in-process moto."""
    from chalice.test import Client

    import app as app_module

    app_module._cache.clear()
    with Client(app_module.app, stage_name="local") as test_client:
        yield test_client


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory):
    """`make run`'s stack (python -m devstack) on free ports, stopped after the session."""
    from devstack.processes import background_stack

    with background_stack(tmp_path_factory.mktemp("stack")) as stack:
        yield stack
