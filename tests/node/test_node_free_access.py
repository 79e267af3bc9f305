"""Who gets free (and paid) compute, on anvil with real transactions (issue 20 observations 3, 4):

- FREE_COMPUTE_PUBLISHERS trusts what cannot be handed over: a did, or the creator of a data NFT
  as the chain's ERC721Factory recorded it, never its current owner (anyone can transfer an NFT
  to an allowed publisher) nor the `admin` its creator names;
- environments restrict paid and free jobs apart with Ocean Node's `access {addresses,
  accessLists}`, checked against real AccessList contracts;
- provider-wide and per-consumer rates of free starts keep throwaway keys from holding the tier.
"""
from __future__ import annotations

import json
import time
import urllib.parse

import pytest
from eth_account import Account

from devstack.contracts import DEPLOY_GAS, ZERO_ADDRESS, contract, decode_events, deploy, send
from devstack.publish import ecies_encrypt_for, publish_asset
from lifecycle_helpers import (
    CONTAINER, DATA_URL, initialize, order_both, post_start, start_body, stubbed_provider,
)
from signing import sign
from test_node_protocol import _clients, free_body, free_environments, get, post

ENV = "ocean-c2d-cpu"


def factories(chain) -> str:
    return json.dumps({str(chain.chain_id): chain.contracts.ERC721Factory})


@pytest.fixture
def provider(aws, chain, client, monkeypatch):
    """The sample dataset's publisher allowed for free compute (by creator), a free tier of
    `free_environments`, Batch behind the Stubber; yields (chain, batch, published, configure):
    `configure(environments=..., **settings)` changes the configuration in place."""
    settings = {"FREE_COMPUTE_PUBLISHERS": chain.publisher.address, "NFT_FACTORIES": factories(chain)}
    with stubbed_provider(chain, monkeypatch, free_environments(chain, per_consumer=2, max_free=4), allow_raw=True,
                          env=settings) as (batch, published):
        monkeypatch.setattr("chalicelib.aws.client", _clients(batch.client))

        def configure(environments: str | None = None, **changes: str) -> None:
            from chalicelib import config, services
            from chalicelib.compute import environments as configured

            if environments is not None:
                monkeypatch.setenv("COMPUTE_ENVIRONMENTS", environments)
            for name, value in changes.items():
                monkeypatch.setenv(name, value)
            config.settings.cache_clear()
            configured.environments.cache_clear()
            for accessor in (services.settings, services.chains, services.asset_resolver, services.nft_creators,
                             services.access_lists, services.compute_workflow):
                accessor.cache_clear()  # what reads the settings changed (Batch stays the Stubber's)

        yield chain, batch, published, configure


def start_free(client, batch, published, account, dataset=None, first=False):
    if first:
        batch.expect_new_definition()
    batch.expect_submit("batch-free")
    body = free_body(published, account)
    if dataset is not None:
        body["datasets"] = [{"documentId": dataset.did, "serviceId": dataset.serviceId}]
    return post(client, "/freeCompute", body)


def publish_dataset_of(chain, published, account, name="theirs"):
    """A dataset `account` publishes (and so creates the NFT of), the samples' algorithm trusted."""
    from chalicelib import services
    from chalicelib.compute.algorithm_rules import container_section_checksum

    return publish_asset(
        chain.w3, account, chain.contracts, name=name, files=[{"type": "url", "url": DATA_URL, "method": "GET"}],
        provider_url=services.settings().provider_url, provider_address=chain.provider.address,
        encrypt=ecies_encrypt_for(chain.provider_public_key),
        compute={"allowRawAlgorithm": True, "publisherTrustedAlgorithmPublishers": [],
                 "publisherTrustedAlgorithms": [{"did": published.algorithm.did, "filesChecksum": "",
                                                 "containerSectionChecksum": container_section_checksum(CONTAINER)}]},
    )


# -- observation 3: the free tier is keyed on the NFT's creator -------------------------------

def test_an_nft_transferred_to_an_allowed_publisher_gets_no_free_compute(client, provider):
    """`other` publishes its own dataset and transfers the data NFT to the allowed publisher
    (who does not consent): the provider sees the publisher as owner, and still no free compute."""
    chain, batch, published, _ = provider
    from chalicelib import services

    theirs = publish_dataset_of(chain, published, chain.other)
    nft = contract(chain.w3, "ERC721Template", theirs.nftAddress)
    send(chain.w3, chain.other, nft.functions.transferFrom(chain.other.address, chain.publisher.address, 1))
    assert nft.functions.ownerOf(1).call() == chain.publisher.address
    asset = services.asset_resolver().register(chain.chain_id, theirs.nftAddress)
    assert asset.owner == chain.publisher.address, "the NFT's owner is now the allowed publisher"
    status, body = post(client, "/freeCompute", {**free_body(published, chain.other),
                                                 "datasets": [{"documentId": theirs.did, "serviceId": theirs.serviceId}]})
    assert (status, body) == (400, {"error": {"dataset": "not_free_compute_dataset"}})
    assert services.nft_creators().creator(chain.chain_id, theirs.nftAddress) == chain.other.address
    # the publisher's own dataset is free, to `other` as to anyone
    status, body = start_free(client, batch, published, chain.other, first=True)
    assert status == 200, body


def test_the_creator_is_who_called_the_factory_not_the_admin_it_named(client, provider):
    """ERC721Factory.deployERC721Contract lets its caller name any `owner` (the event's `admin`):
    only the caller (`creator`) is the publisher."""
    chain, _, _, _ = provider
    from chalicelib import services

    factory = contract(chain.w3, "ERC721Factory", chain.contracts.ERC721Factory)
    receipt = send(chain.w3, chain.other, factory.functions.deployERC721Contract(
        "Named", "NM", 1, ZERO_ADDRESS, chain.other.address, "", True, chain.publisher.address), gas=DEPLOY_GAS)
    (created,) = decode_events(chain.w3, receipt, "ERC721Factory", "NFTCreated", chain.contracts.ERC721Factory)
    assert created["args"]["admin"] == chain.publisher.address and created["args"]["creator"] == chain.other.address
    nft = created["args"]["newTokenAddress"]
    assert contract(chain.w3, "ERC721Template", nft).functions.ownerOf(1).call() == chain.publisher.address
    assert services.nft_creators().creator(chain.chain_id, nft, receipt["blockNumber"] + 5) == chain.other.address


def test_the_creator_is_read_once_and_kept(client, provider):
    """It never changes: read from the chain once, then from the assets table, even by a new
    container (a chain that no longer answers is never asked again)."""
    chain, batch, published, configure = provider
    from chalicelib import services
    from chalicelib.models import NftCreator

    status, body = start_free(client, batch, published, chain.consumer, first=True)
    assert status == 200, body
    key = f"creator:{chain.chain_id}:{published.dataset.nftAddress.lower()}"
    assert NftCreator.get(key).creator == chain.publisher.address
    configure(CHAINS=json.dumps({str(chain.chain_id): "http://127.0.0.1:9"}))  # an RPC that refuses connections
    assert services.nft_creators().creator(chain.chain_id, published.dataset.nftAddress) == chain.publisher.address


def test_only_the_configured_factory_names_creators(client, provider):
    """An NFTCreated event counts only from the chain's configured ERC721Factory: with another
    address configured, the publisher's own dataset has no creator and is not free (dids still are)."""
    chain, batch, published, configure = provider
    configure(NFT_FACTORIES=json.dumps({str(chain.chain_id): chain.contracts.FactoryRouter}))
    status, body = post(client, "/freeCompute", free_body(published, chain.consumer))
    assert (status, body) == (400, {"error": {"dataset": "not_free_compute_dataset"}})
    configure(FREE_COMPUTE_PUBLISHERS=published.dataset.did)
    status, body = start_free(client, batch, published, chain.consumer, first=True)
    assert status == 200, body


# -- environments' access lists ---------------------------------------------------------------

def deploy_access_list(chain, users) -> str:
    """A real AccessList through the AccessListFactory (ocean-contracts), listing `users`."""
    template = deploy(chain.w3, chain.deployer, "AccessList")
    factory_address = deploy(chain.w3, chain.deployer, "AccessListFactory", template)
    factory = contract(chain.w3, "AccessListFactory", factory_address)
    receipt = send(chain.w3, chain.deployer, factory.functions.deployAccessListContract(
        "Allowed", "ALW", False, chain.deployer.address, [user.address for user in users], ["" for _ in users]),
        gas=DEPLOY_GAS)
    (created,) = decode_events(chain.w3, receipt, "AccessListFactory", "NewAccessList", factory_address)
    return created["args"]["contractAddress"]


def with_access(chain, paid=None, free=None) -> str:
    configured = json.loads(free_environments(chain, per_consumer=2, max_free=4))
    if paid is not None:
        configured[0]["access"] = paid
    if free is not None:
        configured[0]["freeCompute"]["access"] = free
    return json.dumps(configured)


def test_a_free_tier_restricted_to_an_access_list(client, provider):
    """Holding a token of the AccessList (balanceOf > 0) is being on it, read at every start:
    a consumer unlisted by the list's owner (burn) is refused from then on."""
    chain, batch, published, configure = provider
    listed = deploy_access_list(chain, [chain.consumer])
    access = {"addresses": [], "accessLists": [{str(chain.chain_id): [listed]}]}
    configure(environments=with_access(chain, free=access))
    (view,) = json.loads(get(client, "/computeEnvironments").body)
    assert view["free"]["access"] == access and view["access"] == {"addresses": [], "accessLists": None}
    status, body = post(client, "/freeCompute", free_body(published, chain.other))
    assert (status, body) == (403, {"error": "Access denied"})
    status, body = start_free(client, batch, published, chain.consumer, first=True)
    assert status == 200, body
    access_list = contract(chain.w3, "AccessList", listed)
    send(chain.w3, chain.deployer, access_list.functions.mint(chain.other.address, ""))
    status, body = start_free(client, batch, published, chain.other)
    assert status == 200, body
    token = access_list.functions.tokenOfOwnerByIndex(chain.consumer.address, 0).call()
    send(chain.w3, chain.deployer, access_list.functions.burn(token))
    status, body = post(client, "/freeCompute", free_body(published, chain.consumer))
    assert (status, body) == (403, {"error": "Access denied"})


def test_paid_and_free_access_apart_on_both_protocols(client, provider):
    """The environment's `access` restricts paid starts (v4 and Ocean Node's), its free tier's
    the free ones: listed by address for paid jobs here, anyone for free jobs."""
    chain, batch, published, configure = provider
    listed = deploy_access_list(chain, [chain.other])
    paid = {"addresses": [chain.consumer.address.lower()], "accessLists": [{str(chain.chain_id): [listed]}]}
    configure(environments=with_access(chain, paid=paid))
    (view,) = json.loads(get(client, "/computeEnvironments").body)
    assert view["access"] == {"addresses": [chain.consumer.address], "accessLists": [{str(chain.chain_id): [listed]}]}
    stranger = Account.create()
    quote = initialize(client, published, chain.consumer.address)
    dataset_tx, algorithm_tx = order_both(chain, published, quote)
    nonce = time.time_ns()
    status, body = post_start(client, {**start_body(published, stranger, nonce, dataset_tx, algorithm_tx),
                                       "signature": sign("0x" + bytes(stranger.key).hex(),
                                                         stranger.address + published.dataset.did + str(nonce))})
    assert (status, body) == (403, {"error": "Access denied"}), "v4 start, before any order is looked at"
    nonce += 1
    node_start = {"consumerAddress": stranger.address, "nonce": str(nonce),
                  "signature": sign("0x" + bytes(stranger.key).hex(), stranger.address + str(nonce) + "startCompute"),
                  "environment": ENV, "datasets": [{"documentId": published.dataset.did, "serviceId": "x",
                                                    "transferTxId": dataset_tx}],
                  "algorithm": {"documentId": published.algorithm.did}}
    assert post(client, "/compute", node_start) == (403, {"error": "Access denied"})
    batch.expect_new_definition()
    batch.expect_submit("batch-paid")
    status, body = post_start(client, start_body(published, chain.consumer, time.time_ns(), dataset_tx, algorithm_tx))
    assert status == 200, body
    status, body = start_free(client, batch, published, stranger)
    assert status == 200, "the free tier's access is its own: open here"


# -- observation 4: free-start rates ----------------------------------------------------------

def stop(client, batch, account, job_id):
    from lifecycle_helpers import consumer_key

    batch.expect_terminate()
    nonce = time.time_ns()
    query = {"consumerAddress": account.address, "nonce": nonce, "jobId": job_id,
             "signature": sign(consumer_key(account), account.address + str(nonce) + "stopCompute")}
    assert client.http.put("/node/api/services/compute?" + urllib.parse.urlencode(query)).status_code == 200


def throwaway_body(published):
    return free_body(published, Account.create())  # a new key: a new consumer, at no cost


def test_one_key_cannot_take_the_free_tier_back_as_soon_as_its_job_ends(client, provider):
    """Observation 4: maxJobsPerConsumer bounds one key's jobs at a time, not how often it takes
    them; FREE_STARTS_PER_CONSUMER_PER_HOUR does, and answers 429 with Retry-After."""
    chain, batch, published, configure = provider
    configure(FREE_STARTS_PER_CONSUMER_PER_HOUR="2")
    jobs = []
    for first in (True, False):
        status, body = start_free(client, batch, published, chain.consumer, first=first)
        assert status == 200, body
        jobs.append(body[0]["jobId"])
    for job_id in jobs:
        stop(client, batch, chain.consumer, job_id)
    response = client.http.post("/node/api/services/freeCompute", body=json.dumps(free_body(published, chain.consumer)),
                                headers={"Content-Type": "application/json"})
    assert response.status_code == 429
    assert json.loads(response.body)["error"].startswith("You started 2 free jobs this hour, the most one consumer may")
    assert 0 < int(response.headers["Retry-After"]) <= 3600
    status, body = start_free(client, batch, published, chain.other)
    assert status == 200, "another consumer is not held back"


def test_throwaway_keys_cannot_take_more_than_the_provider_wide_rate(client, provider):
    """Every throwaway key is a new consumer: FREE_STARTS_PER_MINUTE bounds them all together,
    whatever the tier's slots. A refused start takes nothing: not a slot, not the rate."""
    chain, batch, published, configure = provider
    configure(FREE_STARTS_PER_MINUTE="3")
    from chalicelib import services

    batch.expect_new_definition()
    for _ in range(3):
        batch.expect_submit("batch-free")
        status, body = post(client, "/freeCompute", throwaway_body(published))
        assert status == 200, body
    response = client.http.post("/node/api/services/freeCompute", body=json.dumps(throwaway_body(published)),
                                headers={"Content-Type": "application/json"})
    assert response.status_code == 429, response.body
    assert json.loads(response.body) == {"error": "Too many free jobs are starting on this provider (at most 3 a "
                                                  f"minute); try again in {response.headers['Retry-After']} s"}
    assert services.usage_counter().current([ENV, f"{ENV}#free"]) == {ENV: 3, f"{ENV}#free": 3}


def test_a_start_the_tier_refuses_gives_the_rate_back(client, provider):
    chain, batch, published, configure = provider
    configure(environments=free_environments(chain, per_consumer=1, max_free=4), FREE_STARTS_PER_MINUTE="2")
    status, body = start_free(client, batch, published, chain.consumer, first=True)
    assert status == 200, body
    for _ in range(3):  # refused by the tier (one job per consumer): no rate taken
        status, body = post(client, "/freeCompute", free_body(published, chain.consumer))
        assert status == 400 and "already run 1 free job" in body["error"]
    status, body = start_free(client, batch, published, chain.other)
    assert status == 200, body


def test_an_access_list_on_a_chain_not_served_is_a_configuration_error(client, provider):
    chain, _, published, configure = provider
    configure(environments=with_access(chain, free={"addresses": [], "accessLists": [{"1": [chain.contracts.Escrow]}]}))
    status, body = post(client, "/freeCompute", free_body(published, chain.consumer))
    assert status == 503 and body == {"error": "the free tier of compute environment ocean-c2d-cpu: an access list is "
                                               "on chain 1, which CHAINS does not name"}


def test_a_rate_of_zero_is_no_limit(aws):
    from chalicelib.compute.start_rate import Rate, StartRates

    rates = StartRates()
    for _ in range(50):
        assert rates.take([Rate("free", 0, 60, "")]).keys == ()
    taken = rates.take([Rate("free", 0, 60, ""), Rate("free#x", 1, 3600, "{limit} {retry}")])
    assert len(taken.keys) == 1
    rates.give_back(taken)
    rates.take([Rate("free#x", 1, 3600, "{limit} {retry}")])
