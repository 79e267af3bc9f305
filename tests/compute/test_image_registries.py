"""ALGORITHM_REGISTRIES: which registries an algorithm image may come from (chalicelib.config),
resolved as Docker resolves a reference, and the validator's refusal before any order is checked
(tests/compute/test_start_bounded.py shows a refused start leaves nothing behind)."""
from __future__ import annotations

import pytest

from chalicelib.config import DEFAULT_ALGORITHM_REGISTRIES, ImageRegistries, image_location, load_settings
from chalicelib.errors import ConfigurationError

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("image, location", [
    ("python", "docker.io/library/python"),
    ("python:3.11-slim", "docker.io/library/python"),
    ("python@" + DIGEST, "docker.io/library/python"),
    ("oceanprotocol/algo_dockers:python-branin", "docker.io/oceanprotocol/algo_dockers"),
    ("index.docker.io/python", "docker.io/library/python"),
    ("registry-1.docker.io/oceanprotocol/x", "docker.io/oceanprotocol/x"),
    ("ghcr.io/oceanprotocol/algo:1", "ghcr.io/oceanprotocol/algo"),
    ("localhost/x", "localhost/x"),
    ("localhost:5000/x:1", "localhost:5000/x"),
    ("10.0.0.5:5000/a/b", "10.0.0.5:5000/a/b"),
    ("Registry/x", "registry/x"),  # upper case: Docker takes it for a host, so do we (then refuse it)
    ("evil.example", "docker.io/library/evil.example"),  # no "/": a Docker Hub repository
])
def test_image_location_is_docker_s(image, location):
    assert image_location(image) == location


def test_the_default_allows_public_registries_only():
    registries = load_settings({"RESULTS_BUCKET": "b", "CHAINS": '{"8996": "http://127.0.0.1:8545"}'}).algorithm_registries
    assert registries.allowed == DEFAULT_ALGORITHM_REGISTRIES
    for image in ("python", "oceanprotocol/algo_dockers", "ghcr.io/x/y", "public.ecr.aws/docker/library/python",
                  "quay.io/x/y", "DOCKER.IO/library/python"):
        assert registries.allows(image), image
    for image in ("123456789012.dkr.ecr.us-east-1.amazonaws.com/private", "10.0.0.5:5000/x", "localhost:5000/x",
                  "docker.io.evil.example/x", "ghcr.io.evil.example/x", "registry.internal/x", "docker.io:5000/x"):
        assert not registries.allows(image), image


def test_host_and_namespace_entries():
    registries = ImageRegistries.parse("docker.io/library, ghcr.io/oceanprotocol registry.example.com:5000")
    assert registries.allowed == ("docker.io/library", "ghcr.io/oceanprotocol", "registry.example.com:5000")
    assert registries.allows("python") and registries.allows("ghcr.io/oceanprotocol/algo:1")
    assert registries.allows("registry.example.com:5000/team/tool")
    assert not registries.allows("oceanprotocol/algo")  # docker.io, but not library/
    assert not registries.allows("ghcr.io/oceanprotocolx/algo")  # a prefix of the namespace is not it
    assert not registries.allows("registry.example.com/team/tool")  # another port is another registry
    assert ImageRegistries.parse("index.docker.io").allowed == ("docker.io",)


def test_star_allows_any_and_bad_entries_are_configuration_errors():
    assert ImageRegistries.parse("*").allows("10.0.0.5:5000/x")
    assert ImageRegistries.parse("").allowed == DEFAULT_ALGORITHM_REGISTRIES
    for raw in ("https://ghcr.io", "ghcr.io/Upper", "ghcr.io/../y", "host:port"):
        with pytest.raises(ConfigurationError, match="ALGORITHM_REGISTRIES"):
            ImageRegistries.parse(raw)


def test_the_sample_algorithm_of_make_run_is_allowed_by_default():
    from devstack.samples import CONTAINER

    assert ImageRegistries().allows(CONTAINER["image"])
