"""The registry resolver (compute.image_digests) against Debian's docker-registry, the CNCF
distribution registry, behind a token realm as Docker Hub, GHCR and Quay are: what a tag
resolves to, anonymously and with the operator's login, multi-platform indexes, checksums that
differ, tags and repositories that do not exist, addresses that are not allowed, and registries
that do not answer."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from fakes import black_hole
from oci_registry import (
    DistributionRegistry, LoopbackRegistry, OciImage, OciIndex, RegistryClient, TokenServer, distribution_unavailable,
    script_image,
)

PUSHER = ("pusher", "push-secret")
OPERATOR = ("operator", "operator-secret")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DistributionRegistry, TokenServer]]:
    reason = distribution_unavailable()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("registry")
    tokens = TokenServer("c2d-test-registry", "c2d-test-issuer", work, logins=dict([PUSHER, OPERATOR]),
                         private=("private/",))
    with tokens.serving(), DistributionRegistry(work, tokens).running() as running:
        yield running, tokens


def resolver(**options):
    from chalicelib.compute.image_digests import RegistryDigests

    return RegistryDigests(allow_private=True, **options)


def refusal(call) -> dict:
    from chalicelib.errors import BusinessError

    with pytest.raises(BusinessError) as caught:
        call()
    return caught.value.body()["error"]


def test_a_tag_resolves_to_its_manifest_digest_through_an_anonymous_token(registry):
    running, tokens = registry
    image = script_image("v1")
    RegistryClient(running.url, PUSHER).push("c2d/algo", "1.0", image)
    asked = len(tokens.asked)
    pinned = resolver().pin({"image": f"{running.host}/c2d/algo", "tag": "1.0", "entrypoint": "x"})
    assert (pinned.digest, pinned.tag, pinned.resolved) == (image.digest, "1.0", True)
    assert pinned.reference == f"{running.host}/c2d/algo@{image.digest}"
    assert tokens.asked[asked:] == [""], "one anonymous token for repository:c2d/algo:pull"
    # the tag in the image name wins, as Docker reads it; a checksum that agrees is accepted
    assert resolver().pin({"image": f"{running.host}/c2d/algo:1.0", "tag": "ignored",
                           "checksum": image.digest}).digest == image.digest


def test_a_checksum_of_another_image_is_refused(registry):
    running, _ = registry
    client = RegistryClient(running.url, PUSHER)
    old, new = script_image("old"), script_image("new")
    client.push("c2d/moving", "latest", old)
    client.push("c2d/moving", "latest", new)  # the publisher re-tagged since the DDO was written
    assert refusal(lambda: resolver().pin({"image": f"{running.host}/c2d/moving", "checksum": old.digest})) == {
        "algorithm.container": "image_checksum_mismatch"}
    assert resolver().pin({"image": f"{running.host}/c2d/moving", "checksum": new.digest}).digest == new.digest
    # a digest in the image name itself must be the checksum and must exist
    assert resolver().pin({"image": f"{running.host}/c2d/moving@{old.digest}", "checksum": old.digest}).digest == old.digest
    assert refusal(lambda: resolver().pin({"image": f"{running.host}/c2d/moving@sha256:" + "0" * 64})) == {
        "algorithm.container": "image_not_found"}


def test_a_multi_platform_index_pins_the_digest_the_checksum_names(registry):
    running, _ = registry
    amd64 = script_image("amd64")
    arm64 = OciImage({"algo.sh": (b"#!/bin/sh\necho arm\n", 0o755)}, ("/bin/sh", "/algo.sh"), architecture="arm64")
    index = OciIndex((amd64, arm64))
    RegistryClient(running.url, PUSHER).push("c2d/multi", "2", index)
    name = f"{running.host}/c2d/multi:2"
    assert resolver().pin({"image": name}).digest == index.digest  # no checksum: the index, as `docker pull` shows
    assert resolver().pin({"image": name, "checksum": index.digest}).digest == index.digest
    # `docker inspect` on an x86_64 instance shows the amd64 manifest: that pins exactly it
    assert resolver().pin({"image": name, "checksum": amd64.digest}).digest == amd64.digest
    assert refusal(lambda: resolver().pin({"image": name, "checksum": arm64.digest})) == {
        "algorithm.container": "image_checksum_mismatch"}


def test_a_private_repository_resolves_with_the_operators_login_only(registry):
    from chalicelib.compute.image_digests import RegistryLogin

    running, tokens = registry
    image = script_image("private")
    RegistryClient(running.url, PUSHER).push("private/algo", "1", image)
    container = {"image": f"{running.host}/private/algo", "tag": "1"}
    assert refusal(lambda: resolver().pin(container)) == {"algorithm.container": "image_not_found"}
    asked = len(tokens.asked)
    logins = {running.host: RegistryLogin(*OPERATOR)}
    assert resolver(logins=lambda: logins).pin(container).digest == image.digest
    assert tokens.asked[asked:] == ["operator"]
    wrong = {running.host: RegistryLogin("operator", "wrong")}
    assert refusal(lambda: resolver(logins=lambda: wrong).pin(container)) == {"algorithm.container": "image_not_found"}


def test_tags_and_repositories_that_do_not_exist(registry):
    running, _ = registry
    RegistryClient(running.url, PUSHER).push("c2d/known", "1", script_image("known"))
    for container in ({"image": f"{running.host}/c2d/known", "tag": "2"},
                      {"image": f"{running.host}/c2d/unknown", "tag": "1"}):
        assert refusal(lambda: resolver().pin(container)) == {"algorithm.container": "image_not_found"}


def test_a_registry_on_a_private_address_is_not_asked_unless_allowed(registry):
    from chalicelib.compute.image_digests import RegistryDigests

    running, tokens = registry
    asked = len(tokens.asked)
    assert refusal(lambda: RegistryDigests(allow_private=False).pin({"image": f"{running.host}/c2d/known", "tag": "1"})) == {
        "algorithm.container": "image_registry_not_allowed"}
    assert len(tokens.asked) == asked


def test_a_registry_that_never_answers_is_a_503_within_its_bound():
    from chalicelib.compute.image_digests import REGISTRY_SECONDS, RegistryDigests
    from chalicelib.errors import ServiceUnavailable

    with black_hole() as url:
        host = url.removeprefix("http://")
        began = time.monotonic()
        with pytest.raises(ServiceUnavailable) as caught:
            RegistryDigests(allow_private=True).pin({"image": f"{host}/c2d/algo", "tag": "1"})
        took = time.monotonic() - began
    assert took < REGISTRY_SECONDS + 1, took
    assert caught.value.status_code == 503 and host not in str(caught.value.body())


def test_a_registry_without_a_digest_header_is_read_and_hashed():
    """Docker-Content-Digest is optional in the spec: the GET body's sha256 is the digest."""
    from chalicelib.compute.image_digests import RegistryDigests

    registry = LoopbackRegistry(digest_header=False).start()
    try:
        image = script_image("no header")
        registry.publish("c2d/algo", "1", image)
        pinned = RegistryDigests(allow_private=True).pin({"image": f"{registry.host}/c2d/algo", "tag": "1"})
        assert pinned.digest == image.digest
        assert [method for method, _ in registry.requests] == ["HEAD", "GET"]
    finally:
        registry.stop()


def test_docker_hub_is_asked_at_its_api_host_and_its_aliases_share_a_login():
    from chalicelib.compute.image_digests import RegistryDigests, parse_logins

    assert RegistryDigests().base_url("docker.io") == "https://registry-1.docker.io"
    assert RegistryDigests().base_url("ghcr.io") == "https://ghcr.io"
    assert RegistryDigests().base_url("127.0.0.1:5000") == "https://127.0.0.1:5000"  # TLS unless private is allowed
    assert RegistryDigests(allow_private=True).base_url("localhost:5000") == "http://localhost:5000"
    logins = parse_logins('{"index.docker.io": {"username": "u", "password": "p"}, "GHCR.io": {"username": "g", "password": "t"}}')
    assert set(logins) == {"docker.io", "ghcr.io"}
    with pytest.raises(ValueError) as problem:
        parse_logins('{"ghcr.io": {"username": "g"}}')
    assert "ghcr.io" in str(problem.value) and "password" in str(problem.value)


def test_a_registry_asking_for_pull_limits_is_a_503():
    """429 (Docker Hub's pull limits) or a server error: try again later, nothing reserved."""
    from chalicelib.compute.image_digests import RegistryDigests
    from chalicelib.errors import ServiceUnavailable

    registry = LoopbackRegistry(fail_with=429).start()
    try:
        with pytest.raises(ServiceUnavailable):
            RegistryDigests(allow_private=True).pin({"image": f"{registry.host}/c2d/algo", "tag": "1"})
    finally:
        registry.stop()
