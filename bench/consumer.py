"""A consumer's side for benchmarks: quote, order on chain, signed start body; Batch stubbed."""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from typing import Any, Iterator

import boto3
from botocore.stub import ANY, Stubber
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak

from devstack.orders import start_order


def provider_environment(chain: Any, prefix: str) -> dict[str, str]:
    """The settings of a provider on the dev chain, for in-process benchmarks (moto, anvil)."""
    from devstack.stack import DEV_PROVIDER_KEY, local_environments

    return {
        "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1", "RESULTS_BUCKET": "bench-results", "RESOURCE_PREFIX": prefix,
        "CHAINS": json.dumps({str(chain.chain_id): chain.rpc_url}), "PROVIDER_PRIVATE_KEY": DEV_PROVIDER_KEY,
        "JWT_SECRET": "bench-jwt-secret-of-sufficient-length-000", "ALLOW_PRIVATE_NETWORKS": "1",
        "COMPUTE_ENVIRONMENTS": local_environments(chain),
    }


@contextmanager
def provider_on(batch_client: Any) -> Iterator[Any]:
    """The provider's services on fresh tables and bucket (moto), its Batch calls going to
    `batch_client`, for the run only (later benchmarks reset services); yields `services`."""
    from chalicelib import services
    from chalicelib.bootstrap import bootstrap
    from chalicelib.compute.dispatch import BatchDispatcher

    services.reset()
    bootstrap(services.settings(), with_bucket=True)
    dispatcher = BatchDispatcher(batch_client, "runner:1", services.settings().bucket)
    original = services.dispatcher
    services.dispatcher = lambda: dispatcher  # type: ignore[assignment]
    try:
        yield services
    finally:
        services.dispatcher = original  # type: ignore[assignment]
        services.reset()


class StubbedBatch:
    """A real boto3 Batch client behind Stubber: parameters are checked against AWS's model."""

    def __init__(self, client: Any = None) -> None:
        self.client = client or boto3.client("batch", region_name="us-east-1", aws_access_key_id="x",
                                             aws_secret_access_key="x")
        self.stubber = Stubber(self.client)
        self.stubber.activate()

    def expect(self, first: bool) -> None:
        if first:
            self.stubber.add_response("describe_job_definitions", {"jobDefinitions": []},
                                      {"jobDefinitionName": ANY, "status": "ACTIVE"})
            self.stubber.add_response("register_job_definition", {
                "jobDefinitionName": "c2d-algo", "revision": 1,
                "jobDefinitionArn": "arn:aws:batch:us-east-1:123456789012:job-definition/c2d-algo:1"})
        self.stubber.add_response("submit_job", {"jobName": "c2d", "jobId": "batch-job",
                                                 "jobArn": "arn:aws:batch:us-east-1:123456789012:job/batch-job"})


def order_and_start_body(client: Any, chain: Any, samples: Any) -> dict[str, Any]:
    consumer = chain.consumer
    key = "0x" + bytes(consumer.key).hex()
    dataset, algorithm = samples.dataset, samples.algorithm
    quote = json.loads(client.http.post("/api/services/initializeCompute", headers={"Content-Type": "application/json"},
                                        body=json.dumps({
        "datasets": [{"documentId": dataset.did, "serviceId": dataset.serviceId}],
        "algorithm": {"documentId": algorithm.did, "serviceId": algorithm.serviceId},
        "compute": {"env": "ocean-c2d-cpu", "validUntil": int(time.time()) + 900},
        "consumerAddress": consumer.address})).body)
    dataset_tx = start_order(chain.w3, key, dataset.datatoken, 0, quote["datasets"][0]["providerFee"])
    algorithm_tx = start_order(chain.w3, key, algorithm.datatoken, 0, quote["algorithm"]["providerFee"])
    nonce = time.time_ns()
    message = consumer.address + dataset.did + str(nonce)
    signature = Account.sign_message(encode_defunct(primitive=keccak(text=message)), consumer.key).signature.to_0x_hex()
    return {"consumerAddress": consumer.address, "nonce": nonce, "signature": signature, "environment": "ocean-c2d-cpu",
            "dataset": {"documentId": dataset.did, "serviceId": dataset.serviceId, "transferTxId": dataset_tx},
            "algorithm": {"documentId": algorithm.did, "serviceId": algorithm.serviceId, "transferTxId": algorithm_tx}}
