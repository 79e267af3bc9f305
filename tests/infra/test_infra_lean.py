"""The package ships only what runs (infra.lean): botocore keeps the models of exactly the
services the code builds clients for, endpoints resolve as with the whole botocore, and what the
rules name (other services' data, test suites, C sources, aiohttp's speedups...) is gone."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from infra_helpers import ROOT

from devstack.lambda_package import base_python, unpack
from infra import lean
from infra.bytecode import MARKER

pytestmark = pytest.mark.timeout(300)


def _services_in(names: list[str]) -> set[str]:
    return {name.split("/")[2] for name in names if name.startswith("botocore/data/") and name.count("/") >= 4}


def test_every_client_the_code_builds_is_of_a_kept_service():
    """A new `aws.client("sqs")` (or boto3/botocore client, or resource) in app.py or chalicelib
    fails here until "sqs" joins AWS_SERVICES, whose models the package keeps."""
    calls = lean.client_calls(ROOT)
    assert calls, "the scan found no client at all"
    unnamed = [f"{call.path}:{call.line}" for call in calls if call.service is None and call.path != "chalicelib/aws.py"]
    assert not unnamed, f"clients built with a service name that is not a literal (the scan cannot check them): {unnamed}"
    outside = sorted({f"{call.path}:{call.line} {call.service}" for call in calls if call.service
                      and call.service not in lean.AWS_SERVICES
                      and call.service not in lean.CHECKOUT_ONLY_CLIENTS.get(call.path, set())})
    assert not outside, f"clients of services whose models the package leaves out (add them to AWS_SERVICES): {outside}"
    built = {call.service for call in calls if call.service and call.service in lean.AWS_SERVICES}
    assert built == set(lean.AWS_SERVICES), f"AWS_SERVICES keeps models no code uses: {set(lean.AWS_SERVICES) - built}"


def test_the_scan_sees_clients_of_every_form(tmp_path):
    (tmp_path / "chalicelib").mkdir()
    (tmp_path / "app.py").write_text('import boto3\nboto3.client("sqs")\n')
    (tmp_path / "chalicelib" / "x.py").write_text(
        'from pynamodb.models import Model\nclass T(Model):\n    pass\n'
        'def f(session, aws, name):\n    session.create_client(service_name="sts")\n    aws.client(name)\n'
        '    boto3.resource("sns")\n')
    found = {(call.path, call.service) for call in lean.client_calls(tmp_path)}
    assert found == {("app.py", "sqs"), ("chalicelib/x.py", "dynamodb"), ("chalicelib/x.py", "sts"),
                     ("chalicelib/x.py", None), ("chalicelib/x.py", "sns")}


def test_botocore_keeps_exactly_the_kept_services_newest_models(packaged):
    names = packaged.names()
    assert _services_in(names) == set(lean.AWS_SERVICES)
    for service in lean.AWS_SERVICES:
        files = [name for name in names if name.startswith(f"botocore/data/{service}/")]
        assert len({name.split("/")[3] for name in files}) == 1, files  # one API version
        assert any(name.endswith("/service-2.json.gz") for name in files), service
        assert any(name.endswith("/endpoint-rule-set-1.json.gz") for name in files), service
        assert not any(name.endswith("/examples-1.json") for name in files), service
    for shared in lean.BOTOCORE_SHARED:
        assert f"botocore/data/{shared}" in names
    assert {name.split("/")[2] for name in names if name.startswith("boto3/data/") and name.count("/") >= 3} \
        <= set(lean.AWS_SERVICES)


def test_what_never_runs_is_not_shipped(packaged):
    names = packaged.names()
    assert not [name for name in names if name.startswith("Crypto/SelfTest/") or "/tests/" in name]
    assert not [name for name in names if name.endswith(lean.SOURCES_AND_STUBS)]
    assert not [name for name in names if lean.UNUSED_SPEEDUPS.match(name)]
    assert not [name for name in names if name.startswith(lean.TEST_ONLY) or "/_testcapi." in name]
    assert not set(lean.UNUSED_DATA) & set(names)
    # ...and what the Python falls back to ships, compiled: the package imports them (serving test)
    for fallback in ("aiohttp/_websocket/reader_py.py", "multidict/_multidict_py.py", "yarl/_quoting_py.py"):
        assert fallback in names
    with zipfile.ZipFile(packaged.zip_path) as archive:
        summary = json.loads(archive.read(MARKER))
        endpoints = json.loads(archive.read(lean.ENDPOINTS))
    assert sum(rule["zipped_bytes"] for rule in summary["removed"].values()) > 15_000_000
    services = {name for partition in endpoints["partitions"] for name in partition["services"]}
    assert services == {"batch", "dynamodb", "logs", "s3", "secretsmanager", "ssm"}


ENDPOINTS_PROBE = r"""
import json, sys
if len(sys.argv) > 2:
    sys.path.insert(0, sys.argv[2])
import botocore.session
session = botocore.session.get_session()
found = {}
for service in json.loads(sys.argv[1]):
    for region in ("us-east-1", "eu-west-1", "ap-southeast-2", "cn-north-1", "us-gov-west-1"):
        client = session.create_client(service, region_name=region, aws_access_key_id="x", aws_secret_access_key="x")
        signer = client._request_signer
        found[f"{service} {region}"] = [client.meta.endpoint_url, client.meta.partition, signer.signing_name,
                                        signer.region_name, client.meta.config.signature_version]
print(json.dumps({"botocore": botocore.__file__, "found": found}))
"""


def test_clients_resolve_endpoints_as_with_the_whole_botocore(packaged, tmp_path):
    """endpoints.json slimmed to the kept services: each of their clients resolves the same
    endpoint, partition, signing name and region as the venv's botocore (the same locked
    version, with every file) in five regions of four partitions."""
    folder = unpack(packaged.zip_path, tmp_path / "task")
    services = json.dumps(sorted(lean.AWS_SERVICES))
    env = {"PATH": "/usr/bin:/bin", "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}
    answers = []
    for command in ([sys.executable, "-c", ENDPOINTS_PROBE, services],
                    [base_python(), "-I", "-S", "-B", "-c", ENDPOINTS_PROBE, services, str(folder)]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        answers.append(json.loads(done.stdout))
    whole, lean_one = answers
    assert Path(lean_one["botocore"]).is_relative_to(folder) and not Path(whole["botocore"]).is_relative_to(folder)
    assert lean_one["found"] == whole["found"]
