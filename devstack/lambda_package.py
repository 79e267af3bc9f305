"""A built deployment package served the way Lambda serves it, against the local stack's backends.

The zip is unpacked into a folder of its own and imported by the base interpreter (not the
venv: `-I -S -B`, so neither the venv's site-packages nor the user's are on the path, and no
bytecode is written, /var/task being read-only), as Lambda's runtime imports `app`. Requests are
API Gateway proxy events handed to `app.app(event, context)`, and the other functions get the
events EventBridge and `aws lambda invoke` give them. AWS is a moto server (reached through
AWS_ENDPOINT_URL), the chain anvil with the Ocean contracts and the samples published, as in
`make run`. The package test (tests/infra) and `make bench` use it.
"""
from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from devstack.processes import ProcessGroup, free_port, wait_for_http
from devstack.samples import SAMPLE_DIR, Samples
from devstack.stack import DEV_PROVIDER_KEY, local_environments

JOB_FINISHED = "f" * 32
JOB_RUNNING = "e" * 32
BATCH_JOB = "batch-" + "e" * 26


def unpack(package: Path, folder: Path) -> Path:
    """The zip's files in `folder` (a new, empty one), as Lambda puts them in /var/task."""
    folder.mkdir(parents=True)
    with zipfile.ZipFile(package) as archive:
        archive.extractall(folder)
    return folder


def base_python() -> str:
    """The interpreter the venv was made from: the one Lambda's runtime stands for."""
    python = getattr(sys, "_base_executable", None) or sys.executable
    if Path(sys.prefix) in Path(python).resolve().parents and sys.prefix != sys.base_prefix:
        raise RuntimeError(f"{python} is the venv's interpreter")
    return python


def proxy_event(method: str, path: str, query: Mapping[str, str] | None = None, body: bytes | str | None = None,
                headers: Mapping[str, str] | None = None, resource: str | None = None,
                path_parameters: Mapping[str, str] | None = None) -> dict[str, Any]:
    """An API Gateway REST proxy event, as the deployed API hands a request to the function;
    `resource` is the route's template when it has path parameters (`.../ddo/{did}`)."""
    headers = {"Host": "api.example.invalid", **(headers or {})}
    binary = isinstance(body, bytes)
    return {
        "resource": resource or path, "path": path, "httpMethod": method, "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": dict(query) if query else None,
        "multiValueQueryStringParameters": {name: [value] for name, value in query.items()} if query else None,
        "pathParameters": dict(path_parameters) if path_parameters else None, "stageVariables": None,
        "requestContext": {"resourcePath": resource or path, "httpMethod": method, "path": "/api" + path, "stage": "api",
                           "requestId": str(uuid.uuid4()), "accountId": "123456789012",
                           "identity": {"sourceIp": "127.0.0.1"}},
        "body": base64.b64encode(body).decode() if binary else body, "isBase64Encoded": binary,
    }


def bridge_event(source: str, detail_type: str, detail: Mapping[str, Any]) -> dict[str, Any]:
    """An EventBridge event as a rule delivers it."""
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": detail_type, "source": source,
            "account": "123456789012", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "region": "us-east-1", "resources": [], "detail": dict(detail)}


# What runs in the package's process: `import app` (timed), then each step in order, timed.
PROBE = r"""
import json, sys, time
started = time.perf_counter()
sys.path.insert(0, sys.argv[1])
import app
imported = time.perf_counter()
plan = json.loads(open(sys.argv[2]).read())


class Context:
    function_name = "ocean-c2d-provider"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:ocean-c2d-provider"
    aws_request_id = log_group_name = log_stream_name = "package-probe"

    def __init__(self):
        self._end = time.monotonic() + 29

    def get_remaining_time_in_millis(self):
        return int((self._end - time.monotonic()) * 1000)


def run(step):
    kind = step["kind"]
    if kind == "http":
        answer = app.app(step["event"], Context())
        return {"status": answer["statusCode"], "body": answer.get("body"), "headers": answer.get("headers")}
    if kind == "function":
        return {"result": getattr(app, step["name"])(step["event"], Context())}
    if kind == "clients":
        from chalicelib import aws
        return {"clients": {name: aws.client(name).meta.service_model.service_name for name in step["services"]}}
    if kind == "stub":  # botocore's Stubber on the provider's own client (moto cannot run multi-container Batch jobs)
        from botocore.stub import Stubber
        from chalicelib import aws
        stubber = Stubber(aws.client(step["service"]))
        for operation, response in step["responses"]:
            stubber.add_response(operation, response)
        stubber.activate()
        return {}
    raise ValueError(kind)


results = []
for step in plan:
    began = time.perf_counter()
    try:
        outcome = run(step)
    except Exception as error:
        outcome = {"error": f"{type(error).__name__}: {error}"}
    outcome.update(label=step["label"], ms=(time.perf_counter() - began) * 1000,
                   chain_loaded=sorted(name for name in ("web3", "eth_account") if name in sys.modules))
    results.append(outcome)
files = sorted({getattr(module, "__file__", None) or "" for module in list(sys.modules.values())} - {""})
print(json.dumps({"import_ms": (imported - started) * 1000, "steps": results, "modules": sorted(sys.modules),
                  "files": files, "path": sys.path, "executable": sys.executable}))
"""


@dataclass
class Backends:
    """The local stack's backends for a package: a moto server, anvil, the published samples."""

    env: dict[str, str]
    chain: Any
    samples: Samples
    files_url: str
    consumer_key: str = field(repr=False, default="")

    def serve(self, folder: Path, steps: list[dict[str, Any]], timeout: float = 300) -> dict[str, Any]:
        """Run `steps` in a fresh process of the base interpreter with only `folder` (the unpacked
        package) and the standard library on its path; what each step answered."""
        with tempfile.NamedTemporaryFile("w", suffix=".json") as plan:
            plan.write(json.dumps(steps))
            plan.flush()
            done = subprocess.run([base_python(), "-I", "-S", "-B", "-c", PROBE, str(folder), plan.name],
                                  capture_output=True, text=True, timeout=timeout, cwd=folder.parent, env=self.env)
        if done.returncode != 0:
            raise RuntimeError(f"the package's process failed:\n{done.stderr[-4000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["stderr"] = done.stderr
        return result

    @property
    def consumer(self) -> str:
        return self.chain.consumer.address

    def sign(self, message: str) -> str:
        """The consumer's signature as ocean.py makes it (EIP-191 over keccak(message))."""
        from eth_account import Account
        from eth_account.messages import encode_defunct
        from eth_utils import keccak

        return Account.sign_message(encode_defunct(primitive=keccak(text=message)), self.consumer_key).signature.to_0x_hex()

    def signed(self, prefix: str, suffix: str = "") -> tuple[str, str]:
        """A fresh nonce and the consumer's signature of `prefix + nonce + suffix`."""
        nonce = str(time.time_ns())
        return nonce, self.sign(prefix + nonce + suffix)

    @contextlib.contextmanager
    def in_process(self) -> Iterator[None]:
        """This process's chalicelib pointed at the backends (to prepare data), then put back."""
        with _environment(self.env):
            yield


@contextlib.contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    from chalicelib import services

    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    services.reset()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        services.reset()


def _file_server() -> tuple[http.server.ThreadingHTTPServer, str]:
    """The sample files on loopback, as a data owner's web server serves them."""
    handler = functools.partial(_QuietHandler, directory=str(SAMPLE_DIR))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


@contextlib.contextmanager
def local_backends(prefix: str = "package") -> Iterator[Backends]:
    """A moto server (from this venv) with the tables and bucket, anvil with the Ocean contracts
    and the samples published and registered, a finished and a running job of the consumer."""
    from devstack.devchain import start_devchain

    group = ProcessGroup()
    port = free_port()
    group.start("moto", [sys.executable, "-m", "devstack.moto_server", "-H", "127.0.0.1", "-p", str(port)])
    chain = None
    server = None
    try:
        chain = start_devchain(provider_key=DEV_PROVIDER_KEY)
        server, files_url = _file_server()
        wait_for_http(f"http://127.0.0.1:{port}/moto-api/", group=group)
        env = {
            "PATH": "/usr/bin:/bin", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "package",
            "AWS_SECRET_ACCESS_KEY": "package", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
            "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "AWS_EC2_METADATA_DISABLED": "true", "RESULTS_BUCKET": f"{prefix}-results", "RESOURCE_PREFIX": prefix,
            "CHAINS": json.dumps({str(chain.chain_id): chain.rpc_url}), "PROVIDER_PRIVATE_KEY": DEV_PROVIDER_KEY,
            "JWT_SECRET": "package-jwt-secret-of-sufficient-length-0000", "ALLOW_PRIVATE_NETWORKS": "1",
            "COMPUTE_ENVIRONMENTS": local_environments(chain), "PROVIDER_URL": "https://api.example.invalid",
            "ESCROW_CONTRACTS": json.dumps({str(chain.chain_id): chain.contracts.Escrow}),
        }
        backends = Backends(env, chain, None, files_url, "0x" + bytes(chain.consumer.key).hex())  # type: ignore[arg-type]
        with backends.in_process():
            backends.samples = _prepare(chain, files_url, env)
        yield backends
    finally:
        if server is not None:
            server.shutdown()
        if chain is not None:
            chain.stop()
        group.stop()


def _prepare(chain: Any, files_url: str, env: Mapping[str, str]) -> Samples:
    from chalicelib import services
    from chalicelib.assets.register import register_asset
    from chalicelib.bootstrap import bootstrap
    from chalicelib.models import JobRecord
    from devstack.publish import ecies_encrypt_for
    from devstack.samples import publish_samples

    bootstrap(services.settings(), with_bucket=True)
    samples = publish_samples(chain, ecies_encrypt_for(chain.provider_public_key), env["PROVIDER_URL"], files_url)
    for asset in (samples.dataset, samples.algorithm):
        register_asset(chain.chain_id, asset.nftAddress)
    now = int(time.time())
    owner = chain.consumer.address
    JobRecord(JOB_FINISHED, owner=owner, document_id=samples.dataset.did, date_created=now - 120,
              date_finished=now - 60, status=70, status_text="Job completed", environment="ocean-c2d-cpu",
              chain_id=chain.chain_id, results=[{"filename": "out.txt", "filesize": 2, "type": "output",
                                                 "key": f"jobs/{JOB_FINISHED}/outputs/out.txt"}]).save()
    JobRecord(JOB_RUNNING, owner=owner, document_id=samples.dataset.did, date_created=now - 30, status=20,
              status_text="Configuring volumes", environment="ocean-c2d-cpu", chain_id=chain.chain_id,
              batch_job_id=BATCH_JOB).save()
    from chalicelib import aws

    aws.client("s3").put_object(Bucket=env["RESULTS_BUCKET"], Key=f"jobs/{JOB_FINISHED}/outputs/out.txt", Body=b"42")
    return samples
