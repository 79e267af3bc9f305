"""A provider wired to the test chain and moto, with sample assets published and registered."""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import boto3
from botocore.stub import ANY, Stubber

from devstack.devchain import DevChain
from devstack.publish import PublishedAsset, publish_asset
from devstack.orders import mint_datatokens, start_order
from oci_registry import LoopbackRegistry, script_image
from signing import sign

# The image the samples' algorithm runs in: every start resolves its tag through its registry
# (compute.image_digests), here a registry of the tests' own standing in for Docker Hub and GHCR
# (`image_registry()`), where these tags point to this image; the DDO's checksum is its digest.
TEST_IMAGE = script_image("the tests' algorithm image")
TEST_IMAGE_TAGS = (("library/python", "3.11-slim"), ("library/python", "3.11"), ("oceanprotocol/algo", "latest"),
                   ("oceanprotocol/algo", "3.11"))
CONTAINER = {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11-slim", "checksum": TEST_IMAGE.digest}
_registry: list[LoopbackRegistry] = []


def image_registry() -> LoopbackRegistry:
    """The tests' registry (started once per session, in a thread), serving TEST_IMAGE_TAGS."""
    if not _registry:
        registry = LoopbackRegistry(tokens=True).start()
        for name, tag in TEST_IMAGE_TAGS:
            registry.publish(name, tag, TEST_IMAGE)
        _registry.append(registry)
    return _registry[0]


def registry_digests():
    """The provider's real resolver, with Docker Hub's and GHCR's API at the tests' registry."""
    from chalicelib.compute.image_digests import RegistryDigests

    registry = image_registry()
    return RegistryDigests(endpoints={"docker.io": registry.url, "ghcr.io": registry.url}, allow_private=True)
DATA_URL = "https://data.example.com/private/iris.csv?token=s3cr3t"
# The algorithm's file: an s3 object (moto) the provider hashes at start and pins in the manifest;
# the fixture's S3_FILE_SOURCES gives the bucket to the samples' publisher.
ALGORITHM_BUCKET = "test-algorithms"
ALGORITHM_CODE = b"print('stats')\n"


def s3_file_sources(chain: DevChain) -> str:
    return json.dumps({f"arn:aws:s3:::{ALGORITHM_BUCKET}": [chain.publisher.address]})


def put_algorithm_file() -> dict:
    from chalicelib import aws

    s3 = aws.client("s3")
    s3.create_bucket(Bucket=ALGORITHM_BUCKET)
    s3.put_object(Bucket=ALGORITHM_BUCKET, Key="stats.py", Body=ALGORITHM_CODE)
    return {"type": "s3", "bucket": ALGORITHM_BUCKET, "objectKey": "stats.py"}


def environments_json(chain: DevChain, max_jobs: int = 5) -> str:
    return json.dumps([{
        "id": "ocean-c2d-cpu", "description": "test cpu", "chainIds": [chain.chain_id], "jobQueue": "ocean-c2d-cpu",
        "networkJobQueue": "ocean-c2d-cpu-net", "cpuType": "x", "gpuType": "", "nCPU": 2, "nGPU": 0, "ramGB": 4, "diskGB": 10, "priceMin": 1,
        "maxJobs": max_jobs, "maxJobDuration": 3600, "storageExpiry": 86400,
        "feeToken": {str(chain.chain_id): chain.contracts.OceanToken},
    }])


class StubbedBatch:
    """A real boto3 Batch client behind botocore's Stubber: every call is checked against AWS's
    service model (moto drops ecsProperties, DESIGN §6), and the calls made are counted."""

    def __init__(self) -> None:
        self.client = boto3.client("batch", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
        self.stubber = Stubber(self.client)
        self.stubber.activate()
        self.submitted: list[dict[str, Any]] = []
        self.registered: list[dict[str, Any]] = []
        self.client.meta.events.register("provide-client-params.batch.SubmitJob", self._record)
        self.client.meta.events.register("provide-client-params.batch.RegisterJobDefinition", self._register)

    def _record(self, params: dict[str, Any], **_: Any) -> None:
        self.submitted.append(params)

    def _register(self, params: dict[str, Any], **_: Any) -> None:
        self.registered.append(params)

    def expect_new_definition(self) -> None:
        self.stubber.add_response("describe_job_definitions", {"jobDefinitions": []}, {"jobDefinitionName": ANY, "status": "ACTIVE"})
        self.stubber.add_response("register_job_definition", {
            "jobDefinitionName": "c2d-algo-x", "revision": 1,
            "jobDefinitionArn": "arn:aws:batch:us-east-1:123456789012:job-definition/c2d-algo-x:1"}, ANY_PARAMS)

    def expect_submit(self, batch_job_id: str = "batch-1") -> None:
        self.stubber.add_response("submit_job", {"jobName": "c2d-x", "jobId": batch_job_id,
                                                 "jobArn": f"arn:aws:batch:us-east-1:123456789012:job/{batch_job_id}"}, None)

    def expect_submit_failure(self) -> None:
        self.stubber.add_client_error("submit_job", "ServerException", "Batch is down", 500)

    def expect_terminate(self) -> None:
        self.stubber.add_response("terminate_job", {}, None)


ANY_PARAMS = None


@dataclass
class Published:
    dataset: PublishedAsset
    algorithm: PublishedAsset


def publish_samples(chain: DevChain, encrypt, provider_url: str, allow_raw: bool = False,
                    trusted_publishers: tuple[str, ...] = (), container: Mapping[str, str] = CONTAINER,
                    compute: Mapping[str, Any] | None = None) -> Published:
    """The sample algorithm (in `container`) and a dataset that trusts it (its compute options
    updated with `compute`)."""
    algorithm = publish_asset(
        chain.w3, chain.publisher, chain.contracts, name="stats", asset_type="algorithm",
        files=[put_algorithm_file()],
        provider_url=provider_url, provider_address=chain.provider.address, encrypt=encrypt,
        algorithm={"language": "python", "version": "1", "container": dict(container)},
    )
    from chalicelib.compute.algorithm_rules import container_section_checksum

    dataset = publish_asset(
        chain.w3, chain.publisher, chain.contracts, name="iris", files=[{"type": "url", "url": DATA_URL, "method": "GET"}],
        provider_url=provider_url, provider_address=chain.provider.address, encrypt=encrypt,
        compute={"allowRawAlgorithm": allow_raw, "publisherTrustedAlgorithmPublishers": list(trusted_publishers),
                 "publisherTrustedAlgorithms": [{"did": algorithm.did, "filesChecksum": "",
                                                 "containerSectionChecksum": container_section_checksum(container)}],
                 **(compute or {})},
    )
    for asset in (dataset, algorithm):
        mint_datatokens(chain.w3, chain.publisher, asset.datatoken, chain.consumer.address)
        mint_datatokens(chain.w3, chain.publisher, asset.datatoken, chain.other.address)
    return Published(dataset, algorithm)


def consumer_key(account) -> str:
    return "0x" + bytes(account.key).hex()


def initialize(client, published: Published, consumer: str, valid_until: int | None = None, **dataset_extra) -> dict:
    body = {
        "datasets": [{"documentId": published.dataset.did, "serviceId": published.dataset.serviceId, **dataset_extra}],
        "algorithm": {"documentId": published.algorithm.did, "serviceId": published.algorithm.serviceId},
        "compute": {"env": "ocean-c2d-cpu", "validUntil": valid_until or int(time.time()) + 3600},
        "consumerAddress": consumer,
    }
    response = client.http.post("/api/services/initializeCompute", body=json.dumps(body),
                                headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.body
    return json.loads(response.body)


def order_both(chain: DevChain, published: Published, quote: dict, account=None) -> tuple[str, str]:
    account = account or chain.consumer
    key = consumer_key(account)
    dataset_tx = start_order(chain.w3, key, published.dataset.datatoken, 0, quote["datasets"][0]["providerFee"])
    algorithm_tx = start_order(chain.w3, key, published.algorithm.datatoken, 0, quote["algorithm"]["providerFee"])
    return dataset_tx, algorithm_tx


def start_body(published: Published, account, nonce: int, dataset_tx: str, algorithm_tx: str, **extra) -> dict:
    address = account.address
    return {
        "consumerAddress": address, "nonce": nonce, "environment": "ocean-c2d-cpu",
        "signature": sign(consumer_key(account), address + published.dataset.did + str(nonce)),
        "dataset": {"documentId": published.dataset.did, "serviceId": published.dataset.serviceId, "transferTxId": dataset_tx},
        "algorithm": {"documentId": published.algorithm.did, "serviceId": published.algorithm.serviceId,
                      "transferTxId": algorithm_tx, "algocustomdata": {"threshold": 3}},
        **extra,
    }


def post_start(client, body: dict):
    response = client.http.post("/api/services/compute", body=json.dumps(body), headers={"Content-Type": "application/json"})
    return response.status_code, json.loads(response.body)


@contextmanager
def stubbed_provider(chain: DevChain, monkeypatch: Any, environments: str, *, allow_raw: bool = False,
                     env: Mapping[str, str] | None = None, tests_registry: bool = True,
                     container: Mapping[str, str] = CONTAINER,
                     compute: Mapping[str, Any] | None = None) -> Iterator[tuple["StubbedBatch", Any]]:
    """The provider under test on `chain` and moto: `environments` configured, the samples'
    algorithm allowed to its publisher (S3_FILE_SOURCES), Batch behind the Stubber, images
    resolved by the tests' registry (`tests_registry`; False: as configured), the sample
    dataset and algorithm (in `container`, the dataset's compute options updated with
    `compute`) published and registered; yields (batch, published) and puts every setting back
    afterwards."""
    from chalicelib import services
    from chalicelib.compute import environments as configured
    from chalicelib.compute.dispatch import BatchDispatcher
    from devstack.publish import ecies_encrypt_for

    settings = {"CHAINS": json.dumps({str(chain.chain_id): chain.rpc_url}), "COMPUTE_ENVIRONMENTS": environments,
                "S3_FILE_SOURCES": s3_file_sources(chain), **(env or {})}
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    services.reset()
    configured.environments.cache_clear()
    current = services.settings()
    batch = StubbedBatch()
    dispatcher = BatchDispatcher(batch.client, "runner:1", current.bucket)
    monkeypatch.setattr(services, "dispatcher", lambda: dispatcher)
    if tests_registry:
        digests = registry_digests()
        monkeypatch.setattr(services, "image_digests", lambda: digests)
    published = publish_samples(chain, ecies_encrypt_for(chain.provider_public_key), current.provider_url,
                                allow_raw=allow_raw, container=container, compute=compute)
    for asset in (published.dataset, published.algorithm):
        services.asset_resolver().register(chain.chain_id, asset.nftAddress)
    try:
        yield batch, published
    finally:
        monkeypatch.undo()
        services.reset()
        configured.environments.cache_clear()
        services.settings()
