"""Issue 18, point 2: if an algorithm reaches root anyway, the blast radius is its own job.

ECS hands every job's task the same role, whose sessions carry nothing that tells one job from
another, so a job's credentials are taken here as any job's would be: the template's own
BatchJobRole policy, assumed through moto's STS, with moto enforcing IAM on S3. Then job A,
with its credentials and its own key, tries everything against job B, which the API started
(real orders on anvil) and whose real publish stage ran: B's manifest reads as ciphertext that
A's key cannot open, it cannot be replaced, B's results can be neither read nor deleted, and what
A writes at B's keys is not what B's consumer downloads; an event for B signed with A's key
changes nothing."""
from __future__ import annotations

import hashlib
import io
import json
import time
import urllib.parse
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.exceptions import ClientError

from lifecycle_helpers import DATA_URL, consumer_key
from signing import sign
from test_events import batch_event, envelope, runner_event
from test_lifecycle_compute import JOB_QUEUE_ARN, deliver, provider, signed_query, started_job  # noqa: F401

ACCOUNT = "123456789012"
TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "resources.yaml"


def load_cfn(path: Path) -> dict[str, Any]:
    from cfnlint.api import decode_str

    template, matches = decode_str(path.read_text())
    assert not matches
    return json.loads(json.dumps(template))


def job_role_policy(bucket: str) -> dict[str, Any]:
    """The BatchJobRole's runner policy from infra/resources.yaml, its ${...} filled in (the
    optional dataset statement left out: no S3 data sources here)."""
    role = load_cfn(TEMPLATE)["Resources"]["BatchJobRole"]["Properties"]
    (policy,) = role["Policies"]
    statements = [s for s in policy["PolicyDocument"]["Statement"] if "Fn::If" not in s]

    def fill(value: Any) -> Any:
        if isinstance(value, dict) and "Fn::Sub" in value:
            return (value["Fn::Sub"].replace("${ResultsBucket.Arn}", f"arn:aws:s3:::{bucket}")
                    .replace("${AWS::Partition}", "aws").replace("${AWS::Region}", "us-east-1")
                    .replace("${AWS::AccountId}", ACCOUNT))
        if isinstance(value, list):
            return [fill(item) for item in value]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    return {"Version": "2012-10-17", "Statement": fill(statements)}


def job_credentials(bucket: str) -> dict[str, str]:
    """A job's task role session: the template's policy on a role assumed through STS."""
    iam, sts = boto3.client("iam", region_name="us-east-1"), boto3.client("sts", region_name="us-east-1")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}}]}
    try:
        iam.create_role(RoleName="c2d-job", AssumeRolePolicyDocument=json.dumps(trust))
    except ClientError:
        pass
    iam.put_role_policy(RoleName="c2d-job", PolicyName="runner", PolicyDocument=json.dumps(job_role_policy(bucket)))
    session = sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/c2d-job", RoleSessionName="task-a")["Credentials"]
    return {"aws_access_key_id": session["AccessKeyId"], "aws_secret_access_key": session["SecretAccessKey"],
            "aws_session_token": session["SessionToken"]}


def publish_for_real(job_id: str, key: str, bucket: str, folder: Path, files: dict[str, bytes]) -> list[dict]:
    """Job B's publish stage, the real runner code, with B's key: the events it sends."""
    from runner import publish
    from runner.events import STDOUT_PREFIX, StdoutEmitter
    from runner.settings import Settings

    data = folder / "data"
    for name, content in files.items():
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_bytes(content)
    settings = Settings.from_env({"JOB_ID": job_id, "RESULTS_BUCKET": bucket, "DATA_DIR": str(data),
                                  "RUNNER_EVENTS": "stdout", "C2D_REGION": "us-east-1", "C2D_JOB_KEY": key},
                                 need_manifest=False)
    out = io.StringIO()
    assert publish.run(settings, StdoutEmitter(job_id, out, key=key)) == 0
    return [envelope("ocean.c2d.runner", "Compute Job Stage Change", json.loads(line.removeprefix(STDOUT_PREFIX)))
            for line in out.getvalue().splitlines()]


def denied(call, *args, **kwargs) -> bool:
    from moto.core import enable_iam_authentication

    with enable_iam_authentication():
        try:
            call(*args, **kwargs)
        except ClientError as error:
            return error.response["Error"]["Code"] == "AccessDenied"
    return False


def allowed(call, *args, **kwargs) -> Any:
    from moto.core import enable_iam_authentication

    with enable_iam_authentication():
        return call(*args, **kwargs)


def test_a_jobs_credentials_and_key_reach_nothing_of_another_job(client, provider, tmp_path):
    chain, batch, published = provider
    from chalicelib import aws, services
    from chalicelib.job_key import SealError, new_job_key, open_manifest
    from chalicelib.models import JobRecord

    bucket = services.settings().bucket
    job, _, _ = started_job(client, provider)
    job_b = job["jobId"]
    key_b = JobRecord.get(job_b).runner_key
    overrides = {c["name"]: {e["name"]: e["value"] for e in c["environment"]}
                 for c in batch.submitted[0]["ecsPropertiesOverride"]["taskProperties"][0]["containers"]}
    manifest_version = urllib.parse.parse_qs(urllib.parse.urlsplit(overrides["configure"]["MANIFEST_URI"]).query)["versionId"][0]
    manifest_key = f"jobs/{job_b}/manifest.json"

    # job B runs and publishes, for real, with its key
    deliver(client, batch_event(job_b, "RUNNING", batch_job_id="batch-1", queue=JOB_QUEUE_ARN))
    for event in publish_for_real(job_b, key_b, bucket, tmp_path / "b", {"outputs/result.csv": b"answer,42\n",
                                                                         "logs/algorithm.log": b"b's log\n"}):
        assert deliver(client, event)["action"] in ("updated", "attached", "unchanged"), event
    deliver(client, batch_event(job_b, "SUCCEEDED", batch_job_id="batch-1", queue=JOB_QUEUE_ARN,
                                exits={"configure": 0, "algorithm": 0, "publish": 0}))
    record = JobRecord.get(job_b, consistent_read=True)
    assert record.status == 70
    output = next(r for r in record.results if r["type"] == "output")
    assert output["versionId"] and output["sha256"] == hashlib.sha256(b"answer,42\n").hexdigest()

    # job A: its task role's credentials (any job's are the same) and its own key
    key_a = new_job_key()
    s3_a = boto3.client("s3", region_name="us-east-1", **job_credentials(bucket))
    sealed = allowed(s3_a.get_object, Bucket=bucket, Key=manifest_key, VersionId=manifest_version)["Body"].read()
    assert DATA_URL.encode() not in sealed and b"s3cr3t" not in sealed
    with pytest.raises(SealError):
        open_manifest(key_a, job_b, sealed)  # only ciphertext for another job's key
    assert open_manifest(key_b, job_b, sealed)["inputs"][0]["files"][0]["url"] == DATA_URL  # B's own opens it
    assert denied(s3_a.get_object, Bucket=bucket, Key=manifest_key)  # only a pinned version, as configure reads it
    assert denied(s3_a.put_object, Bucket=bucket, Key=manifest_key, Body=b"{}")  # no manifest replaced
    assert denied(s3_a.get_object, Bucket=bucket, Key=output["key"])  # no result read
    assert denied(s3_a.get_object, Bucket=bucket, Key=output["key"], VersionId=output["versionId"])
    assert denied(s3_a.delete_object, Bucket=bucket, Key=output["key"])  # nor deleted
    assert denied(s3_a.delete_object, Bucket=bucket, Key=output["key"], VersionId=output["versionId"])
    assert denied(s3_a.list_object_versions, Bucket=bucket, Prefix=f"jobs/{job_b}/")
    # what IAM cannot refuse (writes under jobs/, events as the runner) changes nothing of B
    allowed(s3_a.put_object, Bucket=bucket, Key=output["key"], Body=b"forged by job A")
    log_entry = next(r for r in record.results if r["type"] == "algorithmLog")
    allowed(s3_a.put_object, Bucket=bucket, Key=log_entry["key"], Body=b"forged log")
    for forged in (runner_event(job_b, 62, reason="forged", key=key_a),
                   runner_event(job_b, 70, key=key_a, results=[{**output, "versionId": "forged"}])):
        assert deliver(client, forged)["action"] == "ignored"
    assert JobRecord.get(job_b, consistent_read=True).results == record.results

    # B's consumer downloads exactly what B's publish wrote
    consumer = chain.consumer
    nonce = time.time_ns()
    response = client.http.get("/api/services/computeResult?" + urllib.parse.urlencode({
        "consumerAddress": consumer.address, "jobId": job_b, "index": 0, "nonce": nonce,
        "signature": sign(consumer_key(consumer), consumer.address + job_b + "0" + str(nonce))}))
    assert response.status_code == 302
    downloaded = requests.get(response.headers["Location"], timeout=10).content
    assert downloaded == b"answer,42\n" and hashlib.sha256(downloaded).hexdigest() == output["sha256"]
    status = json.loads(client.http.get("/api/services/compute" + signed_query(consumer, job_b)).body)[0]
    assert requests.get(status["algorithmLogUrl"], timeout=10).content == b"b's log\n"
    latest = aws.client("s3").get_object(Bucket=bucket, Key=output["key"])["Body"].read()
    assert latest == b"forged by job A"  # the forgery exists, as the latest version nobody serves
