"""Security of the compute routes: jobs belong to their owner, forged or dead tokens get nowhere,
result names cannot trick a download, and decrypted dataset URLs never leave the manifest.

In process: real orders on anvil, moto, Batch behind botocore's Stubber (the lifecycle suite's
`provider`). The runner's own refusals of private and metadata-service addresses are tested in
tests/runner/test_runner_fetch.py (addresses, ranges, redirects, names resolving to loopback,
decimal and IPv4-mapped forms); what it leaves out is tested at the end of this module.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.parse
import warnings
from typing import Any

import jwt
import pytest

from hostile_faults import AwsFault, aws_fault
from lifecycle_helpers import DATA_URL, consumer_key, initialize, order_both, post_start, start_body
from signing import sign
from test_events import batch_event, runner_event
from test_lifecycle_compute import JOB_QUEUE_ARN, provider, signed_query, started_job  # noqa: F401 (fixture)

JOB_ROUTES = [("GET", "/api/services/compute"), ("PUT", "/api/services/compute"),
              ("DELETE", "/api/services/compute"), ("GET", "/api/services/computeResult")]


def _call(client, method: str, path: str, params: dict[str, Any], headers: dict[str, str] | None = None):
    return client.http.request(method, path + "?" + urllib.parse.urlencode(params), headers=headers or {}, body=b"")


def _job_params(account, path: str, job_id: str, nonce: int, signer=None) -> dict[str, Any]:
    """Signed parameters of a job route for `account` (signed by `signer`'s key if given)."""
    signer = signer or account
    if path.endswith("computeResult"):
        message, params = account.address + job_id + "0", {"index": "0"}
    else:
        message, params = account.address + job_id, {}
    return {"consumerAddress": account.address, "jobId": job_id, "nonce": nonce, **params,
            "signature": sign(consumer_key(signer), message + str(nonce))}


def _quietly(make):
    with warnings.catch_warnings():  # PyJWT warns that the test secret is short for HS512: that is the point
        warnings.simplefilter("ignore")
        return make()


def _forged_tokens(owner: str, other_token: str, revoked: str) -> dict[str, str]:
    secret = os.environ["JWT_SECRET"]
    now = int(time.time())
    claims = {"address": owner, "exp": now + 600, "iat": now, "jti": "f" * 32}
    return {
        "alg none": jwt.encode(claims, None, algorithm="none"),
        "alg none, no signature part": jwt.encode(claims, None, algorithm="none").rstrip("."),
        "wrong secret": jwt.encode(claims, "not-the-provider-secret-but-long-enough", algorithm="HS256"),
        "HS512 with the secret": _quietly(lambda: jwt.encode(claims, secret, algorithm="HS512")),
        "expired": jwt.encode({**claims, "exp": now - 5, "iat": now - 100}, secret, algorithm="HS256"),
        "no jti": jwt.encode({k: v for k, v in claims.items() if k != "jti"}, secret, algorithm="HS256"),
        "another address": other_token,
        "revoked": revoked,
        "garbage": "a.b.c",
    }


def _token_for(client, account) -> str:
    nonce = time.time_ns()
    response = client.http.get("/api/services/createAuthToken?" + urllib.parse.urlencode({
        "address": account.address, "nonce": nonce, "expiration": int(time.time()) + 600,
        "signature": sign(consumer_key(account), account.address + str(nonce))}))
    assert response.status_code == 200, response.body
    return json.loads(response.body)["token"]


def _revoke(client, account, token: str) -> None:
    nonce = time.time_ns()
    response = client.http.delete("/api/services/deleteAuthToken?" + urllib.parse.urlencode({
        "address": account.address, "nonce": nonce, "token": token,
        "signature": sign(consumer_key(account), account.address + str(nonce))}))
    assert response.status_code == 200, response.body


def test_another_address_can_never_read_stop_delete_or_download_a_job(client, provider):
    chain, batch, published = provider
    from chalicelib import services
    from chalicelib.models import JobRecord

    owner, other = chain.consumer, chain.other
    job, _, _ = started_job(client, provider)
    job_id = job["jobId"]
    bucket = services.settings().bucket
    client.lambda_.invoke("runner_stage_events", runner_event(job_id, 70, bucket=bucket))
    client.lambda_.invoke("batch_job_events", batch_event(job_id, "SUCCEEDED", batch_job_id="batch-1", queue=JOB_QUEUE_ARN,
                                                          exits={"configure": 0, "algorithm": 0, "publish": 0}))
    before = JobRecord.get(job_id, consistent_read=True).serialize()
    owner_nonce = services.nonce_store().current(owner.address)
    other_token = _token_for(client, other)
    revoked = _token_for(client, owner)
    _revoke(client, owner, revoked)
    owner_nonce = services.nonce_store().current(owner.address)

    attempts = 0
    for method, path in JOB_ROUTES:
        # the other address, properly signed for itself: the job does not exist for it
        response = _call(client, method, path, _job_params(other, path, job_id, time.time_ns()))
        assert response.status_code == 404, (method, path, response.body)
        # the owner's address, signed with another key
        response = _call(client, method, path, _job_params(owner, path, job_id, time.time_ns(), signer=other))
        assert response.status_code == 400 and b"Invalid signature" in response.body, response.body
        attempts += 2
        # the owner's address with a token that is not a valid token of the owner
        for name, token in _forged_tokens(owner.address, other_token, revoked).items():
            params = {k: v for k, v in _job_params(owner, path, job_id, time.time_ns()).items() if k != "signature"}
            response = _call(client, method, path, params, {"AuthToken": token})
            assert response.status_code == 400, (name, method, path, response.status_code, response.body)
            assert b"Token" in response.body, (name, response.body)
            attempts += 1
    # ... and on compute start, before anything is looked at
    for name, token in _forged_tokens(owner.address, other_token, revoked).items():
        body = start_body(published, owner, time.time_ns(), "0x" + "11" * 32, "0x" + "22" * 32)
        del body["signature"]
        response = client.http.post("/api/services/compute", body=json.dumps(body),
                                    headers={"Content-Type": "application/json", "AuthToken": token})
        assert response.status_code == 400 and b"Token" in response.body, (name, response.body)
        attempts += 1

    # Unsigned status is the reduced view by design (ocean.js signs nothing): no URL, no download.
    for who in (owner, other):
        response = client.http.get(f"/api/services/compute?consumerAddress={who.address}&jobId={job_id}")
        if who is owner:
            reduced = json.loads(response.body)[0]
            assert reduced["resultsUrls"] == [] and reduced["algorithmLogUrl"] is None
        else:
            assert response.status_code == 404
    response = client.http.get(f"/api/services/computeResult?consumerAddress={owner.address}&jobId={job_id}&index=0")
    assert response.status_code == 400 and "Location" not in response.headers

    assert JobRecord.get(job_id, consistent_read=True).serialize() == before, "someone changed the job"
    assert services.nonce_store().current(owner.address) == owner_nonce, "a refused request used the owner's nonce"
    assert attempts == 4 * (2 + 9) + 9
    # the owner still can
    response = _call(client, "GET", "/api/services/computeResult",
                     _job_params(owner, "/api/services/computeResult", job_id, time.time_ns()))
    assert response.status_code == 302


HOSTILE_NAMES = ["../../../etc/passwd", "..\\..\\windows\\win.ini", 'a"; filename="evil.sh', "a\r\nSet-Cookie: x=1",
                 "résumé 名前.csv", ".hidden", "...", "a/b/../../c.txt", "%2e%2e%2fsecret", "x" * 900, " ", "\u202egpj.exe"]
SAFE_DISPOSITION = r'^attachment; filename="[A-Za-z0-9][A-Za-z0-9._-]*"$'


def test_hostile_result_names_download_under_safe_names_and_urls_never_leak(client, provider, caplog):
    """The whole life of a job, including refusals and faults, at DEBUG for every logger (botocore,
    urllib3, web3, moto, ours): the decrypted dataset URL appears in no response, no log record and
    no Batch parameter; it is only in the S3 manifest. And result names cannot shape the download."""
    caplog.set_level(logging.DEBUG)
    chain, batch, published = provider
    from chalicelib import aws, services

    secret_parts = [DATA_URL, urllib.parse.urlsplit(DATA_URL).netloc, "s3cr3t", urllib.parse.quote(DATA_URL, safe="")]
    responses: list[Any] = []

    def seen(response):
        responses.append(response)
        return response

    account = chain.consumer
    quote = initialize(client, published, account.address)
    dataset_tx, algorithm_tx = order_both(chain, published, quote)
    # a start that fails after the manifest was written (undone), then one that succeeds
    batch.expect_new_definition()
    batch.expect_submit_failure()
    assert post_start(client, start_body(published, account, time.time_ns(), dataset_tx, algorithm_tx))[0] == 503
    with aws_fault([aws.client("s3")], "s3.PutObject", AwsFault("SlowDown", 503)):
        assert post_start(client, start_body(published, account, time.time_ns(), dataset_tx, algorithm_tx))[0] == 503
    batch.expect_submit()
    status, started = post_start(client, start_body(published, account, time.time_ns(), dataset_tx, algorithm_tx))
    assert status == 200, started
    responses.append(started)
    job_id = started[0]["jobId"]
    responses.append(post_start(client, start_body(published, account, time.time_ns(), dataset_tx, algorithm_tx)))

    bucket = services.settings().bucket
    from chalicelib.job_key import open_manifest
    from chalicelib.models import JobRecord

    sealed = aws.client("s3").get_object(Bucket=bucket, Key=f"jobs/{job_id}/manifest.json")["Body"].read()
    manifest = json.dumps(open_manifest(JobRecord.get(job_id).runner_key, job_id, sealed))
    assert DATA_URL in manifest, "the test must see the URL where it belongs"
    assert DATA_URL.encode() not in sealed, "sealed with the job's key in S3"

    results = [{"filename": name, "filesize": 1, "type": "output", "key": f"jobs/{job_id}/outputs/{index}"}
               for index, name in enumerate(HOSTILE_NAMES)]
    for event in (batch_event(job_id, "RUNNING", batch_job_id="batch-1", queue=JOB_QUEUE_ARN),
                  runner_event(job_id, 70, results=results, bucket=bucket),
                  batch_event(job_id, "SUCCEEDED", batch_job_id="batch-1", queue=JOB_QUEUE_ARN,
                              exits={"configure": 0, "algorithm": 0, "publish": 0})):
        handler = "batch_job_events" if event["source"] == "aws.batch" else "runner_stage_events"
        responses.append(client.lambda_.invoke(handler, event).payload)

    status_object = json.loads(seen(client.http.get("/api/services/compute" + signed_query(account, job_id))).body)[0]
    assert status_object["status"] == 70 and len(status_object["resultsUrls"]) == len(HOSTILE_NAMES)
    seen(client.http.get(f"/api/services/compute?consumerAddress={account.address}"))
    for url in status_object["resultsUrls"]:
        disposition = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["response-content-disposition"][0]
        assert re.match(SAFE_DISPOSITION, disposition) and ".." not in disposition, disposition
    for index in range(len(HOSTILE_NAMES)):
        nonce = time.time_ns()
        response = seen(client.http.get("/api/services/computeResult?" + urllib.parse.urlencode({
            "consumerAddress": account.address, "jobId": job_id, "index": index, "nonce": nonce,
            "signature": sign(consumer_key(account), account.address + job_id + str(index) + str(nonce))})))
        assert response.status_code == 302
        location = urllib.parse.urlsplit(response.headers["Location"])
        assert location.path.endswith(f"jobs/{job_id}/outputs/{index}")
        disposition = urllib.parse.parse_qs(location.query)["response-content-disposition"][0]
        assert re.match(SAFE_DISPOSITION, disposition) and ".." not in disposition, (HOSTILE_NAMES[index], disposition)

    assert seen(client.http.delete("/api/services/compute" + signed_query(account, job_id))).status_code == 200

    texts = [json.dumps(r, default=str) if not hasattr(r, "body") else r.body.decode(errors="replace")
             + json.dumps(dict(r.headers)) for r in responses]
    records = [record.getMessage() + (record.exc_text or "") for record in caplog.records]
    assert any(record.name.startswith("botocore") for record in caplog.records), "botocore was not logging at DEBUG"
    for part in secret_parts:
        assert not [text for text in texts if part in text], f"{part!r} in a response"
        assert not [record for record in records if part in record], f"{part!r} in a log line"
        assert part not in json.dumps(batch.submitted), f"{part!r} in a Batch parameter"


# -- the runner's network guard: what tests/runner leaves out ------------------------------------

@pytest.mark.parametrize("records", [["93.184.216.34", "169.254.169.254"], ["2606:4700::1", "fd00:ec2::254"],
                                     ["93.184.216.34", "10.0.0.5"]])
def test_a_name_with_one_private_record_is_refused(monkeypatch, tmp_path, records):
    from chalicelib import netsafe

    monkeypatch.setattr(netsafe, "resolve", lambda host, port: list(records))
    with pytest.raises(netsafe.FetchError, match="address not allowed"):
        netsafe.fetch_to_file("http://data.example.com/x", tmp_path / "x", limit=10,
                              policy=netsafe.FetchPolicy(allow_private=False, timeout=1))


def test_dns_rebinding_cannot_redirect_the_connection(monkeypatch, tmp_path):
    """The name is resolved once and the connection goes to the address that was checked, so a
    resolver that answers differently the second time (rebinding) cannot reach the metadata service."""
    import socket

    from chalicelib import netsafe

    answers = iter([["93.184.216.34"], ["169.254.169.254"], ["169.254.169.254"]])
    resolved: list[str] = []
    monkeypatch.setattr(netsafe, "resolve", lambda host, port: resolved.append(host) or next(answers))
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 80))])
    connected: list[tuple[str, int]] = []

    def connect(address, timeout=None, *args, **kwargs):
        connected.append(address)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "create_connection", connect)
    with pytest.raises(netsafe.FetchError):
        netsafe.fetch_to_file("http://data.example.com/x", tmp_path / "x", limit=10,
                              policy=netsafe.FetchPolicy(allow_private=False, timeout=1))
    assert resolved == ["data.example.com"] and connected == [("93.184.216.34", 80)]
