"""AWS calls per started job and per status event (issue budgets: 1 SubmitJob, no
RegisterJobDefinition for an image seen before, at most 5 DynamoDB writes per start, 1
conditional write per event). Real orders on anvil, moto for DynamoDB and S3, Batch through
botocore's Stubber (moto drops multi-container job definitions)."""
from __future__ import annotations

import collections
import contextlib
import http.server
import json
import os
import threading
from typing import Any, Iterator

DYNAMODB_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"}
JOBS = 3


@contextlib.contextmanager
def counting() -> Iterator[collections.Counter]:
    """Count every botocore API call (boto3 and PynamoDB clients alike) by service and operation."""
    from botocore.client import BaseClient

    counts: collections.Counter = collections.Counter()
    original = BaseClient._make_api_call

    def counted(self: Any, operation: str, params: Any) -> Any:
        counts[(self.meta.service_model.service_name, operation)] += 1
        return original(self, operation, params)

    BaseClient._make_api_call = counted
    try:
        yield counts
    finally:
        BaseClient._make_api_call = original


def summarize(counts: collections.Counter) -> dict[str, Any]:
    dynamodb_writes = sum(n for (service, op), n in counts.items() if service == "dynamodb" and op in DYNAMODB_WRITES)
    return {"dynamodbWrites": dynamodb_writes,
            "calls": {f"{service}:{op}": n for (service, op), n in sorted(counts.items())}}


def _static_server(folder: str) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=folder, **k)  # noqa: E731
    http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def measure() -> dict[str, Any]:
    for name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL")]:
        del os.environ[name]
    from bench.consumer import provider_environment
    from devstack.devchain import start_devchain
    from devstack.stack import DEV_PROVIDER_KEY

    chain = start_devchain(provider_key=DEV_PROVIDER_KEY)
    os.environ.update(provider_environment(chain, "bench"))
    from moto import mock_aws

    try:
        with mock_aws():
            return _measure_with(chain)
    finally:
        chain.stop()


def _measure_with(chain: Any) -> dict[str, Any]:
    """With the dispatcher accessor replaced for the run only (later benchmarks reset services)."""
    import app as app_module
    from bench.consumer import StubbedBatch, provider_on

    batch = StubbedBatch()
    with provider_on(batch.client) as services:
        return _run_jobs(chain, app_module, services, batch)


def _run_jobs(chain: Any, app_module: Any, services: Any, batch: Any) -> dict[str, Any]:
    from chalice.test import Client

    from bench.consumer import order_and_start_body
    from chalicelib.compute.event_signals import batch_state_event
    from devstack.publish import ecies_encrypt_for
    from devstack.samples import SAMPLE_DIR, publish_samples
    server, files_url = _static_server(str(SAMPLE_DIR))
    samples = publish_samples(chain, ecies_encrypt_for(chain.provider_public_key), services.settings().provider_url, files_url)
    for asset in (samples.dataset, samples.algorithm):
        services.asset_resolver().register(chain.chain_id, asset.nftAddress)
    starts, events = [], {}
    with Client(app_module.app, stage_name="local") as client:
        for number in range(JOBS):
            body = order_and_start_body(client, chain, samples)
            batch.expect(first=number == 0)
            with counting() as counts:
                response = client.http.post("/api/services/compute", body=json.dumps(body),
                                            headers={"Content-Type": "application/json"})
            assert response.status_code == 200, response.body
            starts.append(summarize(counts))
            job_id = json.loads(response.body)[0]["jobId"]
        handler = services.job_events()
        for status in ("RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED"):
            exits = {"configure": 0, "algorithm": 0, "publish": 0} if status == "SUCCEEDED" else None
            with counting() as counts:
                handler.handle(batch_state_event(job_id, "batch-job", "ocean-c2d-cpu", status, exit_codes=exits))
            events[f"batch {status}"] = summarize(counts)
        with counting() as counts:
            handler.handle(batch_state_event(job_id, "batch-job", "ocean-c2d-cpu", "RUNNING"))
        events["duplicate after the end"] = summarize(counts)
    server.shutdown()
    return {"starts": starts, "events": events}


def run() -> tuple[str, float, str, float]:
    result = measure()
    print(json.dumps(result, indent=2))
    worst = max(start["dynamodbWrites"] for start in result["starts"])
    later = result["starts"][1:]
    assert all(s["calls"].get("batch:SubmitJob") == 1 for s in result["starts"]), "one SubmitJob per job"
    assert all("batch:RegisterJobDefinition" not in s["calls"] and "batch:DescribeJobDefinitions" not in s["calls"]
               for s in later), "no job definition call for an image seen before"
    assert all(e["dynamodbWrites"] <= 1 for e in result["events"].values()), "one conditional write per event"
    return ("DynamoDB writes per started job (worst of %d)" % JOBS, float(worst), "writes", 5)


if __name__ == "__main__":
    print(run())
