"""One JSON line per request, event and scheduled run, with its route, job, consumer and
outcome, and never a signature, token, key or decrypted URL: requests that carry all of those
(signed starts and status, auth tokens, encrypted files, admin sessions) are driven in process
and every line written is searched for them. Metrics come out as CloudWatch EMF."""
from __future__ import annotations

import json
import time
import urllib.parse

from eth_account import Account

from signing import sign

CONSUMER = Account.from_key("0x" + "66" * 32)
SECRET_URL = "https://secret-host.example/private/data.csv?token=s3cr3t"


def _lines(captured: str) -> list[dict]:
    return [json.loads(line) for line in captured.splitlines() if line.startswith("{")]


def test_every_request_has_one_line_without_secrets(client, capsys, monkeypatch):
    from chalicelib import services

    key = "0x" + bytes(CONSUMER.key).hex()
    capsys.readouterr()
    # encrypt: the body is a URL a publisher encrypts; the answer is its ciphertext
    encrypted = client.http.post("/api/services/encrypt?chainId=8996", body=SECRET_URL.encode(),
                                 headers={"Content-Type": "application/octet-stream"}).body.decode()
    nonce = time.time_ns()
    signature = sign(key, CONSUMER.address + str(nonce))
    token = json.loads(client.http.get("/api/services/createAuthToken?" + urllib.parse.urlencode({
        "address": CONSUMER.address, "nonce": nonce, "signature": signature,
        "expiration": int(time.time()) + 600})).body)["token"]
    nonce += 1
    status_signature = sign(key, CONSUMER.address + str(nonce))
    client.http.get("/api/services/compute?" + urllib.parse.urlencode({
        "consumerAddress": CONSUMER.address, "nonce": nonce, "signature": status_signature}))
    client.http.get("/api/services/compute?" + urllib.parse.urlencode({
        "consumerAddress": CONSUMER.address, "nonce": nonce + 1, "jobId": "job-123"}), headers={"AuthToken": token})
    start_signature = sign(key, CONSUMER.address + "did:op:" + "ab" * 32 + str(nonce + 2))
    client.http.post("/api/services/compute", headers={"Content-Type": "application/json"}, body=json.dumps({
        "consumerAddress": CONSUMER.address, "nonce": nonce + 2, "signature": start_signature,
        "environment": "nope", "dataset": {"documentId": "did:op:" + "ab" * 32, "serviceId": "x", "transferTxId": "0x1",
                                           "files": encrypted},
        "algorithm": {"meta": {"rawcode": SECRET_URL, "container": {"entrypoint": "x", "image": "y", "tag": "z"}}}}))
    client.http.get("/api/services/compute?consumerAddress=not-an-address&signature=" + signature)
    lines = _lines(capsys.readouterr().out)
    requests = [line for line in lines if line.get("message", "").startswith("request ")]
    assert [line["route"] for line in requests] == ["/api/services/encrypt", "/api/services/createAuthToken",
                                                   "/api/services/compute", "/api/services/compute",
                                                   "/api/services/compute", "/api/services/compute"]
    assert all(line["service"] and line["outcome"] and "durationMs" in line and "status" in line for line in requests)
    assert requests[2]["consumer"] == CONSUMER.address and requests[2]["outcome"] == "ok"
    assert requests[3]["jobId"] == "job-123" and requests[3]["status"] == 404 and requests[3]["outcome"] == "client_error"
    assert requests[4]["outcome"] == "client_error" and requests[4]["reason"]
    everything = "\n".join(json.dumps(line) for line in lines)
    provider_key = services.settings().provider_private_key()
    for secret in (signature, status_signature, start_signature, token, key, provider_key, encrypted, "secret-host",
                   "s3cr3t", signature[2:40], token.split(".")[2], key[2:], provider_key[2:]):
        assert secret not in everything, secret
    emf = [line for line in lines if "_aws" in line]
    assert sum(line.get("Requests", [0])[0] for line in emf if "Requests" in line) == 6
    refused = [line for line in emf if "StartsRefused" in line]
    assert refused and refused[0]["environment"] == "unknown"  # a caller's text never becomes a dimension
    assert ["service"] in refused[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"]


def test_event_and_reconciler_lines(client, capsys):
    import app as app_module
    from chalicelib.models import JobRecord

    JobRecord("evjob1", owner=CONSUMER.address, document_id="did:op:x", date_created=int(time.time()) - 30, status=10,
              status_text="Job started", environment="ocean-c2d-cpu", chain_id=8996, batch_job_id="batch-1",
              active_environment="ocean-c2d-cpu", updated_at=int(time.time())).save()
    capsys.readouterr()
    event = {"version": "0", "id": "e1", "source": "aws.batch", "detail-type": "Batch Job State Change",
             "account": "123456789012", "time": "2026-01-01T00:00:00Z", "region": "us-east-1", "resources": [],
             "detail": {"jobId": "batch-1", "jobName": "c2d-evjob1", "jobQueue": "arn:aws:batch:us-east-1:1:job-queue/ocean-c2d-cpu",
                        "status": "RUNNING", "attempts": [], "startedAt": int(time.time() * 1000),
                        "tags": {"c2d:jobId": "evjob1"}}}
    client.lambda_.invoke("batch_job_events", event)
    lines = _lines(capsys.readouterr().out)
    (line,) = [entry for entry in lines if entry.get("message") == "event batch_job_events"]
    assert line["jobId"] == "evjob1" and line["action"] == "updated" and line["jobStatus"] == 40
    assert any("QueueWaitSeconds" in entry and entry["environment"] == "ocean-c2d-cpu" for entry in lines), lines
    assert app_module  # the handlers of app.py wrote them
