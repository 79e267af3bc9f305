"""The local backend for real (issue 10, observation 9): LocalDispatcher runs the real runner's
configure and publish against a real moto server, and a hostile algorithm in the sandbox.

The algorithm tries to read the state folder's stack.json, /etc/shadow, a file of the project
checkout and the home directory, to reach a TCP listener the test opens on 127.0.0.1, to replace
or add logs of the runner and to change its inputs: every attempt fails, its log says how, and
publish still uploads the logs. A job allowed the network reaches the listener."""
from __future__ import annotations

import functools
import http.server
import json
import os
import queue
import socket
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from chalicelib.compute.container_rules import AlgorithmContainer
from chalicelib.compute.environments import Environment
from chalicelib.job_key import new_job_key, seal_manifest
from devstack.local_dispatch import ALGORITHM_LOG_BYTES, REPO_ROOT, LocalDispatcher, detect_sandbox

SANDBOX, NO_SANDBOX = detect_sandbox()
needs_sandbox = pytest.mark.skipif(SANDBOX is None, reason=f"no sandbox on this machine: {NO_SANDBOX}")
BUCKET = "sandbox-results"
DID = "did:op:" + "a" * 64
ALGORITHM_DID = "did:op:" + "b" * 64
ENVIRONMENT = Environment(id="local-test", description="", chain_ids=(8996,), job_queue="local-queue", cpu_type="",
                          gpu_type="", n_cpu=1, n_gpu=0, ram_gb=1, disk_gb=1, price_min=0, max_jobs=4,
                          max_job_duration=120, storage_expiry=3600)
CONTAINER = AlgorithmContainer(image="python", tag="3.13-slim", entrypoint="python $ALGO")
SECRET = "stack-json-secret-0123456789"

# Each attempt is printed (so the log shows it) and reported in outputs/report.json.
HOSTILE = r'''
import json, os, socket, sys

report = {"uid": os.getuid(), "gid": os.getgid(), "environment": sorted(os.environ), "root": sorted(os.listdir("/"))}

def attempt(name, action):
    try:
        result = action()
    except Exception as error:
        print(f"DENIED {name}: {type(error).__name__}: {error}", flush=True)
        report[name] = "denied: " + type(error).__name__
    else:
        print(f"ALLOWED {name}: {str(result)[:200]}", flush=True)
        report[name] = "allowed: " + str(result)[:200]

def read(path):
    with open(path, "rb") as handle:
        return handle.read(200)

def connect(port):
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(b"leaked rows")
    return "connected"

def host_processes():
    """The provider's process holds SECRET in its environment: no process here may show it."""
    visible = [pid for pid in os.listdir("/proc") if pid.isdigit()]
    for pid in visible:
        try:
            if SECRET.encode() in read_all(f"/proc/{pid}/environ"):
                return "secret in the environment of process " + pid
        except OSError:
            pass
    raise LookupError(f"no visible process holds the secret ({len(visible)} processes visible)")

def read_all(path):
    with open(path, "rb") as handle:
        return handle.read()

def job_key_anywhere():
    """The job's key opens its manifest and signs its events: configure exited before this ran
    and publish starts after it, and neither this environment nor any visible process holds it."""
    if JOB_KEY in "".join(os.environ.values()):
        return "the job key is in the algorithm's environment"
    for pid in [pid for pid in os.listdir("/proc") if pid.isdigit()]:
        for part in ("environ", "cmdline"):
            try:
                if JOB_KEY.encode() in read_all(f"/proc/{pid}/{part}"):
                    return f"the job key is in /proc/{pid}/{part}"
            except OSError:
                pass
    raise LookupError("no job key in sight")

def write(path, mode="w"):
    with open(path, mode) as handle:
        handle.write("tampered")
    return "written"

attempt("stack_json", lambda: read(STATE + "/stack.json"))
attempt("shadow", lambda: read("/etc/shadow"))
attempt("project_file", lambda: read(REPO + "/README.md"))
attempt("project_listing", lambda: os.listdir(REPO))
attempt("home_file", lambda: read(HOME + "/.bash_history"))
attempt("home_listing", lambda: sorted(os.listdir(HOME)))
attempt("provider_environment", lambda: read_all(f"/proc/{PROVIDER_PID}/environ"))
attempt("host_processes", host_processes)
attempt("job_key", job_key_anywhere)
attempt("listener", lambda: connect(LISTENER))
attempt("results_store", lambda: connect(MOTO))
attempt("replace_configure_log", lambda: write("/data/logs/configure.log"))
attempt("new_log", lambda: write("/data/logs/evil.log"))
attempt("rename_algorithm_log", lambda: os.rename("/data/logs/algorithm.log", "/data/logs/gone.log"))
attempt("append_algorithm_log", lambda: write("/data/logs/algorithm.log", "a"))
attempt("change_input", lambda: write(INPUT, "a"))
attempt("new_input", lambda: write("/data/inputs/extra.csv"))
attempt("change_algorithm", lambda: write(os.environ["ALGO"], "a"))
attempt("read_input", lambda: read(INPUT)[:12].decode())
with open("/data/outputs/report.json", "w") as handle:
    json.dump(report, handle)
print("hostile algorithm done", flush=True)
'''


class Listener:
    """A TCP listener on loopback that records what connects to it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    self.received.append(conn.recv(100))
                except OSError:
                    self.received.append(b"")


@pytest.fixture(scope="module")
def moto_url():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield url
    server.stop()


@pytest.fixture(scope="module")
def files_url(tmp_path_factory):
    """The dataset, served on loopback as a data owner's web server would."""
    folder = tmp_path_factory.mktemp("files")
    (folder / "data.csv").write_text("a,b\n1,2\n3,4\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class Backend:
    """A LocalDispatcher on the real runner and moto server, with the events it delivers."""

    def __init__(self, state: Path, moto_url: str, files_url: str, sandbox: Any, reason: str = "") -> None:
        self.state, self.moto_url, self.files_url = state, moto_url, files_url
        self.events: queue.Queue = queue.Queue()
        self.s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
        runner_env = {"AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                      "AWS_DEFAULT_REGION": "us-east-1", "C2D_REGION": "us-east-1", "RUNNER_EVENTS": "stdout",
                      "RESULTS_BUCKET": BUCKET, "ALLOW_PRIVATE_NETWORKS": "1"}
        self.dispatcher = LocalDispatcher(state / "jobs", self.events.put, runner_env, sandbox, reason)
        self.keys: dict[str, str] = {}  # each job's key, as the API would keep it in the job record

    def start(self, job_id: str, rawcode: str, *, allow_network: bool = False, timeout: int | None = None,
              input_url: str | None = None, job_key: str = "", algocustomdata: dict | None = None) -> str:
        manifest = {
            "jobId": job_id, "owner": "0x" + "1" * 40, "bucket": BUCKET, "prefix": f"jobs/{job_id}/",
            "inputs": [{"did": DID, "serviceId": "compute", "userdata": {},
                        "files": [{"type": "url", "method": "GET", "url": input_url or self.files_url + "/data.csv"}]}],
            "algorithm": {"did": ALGORITHM_DID, "rawcode": rawcode, "files": [], "checksums": [],
                          "container": {"image": "python", "tag": "3.13-slim", "entrypoint": "python $ALGO"},
                          "algocustomdata": algocustomdata or {}, "userdata": {}},
        }
        key = f"jobs/{job_id}/manifest.json"
        self.keys[job_id] = job_key = job_key or new_job_key()
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=seal_manifest(job_key, job_id, manifest))
        return self.dispatcher.submit(job_id, ENVIRONMENT, f"s3://{BUCKET}/{key}", CONTAINER, timeout,
                                      dids=[DID], algorithm_did=ALGORITHM_DID, allow_network=allow_network,
                                      runner_key=job_key)

    def wait(self, job_ids: set[str], seconds: float = 120) -> dict[str, list[dict]]:
        """Every job's events, once each has its final Batch event."""
        seen: dict[str, list[dict]] = {job_id: [] for job_id in job_ids}
        open_jobs = set(job_ids)
        deadline = time.monotonic() + seconds
        while open_jobs:
            event = self.events.get(timeout=max(0.1, deadline - time.monotonic()))
            detail = event["detail"]
            job_id = detail.get("jobId") if event["source"] == "ocean.c2d.runner" else detail["tags"]["c2d:jobId"]
            seen[job_id].append(event)
            if event["source"] == "aws.batch" and detail["status"] in ("SUCCEEDED", "FAILED"):
                open_jobs.discard(job_id)
        return seen

    def result(self, job_id: str, name: str) -> bytes:
        return self.s3.get_object(Bucket=BUCKET, Key=f"jobs/{job_id}/{name}")["Body"].read()


def final(events: list[dict]) -> dict:
    return events[-1]["detail"]


def exit_codes(detail: dict) -> dict[str, int | None]:
    containers = detail["ecsProperties"]["taskProperties"][0]["containers"]
    return {c["name"]: c.get("exitCode") for c in containers}


def published(events: list[dict]) -> set[str]:
    """The result types of the runner's publish event (70)."""
    done = [e["detail"] for e in events if e["source"] == "ocean.c2d.runner" and e["detail"]["status"] == 70]
    assert done, [e["detail"].get("status") for e in events]
    return {result["type"] for result in done[-1]["results"]}


def python_path_parts(home: Path) -> set[str]:
    """The one name under home that leads to the Python installation, if it lives there (pyenv):
    the sandbox shows that path and nothing else of home."""
    import sys

    prefix = Path(os.path.realpath(sys.base_prefix))
    return {prefix.relative_to(home).parts[0]} if prefix.is_relative_to(home) else set()


def hostile_code(state: Path, listener: Listener, moto_url: str, data_input: str, job_key: str = "") -> str:
    home = Path(os.path.expanduser("~")).resolve()
    constants = {"STATE": str(state), "REPO": str(REPO_ROOT), "HOME": str(home), "LISTENER": listener.port,
                 "MOTO": int(moto_url.rsplit(":", 1)[1]), "INPUT": data_input, "JOB_KEY": job_key or new_job_key()}
    return "".join(f"{name} = {value!r}\n" for name, value in constants.items()) + HOSTILE


@needs_sandbox
def test_hostile_algorithm_reaches_nothing_but_its_data_and_logs_are_published(tmp_path, moto_url, files_url,
                                                                               monkeypatch):
    state = tmp_path / "state"
    state.mkdir()
    (state / "stack.json").write_text(json.dumps({"consumerPrivateKey": SECRET}))
    monkeypatch.setenv("DEVSTACK_STATE_DIR", str(state))
    monkeypatch.setenv("C2D_TEST_PROVIDER_SECRET", SECRET)  # as PROVIDER_PRIVATE_KEY is in the API's
    listener = Listener()
    backend = Backend(state, moto_url, files_url, SANDBOX)
    job_key = new_job_key()
    code = hostile_code(state, listener, moto_url, f"/data/inputs/{DID}/0", job_key)
    backend.start("hostile-1", code, job_key=job_key)
    backend.start("network-1", code, allow_network=True, job_key=job_key)
    events = backend.wait({"hostile-1", "network-1"})

    detail = final(events["hostile-1"])
    assert detail["status"] == "SUCCEEDED", detail
    assert exit_codes(detail) == {"configure": 0, "algorithm": 0, "publish": 0}
    assert published(events["hostile-1"]) == {"output", "algorithmLog", "configurationLog", "publishLog"}
    report = json.loads(backend.result("hostile-1", "outputs/report.json"))
    log = backend.result("hostile-1", "logs/algorithm.log").decode()
    denied = ["stack_json", "shadow", "project_file", "project_listing", "home_file", "provider_environment",
              "host_processes", "job_key", "listener",
              "results_store", "replace_configure_log", "new_log", "rename_algorithm_log", "change_input",
              "new_input", "change_algorithm"]
    for name in denied:
        assert report[name].startswith("denied"), (name, report[name])
        assert f"DENIED {name}: " in log, name
    home = Path(os.path.expanduser("~")).resolve()  # at most the way to the Python installation shows
    assert report["home_listing"] in ("denied: FileNotFoundError", f"allowed: {sorted(python_path_parts(home))}")
    assert report["append_algorithm_log"] == "allowed: written" and report["read_input"] == "allowed: a,b\n1,2\n3,4\n"
    assert (report["uid"], report["gid"]) == (4000, 4000)
    assert not [name for name in report["environment"] if name.startswith("AWS_")], report["environment"]
    assert "C2D_JOB_KEY" not in report["environment"]
    assert SECRET not in log and "hostile algorithm done" in log
    assert listener.received == [b"leaked rows"]  # the network-allowed job's, and only that one
    assert b"tampered" not in backend.result("hostile-1", "logs/configure.log")
    assert backend.dispatcher.algorithm_log("hostile-1") == log.encode()
    assert backend.dispatcher.algorithm_log("../hostile-1") is None
    assert backend.dispatcher.algorithm_log("no-such-job") is None

    allowed = json.loads(backend.result("network-1", "outputs/report.json"))
    assert (allowed["uid"], allowed["listener"]) == (4001, "allowed: connected")
    assert allowed["stack_json"].startswith("denied") and allowed["shadow"].startswith("denied")
    assert allowed["project_file"].startswith("denied")


def stubborn(marker: str) -> str:
    """An algorithm that starts a child ignoring SIGTERM (its argv names `marker`), then sleeps."""
    child = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
    return ("import subprocess, sys, time\n"
            f"subprocess.Popen([sys.executable, '-c', {child!r}, {marker!r}])\n"
            "time.sleep(0.5)\nprint('sleeping', flush=True)\ntime.sleep(300)\n")


def processes_named(marker: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            pass
    return found


@needs_sandbox
def test_timeout_is_124_stop_ends_everything_unready_runs_nothing(tmp_path, moto_url, files_url):
    """A timed-out job publishes (124); a stopped one ends at once; neither leaves a process behind;
    an unready job (configure failed) runs no algorithm yet publishes its logs."""
    backend = Backend(tmp_path, moto_url, files_url, SANDBOX)
    backend.start("slow-1", stubborn("c2d-test-slow-child"), timeout=3)
    stopping = backend.start("stopped-1", stubborn("c2d-test-stopped-child"))
    backend.start("unready-1", "open('/data/outputs/ran', 'w').write('ran')\n", input_url=files_url + "/missing.csv")
    deadline = time.monotonic() + 60
    while b"sleeping" not in (backend.dispatcher.algorithm_log("stopped-1") or b""):
        assert time.monotonic() < deadline, "the stubborn algorithm never started"
        time.sleep(0.1)
    assert processes_named("c2d-test-stopped-child"), "the child to be killed is not running"
    backend.dispatcher.terminate(stopping, "Job stopped by the test")
    events = backend.wait({"slow-1", "stopped-1", "unready-1"})

    slow = final(events["slow-1"])
    assert slow["status"] == "FAILED" and exit_codes(slow) == {"configure": 0, "algorithm": 124, "publish": 0}
    (publishing,) = [e["detail"] for e in events["slow-1"] if e["source"] == "ocean.c2d.runner" and e["detail"]["status"] == 60]
    ran = publishing["algorithm"]["finishedAt"] - publishing["algorithm"]["startedAt"]
    assert 3 <= ran < 20 and publishing["algorithm"]["exitCode"] == 124  # its own time, measured by the dispatcher
    assert "algorithmLog" in published(events["slow-1"])
    assert backend.result("slow-1", "logs/algorithm.log").startswith(b"sleeping")

    stopped = final(events["stopped-1"])
    assert stopped["status"] == "FAILED" and stopped["statusReason"] == "c2d-stop: Job stopped by the test"
    assert exit_codes(stopped)["publish"] is None
    assert processes_named("c2d-test-slow-child") == [] and processes_named("c2d-test-stopped-child") == []

    # configure failed: as on Batch (dependsOn SUCCESS) neither the algorithm nor publish ran;
    # configure published its own log with its signed 31
    unready = final(events["unready-1"])
    assert unready["status"] == "FAILED"
    assert exit_codes(unready) == {"configure": 31, "algorithm": None, "publish": None}
    (failure,) = [e["detail"] for e in events["unready-1"] if e["source"] == "ocean.c2d.runner" and e["detail"]["status"] == 31]
    assert [r["type"] for r in failure["results"]] == ["configurationLog"]
    assert b"the algorithm was not run" in backend.result("unready-1", "logs/configure.log")
    assert not backend.s3.list_objects_v2(Bucket=BUCKET, Prefix="jobs/unready-1/outputs/").get("Contents")
    assert [e["detail"]["status"] for e in events["unready-1"] if e["source"] == "aws.batch"] == [
        "RUNNABLE", "STARTING", "FAILED"]  # RUNNING only once publish starts, as the ECS agent reports it


def test_without_a_sandbox_the_job_logs_say_the_algorithm_ran_unsandboxed(tmp_path, moto_url, files_url):
    backend = Backend(tmp_path, moto_url, files_url, None, "test: no sandbox here")
    backend.start("plain-1", "open('/dev/null').close()\nprint('benign', flush=True)\n")
    events = backend.wait({"plain-1"})
    assert final(events["plain-1"])["status"] == "SUCCEEDED"
    for name in ("logs/configure.log", "logs/algorithm.log"):
        text = backend.result("plain-1", name).decode()
        assert "the algorithm runs UNSANDBOXED" in text and "test: no sandbox here" in text, name


def test_the_algorithm_log_is_read_only_up_to_what_the_logs_route_shows(tmp_path):
    """The algorithm decides how big its log grows; the API server reads its head only."""
    dispatcher = LocalDispatcher(tmp_path, lambda event: None, {}, None)
    log_file = tmp_path / "job-1" / "data" / "logs" / "algorithm.log"
    log_file.parent.mkdir(parents=True)
    with open(log_file, "wb") as handle:
        handle.truncate(64 * 1024 * 1024)  # sparse: nothing written, 64 MiB to read
    assert len(dispatcher.algorithm_log("job-1")) == ALGORITHM_LOG_BYTES
    assert dispatcher.algorithm_log("job-2") is None
