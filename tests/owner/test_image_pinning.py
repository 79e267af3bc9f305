"""The image is pinned at start (issue 22), through the API: a published algorithm whose tag is
re-tagged between the start and the pull still runs the image it had at start, because the job
definition names `image@sha256:…`; a DDO checksum the tag no longer resolves to is a 400
`image_checksum_mismatch`; a registry that does not answer is a 503; neither reserves anything.

The registry is Debian's docker-registry behind a token realm (tests/oci_registry.py); Batch is
botocore's Stubber, the chain anvil. "The pull" is what an instance does with the definition's
image: the manifest at that reference, its layer unpacked, and its entrypoint run with real runc
as the algorithm container's user."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest

from fakes import black_hole
from lifecycle_helpers import environments_json, initialize, order_both, post_start, start_body, stubbed_provider
from oci_registry import (
    DistributionRegistry, RegistryClient, TokenServer, distribution_unavailable, script_image, static_busybox,
)

PUSHER = ("pusher", "push-secret")
BUSYBOX = static_busybox()
V1, V2 = script_image("algorithm image v1", BUSYBOX), script_image("algorithm image v2", BUSYBOX)
REPOSITORY = "c2d/stats"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DistributionRegistry]:
    reason = distribution_unavailable()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("registry")
    tokens = TokenServer("c2d-test-registry", "c2d-test-issuer", work, logins=dict([PUSHER]))
    with tokens.serving(), DistributionRegistry(work, tokens).running() as running:
        yield running


@pytest.fixture
def provider(aws, chain, client, monkeypatch, registry):
    """The sample algorithm published in the registry's `c2d/stats:latest`, its DDO's checksum
    v1's digest, v1 pushed there; images resolved as configured (ALLOW_PRIVATE_NETWORKS lets
    the provider ask a loopback registry, over HTTP as Docker does)."""
    RegistryClient(registry.url, PUSHER).push(REPOSITORY, "latest", V1)
    container = {"entrypoint": "/bin/sh /algo.sh", "image": f"{registry.host}/{REPOSITORY}", "tag": "latest",
                 "checksum": V1.digest}
    env = {"ALGORITHM_REGISTRIES": "*", "ALLOW_PRIVATE_NETWORKS": "1"}
    with stubbed_provider(chain, monkeypatch, environments_json(chain), allow_raw=True, env=env,
                          tests_registry=False, container=container) as (batch, published):
        yield chain, batch, published, registry


def _nothing_reserved() -> None:
    from chalicelib.models import EnvironmentUsage, JobRecord, OrderUse

    assert list(JobRecord.scan()) == []
    assert list(OrderUse.scan()) == []
    assert all(int(usage.running) == 0 for usage in EnvironmentUsage.scan())


def _ordered(client, chain, published, account=None):
    account = account or chain.consumer
    quote = initialize(client, published, account.address)
    return order_both(chain, published, quote, account)


def _algorithm_image(batch) -> str:
    return batch.registered[-1]["ecsProperties"]["taskProperties"][0]["containers"][1]["image"]


def test_a_retag_after_the_start_does_not_change_what_runs(client, provider, tmp_path):
    chain, batch, published, registry = provider
    dataset_tx, algorithm_tx = _ordered(client, chain, published)
    batch.expect_new_definition()
    batch.expect_submit()
    status, body = post_start(client, start_body(published, chain.consumer, time.time_ns(), dataset_tx, algorithm_tx))
    assert status == 200, body
    pinned = _algorithm_image(batch)
    assert pinned == f"{registry.host}/{REPOSITORY}@{V1.digest}"

    # the publisher (or whoever holds the repository) moves the tag before the instance pulls
    RegistryClient(registry.url, PUSHER).push(REPOSITORY, "latest", V2)
    anonymous = RegistryClient(registry.url)
    moved_status, moved = anonymous.manifest(REPOSITORY, "latest")
    assert moved_status == 200 and json.loads(moved) == json.loads(V2.manifest)

    rootfs = tmp_path / "rootfs"
    assert anonymous.pull(pinned, rootfs) == V1.digest  # the bytes the pinned reference serves
    assert (rootfs / "algo.sh").read_text() == "#!/bin/sh\necho 'algorithm image v1'\n"
    _run_entrypoint(rootfs, tmp_path, "algorithm image v1")

    # another consumer's start of the same published algorithm now finds a tag that is not its checksum
    dataset_tx, algorithm_tx = _ordered(client, chain, published, chain.other)
    status, body = post_start(client, start_body(published, chain.other, time.time_ns(), dataset_tx, algorithm_tx))
    assert (status, body) == (400, {"error": {"algorithm.container": "image_checksum_mismatch"}})
    from chalicelib.models import JobRecord, OrderUse

    assert len(list(JobRecord.scan())) == 1 and len(list(OrderUse.scan())) == 2  # the first job's only
    batch.stubber.assert_no_pending_responses()


def _run_entrypoint(rootfs: Path, work: Path, expected: str) -> None:
    """Run the pulled image's entrypoint with real runc, as the sealed algorithm's UID (Docker
    25's spec for the algorithm container: tests/infra/oci_lab.py)."""
    from oci_lab import docker_spec, write_bundle
    import os
    import subprocess

    if os.geteuid() != 0 or shutil.which("runc") is None or BUSYBOX is None:
        pytest.skip("running the pulled image needs root, runc and a static busybox (`make test` installs them as root)")
    etc = work / "etc"
    etc.mkdir()
    for name, text in (("resolv.conf", "nameserver 10.0.0.2\n"), ("hostname", "c2d\n"), ("hosts", "127.0.0.1 localhost\n")):
        (etc / name).write_text(text)
    config = json.loads(V1.config)
    spec = docker_spec(rootfs, config["config"]["Entrypoint"], uid=4000, batch_job=False, etc_dir=etc)
    bundle = write_bundle(work / "bundle", spec)
    ran = subprocess.run(["runc", "--root", str(work / "state"), "run", "--bundle", str(bundle), f"c2d-pin-{os.getpid()}"],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == expected


def test_a_raw_algorithm_without_checksum_runs_what_its_tag_was_at_start(client, provider):
    chain, batch, published, registry = provider
    RegistryClient(registry.url, PUSHER).push("c2d/raw", "3", V2)
    dataset_tx, _ = _ordered(client, chain, published)
    body = start_body(published, chain.consumer, time.time_ns(), dataset_tx, "0x" + "00" * 32)
    body["algorithm"] = {"meta": {"rawcode": "print(1)", "container": {
        "entrypoint": "python $ALGO", "image": f"{registry.host}/c2d/raw", "tag": "3", "checksum": ""}}}
    batch.expect_new_definition()
    batch.expect_submit()
    status, answer = post_start(client, body)
    assert status == 200, answer
    assert _algorithm_image(batch) == f"{registry.host}/c2d/raw@{V2.digest}"


def test_a_registry_that_does_not_answer_is_a_503_and_nothing_is_reserved(client, provider):
    from chalicelib import budget

    chain, batch, published, _ = provider
    dataset_tx, algorithm_tx = _ordered(client, chain, published)
    with black_hole() as url:
        body = start_body(published, chain.consumer, time.time_ns(), dataset_tx, "0x" + "00" * 32)
        body["algorithm"] = {"meta": {"rawcode": "print(1)", "container": {
            "entrypoint": "python $ALGO", "image": url.removeprefix("http://") + "/c2d/stats", "tag": "1"}}}
        began = time.monotonic()
        status, answer = post_start(client, body)
        took = time.monotonic() - began
    assert status == 503 and "registry" in answer["error"] and "127.0.0.1" not in json.dumps(answer), answer
    assert took < budget.REQUEST_BUDGET_SECONDS
    _nothing_reserved()
    assert batch.registered == [] and batch.submitted == []
    # the same orders start the published algorithm once the registry answers
    batch.expect_new_definition()
    batch.expect_submit()
    status, answer = post_start(client, start_body(published, chain.consumer, time.time_ns(), dataset_tx, algorithm_tx))
    assert status == 200, answer


def test_an_unknown_tag_is_a_400_before_anything_is_reserved(client, provider):
    chain, batch, published, registry = provider
    dataset_tx, _ = _ordered(client, chain, published)
    body = start_body(published, chain.consumer, time.time_ns(), dataset_tx, "0x" + "00" * 32)
    body["algorithm"] = {"meta": {"rawcode": "print(1)", "container": {
        "entrypoint": "python $ALGO", "image": f"{registry.host}/c2d/stats", "tag": "no-such-tag"}}}
    assert post_start(client, body) == (400, {"error": {"algorithm.container": "image_not_found"}})
    _nothing_reserved()
