"""An asset a publisher puts on chain against `make run`'s stack is computable here within a
minute, with no operator step: published as Ocean's publishers do (NFT and datatoken from the
factory, files encrypted through this provider's own encrypt endpoint over HTTP, the DDO set on
the NFT, serviceEndpoint `<api>/node`), nobody registers it; the stack's asset indexer finds it
on chain. Then Ocean Node's DDO route serves it, and a consumer computes on it with the
algorithm published beside it, through the real runner, to status 70.

(tests/compat/test_compat_ocean_cli.py does the same with Ocean's CLI's own `publish` when a
checkout of the CLI is given.)"""
from __future__ import annotations

import time
from types import SimpleNamespace

import requests
from web3 import Web3

from devstack.anvil import dev_accounts
from devstack.publish import publish_asset
from devstack.stack import http_encrypt
from stack_consumer import iris_summary, own_consumer, run_free

INDEXED_WITHIN = 60.0  # seconds: the Lambda runs every minute; make run's loop every few seconds


def test_a_newly_published_asset_is_computable_within_a_minute(local_stack):
    from chalicelib.compute.algorithm_rules import container_section_checksum, content_checksum
    from devstack.samples import CONTAINER, SAMPLE_DIR

    api, files = local_stack["providerUrl"], local_stack["filesUrl"]
    w3 = Web3(Web3.HTTPProvider(local_stack["rpcUrl"]))
    publisher = dev_accounts(1)[0]  # make run lets its publisher's datasets be computed for free
    contracts = SimpleNamespace(**local_stack["contracts"])
    encrypt = http_encrypt(api)  # as a publisher's client does: this provider's POST /api/services/encrypt
    common = dict(provider_url=api + "/node", provider_address=local_stack["providerAddress"], encrypt=encrypt)
    algorithm = publish_asset(w3, publisher, contracts, name="new algorithm", asset_type="algorithm",
                              files=[{"type": "url", "url": f"{files}/algorithm.py", "method": "GET"}],
                              algorithm={"language": "python", "version": "3.11", "container": CONTAINER}, **common)
    dataset = publish_asset(w3, publisher, contracts, name="new dataset",
                            files=[{"type": "url", "url": f"{files}/iris.csv", "method": "GET"}],
                            compute={"allowRawAlgorithm": False, "publisherTrustedAlgorithms": [{
                                "did": algorithm.did,
                                "filesChecksum": content_checksum((SAMPLE_DIR / "algorithm.py").read_bytes()),
                                "containerSectionChecksum": container_section_checksum(CONTAINER)}]},
                            **common)
    published_at = time.monotonic()

    for asset in (algorithm, dataset):
        answer = _when_served(f"{api}/node/api/aquarius/assets/ddo/{asset.did}", published_at)
        assert answer["id"] == asset.did and answer["nftAddress"] == asset.nftAddress
        assert answer["services"][0]["serviceEndpoint"] == api + "/node"
        assert answer["indexedMetadata"]["nft"]["owner"] == publisher.address
        assert answer["datatokens"][0]["address"] == asset.datatoken
    found = time.monotonic() - published_at
    print(f"published assets served after {found:.1f} s")

    done = run_free(own_consumer(local_stack, 6), [{"documentId": dataset.did, "serviceId": dataset.serviceId}],
                    {"documentId": algorithm.did, "serviceId": algorithm.serviceId})
    iris_summary(done["output"], f"{dataset.did}/0")


def _when_served(url: str, since: float) -> dict:
    while True:
        answer = requests.get(url, timeout=10)
        if answer.status_code == 200:
            return answer.json()
        assert answer.status_code == 404, answer.text
        assert time.monotonic() - since < INDEXED_WITHIN, f"{url} not served {INDEXED_WITHIN:.0f} s after its publication"
        time.sleep(0.5)
