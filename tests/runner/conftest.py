"""Fixtures for the job runner tests: in-process moto, a local HTTP server, settings, events."""
from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from runner.events import Emitter  # noqa: E402
from runner_test_key import RUNNER_KEY  # noqa: E402
from runner.settings import Settings  # noqa: E402

JOBS_BUCKET = "c2d-jobs"
DATA_BUCKET = "c2d-data"
BUSYBOX_STAND_IN = b"#!/bin/sh\n# stands in for the runner image's static busybox\n"


class _Handler(BaseHTTPRequestHandler):
    """Serves `server.files` plus a few behaviours: /redirect?to=&code=, /loop, /status/N,
    /echo, /stream/N (no Content-Length), /slow, /trickle/N (a byte every 0.1 s)."""

    protocol_version = "HTTP/1.0"
    server: "LocalServer"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _reply(self, status: int, body: bytes = b"", length: bool = True, **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _trickle(self, size: int) -> None:
        """One byte every 0.1 s: each read is quick, the whole download is not."""
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        for _ in range(size):
            self.wfile.write(b"x")
            self.wfile.flush()
            time.sleep(0.1)

    def _handle(self) -> None:
        self.server.requests.append((self.command, self.path, dict(self.headers)))
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        path = parts.path
        if path == "/redirect":
            self._reply(int(query.get("code", ["302"])[0]), Location=query["to"][0])
        elif path == "/loop":
            self._reply(302, Location="/loop")
        elif path.startswith("/status/"):
            self._reply(int(path.rsplit("/", 1)[1]), b"nope")
        elif path == "/echo":
            body = json.dumps({"method": self.command, "headers": dict(self.headers)}).encode()
            self._reply(200, body)
        elif path.startswith("/stream/"):
            self._reply(200, b"x" * int(path.rsplit("/", 1)[1]), length=False)
        elif path == "/slow":
            time.sleep(1.5)
            self._reply(200, b"late")
        elif path.startswith("/trickle/"):
            self._trickle(int(path.rsplit("/", 1)[1]))
        elif path in self.server.files:
            self._reply(200, self.server.files[path])
        else:
            self._reply(404, b"missing")


class LocalServer(ThreadingHTTPServer):
    """A loopback HTTP server whose files and request log the tests can see."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that give up early (timeouts, size caps) are expected here."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [urlsplit(p).path for _, p, _ in self.requests]


@pytest.fixture(scope="session")
def _server() -> Iterator[LocalServer]:
    server = LocalServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def http_server(_server: LocalServer) -> Iterator[LocalServer]:
    """The shared server, with files and request log cleared for each test."""
    _server.files.clear()
    _server.requests.clear()
    yield _server


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In-process moto with fake credentials; no AWS_ENDPOINT_URL* may leak in."""
    import os

    from moto import mock_aws

    for name in list(os.environ):
        if name.startswith("AWS_ENDPOINT_URL"):
            monkeypatch.delenv(name)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    with mock_aws():
        yield


@pytest.fixture
def s3(aws: None) -> Any:
    """An S3 client with the jobs bucket and a separate data bucket."""
    import boto3

    client = boto3.client("s3")
    client.create_bucket(Bucket=JOBS_BUCKET)
    client.put_bucket_versioning(Bucket=JOBS_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    client.create_bucket(Bucket=DATA_BUCKET)
    return client


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Builds Settings as the runner would read them from its environment (DATA_DIR in tmp)."""

    busybox = tmp_path / "busybox-static"
    busybox.write_bytes(BUSYBOX_STAND_IN)

    def build(job_id: str = "job-1", **env: str) -> Settings:
        base = {"JOB_ID": job_id,
                "MANIFEST_URI": f"s3://{JOBS_BUCKET}/jobs/{job_id}/manifest.json",
                "DATA_DIR": str(tmp_path / "data"), "RUNNER_EVENTS": "stdout",
                "FETCH_TIMEOUT": "5", "C2D_REGION": "us-east-1", "BUSYBOX_SOURCE": str(busybox),
                "C2D_JOB_KEY": RUNNER_KEY}
        base.update(env)
        return Settings.from_env(base)

    return build


class RecordingEmitter(Emitter):
    """Keeps every event detail in memory."""

    def __init__(self, job_id: str = "job-1") -> None:
        super().__init__(job_id)
        self.details: list[dict[str, Any]] = []

    def _send(self, detail: dict[str, Any]) -> bool:
        self.details.append(detail)
        return True

    @property
    def statuses(self) -> list[int]:
        return [d["status"] for d in self.details]


@pytest.fixture
def emitter() -> RecordingEmitter:
    return RecordingEmitter()
