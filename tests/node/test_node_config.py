"""The configuration behind the Ocean Node view: free tiers and prices in the environments,
FREE_COMPUTE_PUBLISHERS, and requested resources against an environment's job size."""
from __future__ import annotations

import json

import pytest

from chalicelib.auth.signatures import to_checksum_address
from chalicelib.compute.environments import Access, fill_resources, load_environments
from chalicelib.config import load_settings
from chalicelib.errors import BusinessError, ConfigurationError, ValidationError
from chalicelib.node import environments as views
from chalicelib.node.requests import ResourceRequest
from chalicelib.payments.pricing import environment_prices

BASE = {"id": "gpu", "chainIds": [1], "jobQueue": "q", "nCPU": 4, "nGPU": 1, "gpuType": "A10G", "ramGB": 16,
        "diskGB": 100, "priceMin": 8, "maxJobs": 3, "maxJobDuration": 600}


def environment(**extra):
    return load_environments({"COMPUTE_ENVIRONMENTS": json.dumps([{**BASE, **extra}])})["gpu"]


def test_free_tier_and_prices_are_read_and_checked():
    tier = environment(freeCompute={"maxJobDuration": 60, "maxJobs": 1, "access": [ONE]}).free_tier
    assert (tier.max_job_duration, tier.max_jobs, tier.max_jobs_per_consumer) == (60, 1, 1)
    assert tier.access == Access(addresses=(ONE.lower(),)), "a bare list is the addresses alone"
    assert environment().free_tier is None
    for bad in ({"maxJobs": 1}, {"maxJobDuration": 0, "maxJobs": 1}, True, "x"):
        with pytest.raises(ConfigurationError, match="#0 is malformed"):
            environment(freeCompute=bad)
    with pytest.raises(ConfigurationError):
        environment(prices={"cpu": "cheap"})


ONE, TWO = "0x" + "aB" * 20, "0x" + "12" * 20


def test_access_in_ocean_nodes_shape_for_paid_and_free_jobs_apart():
    """Ocean Node's `access {addresses, accessLists}`: the environment's for paid jobs, the free
    tier's for free ones; shown in Ocean Node's shape (accessLists null when there is none)."""
    configured = environment(access={"addresses": [ONE], "accessLists": [{"8996": [TWO]}, {"1": [ONE]}]},
                             freeCompute={"maxJobDuration": 60, "maxJobs": 1,
                                          "access": {"addresses": [], "accessLists": [{"8996": [ONE]}]}})
    assert configured.access == Access((ONE.lower(),), ((8996, to_checksum_address(TWO)), (1, to_checksum_address(ONE))))
    assert configured.free_tier.access == Access((), ((8996, to_checksum_address(ONE)),))
    assert configured.access.view() == {"addresses": [to_checksum_address(ONE)],
                                        "accessLists": [{"8996": [to_checksum_address(TWO)], "1": [to_checksum_address(ONE)]}]}
    assert environment().access.is_open and environment().access.view() == {"addresses": [], "accessLists": None}
    assert environment(access={"addresses": [], "accessLists": None}).access.is_open
    for bad in ({"addresses": ["0x12"]}, {"accessLists": {"8996": [ONE]}}, {"accessLists": [{"x": [ONE]}]},
                {"accessLists": [{"8996": ONE}]}, {"addresses": [ONE], "others": []}, "0x12"):
        with pytest.raises(ConfigurationError, match="#0 is malformed"):
            environment(access=bad)


def test_prices_per_resource_per_minute():
    assert environment_prices(environment()) == [{"id": "cpu", "price": 2.0}, {"id": "ram", "price": 0},
                                                 {"id": "disk", "price": 0}, {"id": "gpu", "price": 0}]
    assert environment_prices(environment(prices={"gpu": 7, "cpu": 0.25})) == [{"id": "gpu", "price": 7.0},
                                                                               {"id": "cpu", "price": 0.25}]
    assert {p["price"] for p in environment_prices(environment(free=True))} == {0}


def test_resources_of_a_gpu_environment():
    listed = {r["id"]: r for r in views.resources(environment(), 3, 1)}
    assert listed["gpu"] == {"id": "gpu", "total": 3, "min": 1, "max": 1, "inUse": 1, "type": "gpu", "description": "A10G"}
    assert listed["ram"] == {"id": "ram", "total": 48.0, "min": 16.0, "max": 16.0, "inUse": 16.0}


def test_requested_resources_are_raised_to_the_job_size_and_never_above():
    env = environment()
    filled = fill_resources(env, [ResourceRequest(id="cpu", amount=1)])
    assert filled == [{"id": "cpu", "amount": 4}, {"id": "ram", "amount": 16.0}, {"id": "disk", "amount": 100.0},
                      {"id": "gpu", "amount": 1}]
    with pytest.raises(BusinessError, match="Not enough gpu resources. Requested 2, but max is 1"):
        fill_resources(env, [ResourceRequest(id="gpu", amount=2)])
    with pytest.raises(ValidationError, match="twice"):
        fill_resources(env, [ResourceRequest(id="cpu", amount=1), ResourceRequest(id="cpu", amount=2)])
    with pytest.raises(ValidationError, match="unknown resource"):
        fill_resources(env, [ResourceRequest(id="tpu", amount=1)])


@pytest.mark.parametrize("raw, expected", [
    ("", ()), ("0xAB, did:op:1", ("0xab", "did:op:1")), ('["0xAB", "did:op:2"]', ("0xab", "did:op:2")),
    ("0xA 0xB", ("0xa", "0xb")),
])
def test_free_compute_publishers_setting(raw, expected):
    env = {"CHAINS": '{"1": "http://x"}', "RESULTS_BUCKET": "b", "FREE_COMPUTE_PUBLISHERS": raw,
           "NFT_FACTORIES": '{"1": "0x' + "ab" * 20 + '"}'}
    assert load_settings(env).free_compute_publishers == expected


def test_publishers_need_the_factory_that_records_who_created_an_nft():
    """A publisher is an NFT's creator (NFTCreated of the chain's ERC721Factory), never its
    current owner: without a factory to read it from, naming publishers is a mistake."""
    env = {"CHAINS": '{"1": "http://x"}', "RESULTS_BUCKET": "b", "FREE_COMPUTE_PUBLISHERS": "0xAB, did:op:1"}
    with pytest.raises(ConfigurationError, match="NFT_FACTORIES"):
        load_settings(env)
    assert load_settings({**env, "FREE_COMPUTE_PUBLISHERS": "did:op:1"}).nft_factories == {}
    factory = "0x" + "Cd" * 20
    assert load_settings({**env, "NFT_FACTORIES": '{"1": "%s"}' % factory}).nft_factories == {1: factory}
    for bad in ('{"1": "0x12"}', "[1]", '{"x": "%s"}' % factory, "{"):
        with pytest.raises(ConfigurationError, match="NFT_FACTORIES"):
            load_settings({**env, "NFT_FACTORIES": bad})


@pytest.mark.parametrize("name", ["FREE_STARTS_PER_MINUTE", "FREE_STARTS_PER_CONSUMER_PER_HOUR"])
def test_free_start_rates(name):
    env = {"CHAINS": '{"1": "http://x"}', "RESULTS_BUCKET": "b"}
    defaults = load_settings(env)
    assert (defaults.free_starts_per_minute, defaults.free_starts_per_consumer_per_hour) == (30, 10)
    assert getattr(load_settings({**env, name: "0"}), name.lower()) == 0
    for bad in ("-1", "1.5", "many"):
        with pytest.raises(ConfigurationError, match=name):
            load_settings({**env, name: bad})


def test_free_compute_publishers_malformed():
    env = {"CHAINS": '{"1": "http://x"}', "RESULTS_BUCKET": "b", "FREE_COMPUTE_PUBLISHERS": '["x"'}
    with pytest.raises(ConfigurationError, match="FREE_COMPUTE_PUBLISHERS"):
        load_settings(env)
