"""What a start leaves behind (issue 12): a container the dispatcher would refuse is refused
before anything exists (no job record, no used order, no taken slot), and a job record carries
its expiry: the environment's maxJobDuration and storageExpiry plus JOB_RECORD_RETENTION."""
from __future__ import annotations

import json
import time

import pytest

from lifecycle_helpers import (
    TEST_IMAGE, environments_json, initialize, order_both, post_start, start_body, stubbed_provider,
)

RETENTION = 12_345
GOOD_CONTAINER = {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11", "checksum": TEST_IMAGE.digest}


@pytest.fixture
def provider(aws, chain, client, monkeypatch):
    env = {"JOB_RECORD_RETENTION": str(RETENTION)}
    with stubbed_provider(chain, monkeypatch, environments_json(chain), allow_raw=True, env=env) as (batch, published):
        yield chain, batch, published


def _raw_start(published, chain, dataset_tx, container):
    body = start_body(published, chain.consumer, time.time_ns(), dataset_tx, "0x" + "00" * 32)
    body["algorithm"] = {"meta": {"rawcode": "print(1)", "container": container}}
    return body


def _nothing_left_behind():
    from chalicelib.models import EnvironmentUsage, JobRecord, OrderUse

    assert list(JobRecord.scan()) == []
    assert list(OrderUse.scan()) == []
    assert all(int(usage.running) == 0 for usage in EnvironmentUsage.scan())


@pytest.mark.parametrize("field, value", [
    ("image", "python;rm -rf /"), ("image", "registry.example.com//x"), ("checksum", "sha256:not-hex"),
    ("entrypoint", "python\x00$ALGO"), ("entrypoint", "x" * 5000), ("tag", "bad tag!"),
])
def test_a_refused_container_leaves_nothing_behind(client, provider, field, value):
    chain, batch, published = provider
    quote = initialize(client, published, chain.consumer.address)
    dataset_tx, _ = order_both(chain, published, quote)
    status, body = post_start(client, _raw_start(published, chain, dataset_tx, {**GOOD_CONTAINER, field: value,
                                                                                   **({"checksum": ""} if field == "tag" else {})}))
    assert status == 400 and "algorithm" in json.dumps(body), body
    _nothing_left_behind()
    # the order is still unused: the same order starts a job with a good container
    batch.expect_new_definition()
    batch.expect_submit()
    status, body = post_start(client, _raw_start(published, chain, dataset_tx, GOOD_CONTAINER))
    assert status == 200, body


@pytest.mark.parametrize("image", [
    "123456789012.dkr.ecr.us-east-1.amazonaws.com/private-tools",  # the instances' role pulls it
    "10.0.0.5:5000/tools", "localhost:5000/tools", "registry.internal.example/tools",
    "docker.io.internal.example/library/python",
])
def test_an_image_from_a_registry_not_allowed_is_refused_before_anything_exists(client, provider, image):
    """ALGORITHM_REGISTRIES (default: public registries only) is checked with the container
    fields: a 400 in the business envelope, no record, no used order, no slot, no manifest,
    no Batch call; the same order then starts with an image from an allowed registry."""
    chain, batch, published = provider
    from chalicelib import aws, services

    quote = initialize(client, published, chain.consumer.address)
    dataset_tx, _ = order_both(chain, published, quote)
    status, body = post_start(client, _raw_start(published, chain, dataset_tx, {**GOOD_CONTAINER, "image": image}))
    assert (status, body) == (400, {"error": {"algorithm.container": "image_registry_not_allowed"}})
    _nothing_left_behind()
    listed = aws.client("s3").list_objects_v2(Bucket=services.settings().bucket, Prefix="jobs/")
    assert listed.get("KeyCount", 0) == 0
    assert batch.submitted == [] and batch.registered == []
    batch.expect_new_definition()
    batch.expect_submit()
    status, body = post_start(client, _raw_start(published, chain, dataset_tx,
                                                 {**GOOD_CONTAINER, "image": "ghcr.io/oceanprotocol/algo"}))
    assert status == 200, body
    containers = batch.registered[-1]["ecsProperties"]["taskProperties"][0]["containers"]
    assert containers[1]["image"] == "ghcr.io/oceanprotocol/algo@" + GOOD_CONTAINER["checksum"]


def test_a_job_record_expires_after_storage_and_retention(client, provider):
    chain, batch, published = provider
    from chalicelib.models import JobRecord, owner_document

    quote = initialize(client, published, chain.consumer.address)
    dataset_tx, _ = order_both(chain, published, quote)
    batch.expect_new_definition()
    batch.expect_submit()
    status, body = post_start(client, _raw_start(published, chain, dataset_tx, GOOD_CONTAINER))
    assert status == 200, body
    record = JobRecord.get(body[0]["jobId"])
    environment = json.loads(environments_json(chain))[0]
    expected = int(record.date_created) + environment["maxJobDuration"] + environment["storageExpiry"] + RETENTION
    assert int(record.expires_at.timestamp()) == expected
    assert record.owner_document == owner_document(chain.consumer.address, published.dataset.did)
