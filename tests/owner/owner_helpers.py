"""Jobs of the sample provider driven to their end as a real one ends: outputs and logs put in
the (versioned) results bucket as publish puts them, their versions and sha256 reported in the
runner's signed events, Batch's final state change; and the signed calls of the owner's routes."""
from __future__ import annotations

import hashlib
import json
import time
import urllib.parse
from typing import Any

from lifecycle_helpers import consumer_key
from signing import sign
from test_events import T0, batch_event, runner_event

JOB_QUEUE_ARN = "arn:aws:batch:us-east-1:123456789012:job-queue/ocean-c2d-cpu"
LOGS = {"configure.log": ("configurationLog", b"configure: inputs in place\n"),
        "algorithm.log": ("algorithmLog", b"stats: 3 rows\n"),
        "publish.log": ("publishLog", b"publish: 2 outputs\n")}


def deliver(client, event: dict) -> Any:
    name = "batch_job_events" if event["source"] == "aws.batch" else "runner_stage_events"
    return client.lambda_.invoke(name, event).payload


def put_results(job_id: str, outputs: dict[str, bytes]) -> list[dict[str, Any]]:
    """Put the outputs and logs where publish puts them; the results list it reports."""
    from chalicelib import aws, services

    s3, bucket, results = aws.client("s3"), services.settings().bucket, []
    items = [(name, "output", body, f"jobs/{job_id}/outputs/{name}") for name, body in outputs.items()]
    items += [(name, kind, body, f"jobs/{job_id}/logs/{name}") for name, (kind, body) in LOGS.items()]
    for name, kind, body, key in items:
        written = s3.put_object(Bucket=bucket, Key=key, Body=body)
        results.append({"filename": name, "filesize": len(body), "type": kind, "key": key,
                        "sha256": hashlib.sha256(body).hexdigest(), "versionId": written["VersionId"]})
    return results


def finish(client, job_id: str, outputs: dict[str, bytes], *, succeeded: bool = True, batch_job_id: str = "batch-1") -> None:
    """configure's 30, publish's 60 (with the algorithm container's times) and 70 (results),
    then Batch's SUCCEEDED (or the algorithm's exit 1)."""
    results = put_results(job_id, outputs)
    for event in (batch_event(job_id, "STARTING", batch_job_id=batch_job_id, queue=JOB_QUEUE_ARN),
                  runner_event(job_id, 30),
                  runner_event(job_id, 60, algorithm={"startedAt": T0 + 5, "finishedAt": T0 + 125, "exitCode": 0}),
                  runner_event(job_id, 70, results=results)):
        deliver(client, event)
    exits = {"configure": 0, "algorithm": 0 if succeeded else 1, "publish": 0}
    deliver(client, batch_event(job_id, "SUCCEEDED" if succeeded else "FAILED", batch_job_id=batch_job_id,
                                queue=JOB_QUEUE_ARN, exits=exits))


def signed(account, *fields: str, nonce: int | None = None, **params: Any) -> dict[str, Any]:
    """A v4 signed call: `fields` (in the route's order) then the nonce."""
    nonce = nonce or time.time_ns()
    return {**params, "consumerAddress": account.address, "nonce": nonce,
            "signature": sign(consumer_key(account), account.address + "".join(fields) + str(nonce))}


def node_signed(account, command: str, **params: Any) -> dict[str, Any]:
    nonce = time.time_ns()
    return {**params, "consumerAddress": account.address, "nonce": nonce,
            "signature": sign(consumer_key(account), account.address + str(nonce) + command)}


def get(client, path: str, params: dict[str, Any]):
    response = client.http.get(path + "?" + urllib.parse.urlencode(params))
    body = json.loads(response.body) if response.body and response.status_code != 302 else response.body
    return response.status_code, body, response.headers


def receipt_of(client, account, job_id: str):
    return get(client, "/api/services/computeReceipt", signed(account, job_id, jobId=job_id))
