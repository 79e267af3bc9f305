"""The sealed job volume (issue 10): who owns what in /data, the busybox and `ready` marker, the
algorithm checksum pinned at start, the region every client gets (issue 11 #1), the Batch attempt
in events, and the runner image. Ownership tests need root (CI runs as root)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import boto3
import pytest

from chalicelib.compute.checksums import AlgorithmChecksums
from chalicelib.filesources import Budget, Sources
from chalicelib.netsafe import FetchPolicy
from runner import configure, publish
from runner.__main__ import main
from runner.events import SOURCE
from runner.layout import Layout
from runner_test_key import RUNNER_KEY
from test_runner_configure import ALGO_DID, DID_A, algorithm_file, stage, url_file  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[2]
JOBS_BUCKET = "c2d-jobs"  # created by conftest's s3 fixture
BUSYBOX_STAND_IN = b"#!/bin/sh\n# a stand-in for the static busybox\n"
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="ownership needs root (CI runs as root)")


def mode(path: Path) -> tuple[int, int, int]:
    info = path.lstat()
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def provisioned(stage: Any, http_server: Any, **env: str) -> Path:
    http_server.files["/files/a.csv"] = b"1,2\n"
    inputs = [{"did": DID_A, "files": [url_file(http_server, "/files/a.csv")]}]
    assert stage(inputs, algorithm_file(http_server, "/files/algo.py", b"print(2)\n"), **env) == 0
    return stage.settings.data_dir


@as_root
@pytest.mark.parametrize("uid", [4000, 4001])
def test_owners_and_modes_as_root(stage, http_server, uid) -> None:
    """C2: everything root-owned and read-only to the algorithm except outputs/ and its log."""
    data = provisioned(stage, http_server, ALGORITHM_UID=str(uid))
    expected = {
        data: (0, 0, 0o755),
        data / "inputs": (0, 0, 0o755),
        data / "inputs" / DID_A: (0, 0, 0o755),
        data / "inputs" / DID_A / "0": (0, 0, 0o644),
        data / "inputs" / "algoCustomData.json": (0, 0, 0o644),
        data / "transformations": (0, 0, 0o755),
        data / "transformations" / "algorithm": (0, 0, 0o644),
        data / "transformations" / "env.json": (0, 0, 0o644),
        data / "outputs": (uid, uid, 0o755),
        data / "logs": (0, 0, 0o755),
        data / "logs" / "configure.log": (0, 0, 0o644),
        data / "logs" / "publish.log": (0, 0, 0o644),
        data / "logs" / "algorithm.log": (uid, uid, 0o644),
        data / ".c2d": (0, 0, 0o755),
        data / ".c2d" / "busybox": (0, 0, 0o711),  # execute-only: PID 1 of the algorithm is not dumpable
        data / ".c2d" / "ready": (0, 0, 0o644),
    }
    assert {path: mode(path) for path in expected} == expected
    assert all(not p.is_symlink() for p in expected)


def _interpreter_for(uid: int) -> str | None:
    """A Python the unprivileged user can run (the venv's may live under root's home)."""
    for candidate in (sys.executable, shutil.which("python3") or "", "/usr/bin/python3"):
        try:
            if candidate and subprocess.run([candidate, "-c", ""], user=uid, group=uid,
                                            capture_output=True, timeout=30).returncode == 0:
                return candidate
        except OSError:
            continue
    return None


@as_root
def test_layout_as_an_unprivileged_user_skips_chown() -> None:
    """Not root (a developer's local stack): no chown, no crash, the modes still applied."""
    nobody = 65534
    python = _interpreter_for(nobody)
    if python is None:
        pytest.skip("no Python interpreter the unprivileged user can execute")
    folder = Path(tempfile.mkdtemp(prefix="c2d-layout-"))
    try:
        shutil.copytree(ROOT / "runner", folder / "code" / "runner",
                        ignore=shutil.ignore_patterns("__pycache__"))
        os.chmod(folder, 0o777)
        for path in (folder / "code").rglob("*"):
            os.chmod(path, 0o755)
        os.chmod(folder / "code", 0o755)
        busybox = folder / "busybox"
        busybox.write_bytes(BUSYBOX_STAND_IN)
        os.chmod(busybox, 0o644)
        script = ("import sys; from pathlib import Path; from runner.layout import Layout; "
                  "l = Layout(Path(sys.argv[1])); assert l.install_busybox(sys.argv[2]); "
                  "l.create(4000); l.mark_ready()")
        result = subprocess.run([python, "-c", script, str(folder / "data"), str(busybox)],
                                cwd=folder / "code", user=nobody, group=nobody,
                                capture_output=True, text=True, timeout=60,
                                env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"})
        assert result.returncode == 0, result.stderr
        data = folder / "data"
        assert mode(data / "outputs") == (nobody, nobody, 0o755)
        assert mode(data / "logs") == (nobody, nobody, 0o755)
        assert mode(data / "logs" / "algorithm.log") == (nobody, nobody, 0o644)
        assert mode(data / ".c2d" / "busybox") == (nobody, nobody, 0o711)
        assert (data / ".c2d" / "ready").is_file()
    finally:
        shutil.rmtree(folder)


def test_busybox_is_configures_first_action_even_with_a_bad_environment(tmp_path, monkeypatch,
                                                                        capsys) -> None:
    """C2: the algorithm container starts with /data/.c2d/busybox, so configure copies it before
    it even reads its settings; without `ready` the algorithm container then runs nothing."""
    source = tmp_path / "busybox"
    source.write_bytes(BUSYBOX_STAND_IN)
    data = tmp_path / "data"
    (data / ".c2d").mkdir(parents=True)
    (data / ".c2d" / "ready").write_text("left from another attempt")
    for name in ("JOB_ID", "MANIFEST_URI", "C2D_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATA_DIR", str(data))
    monkeypatch.setenv("BUSYBOX_SOURCE", str(source))
    assert main(["configure"]) == 2
    assert (data / ".c2d" / "busybox").read_bytes() == BUSYBOX_STAND_IN
    assert stat.S_IMODE((data / ".c2d" / "busybox").stat().st_mode) == 0o711
    assert not (data / ".c2d" / "ready").exists()
    assert "JOB_ID" in capsys.readouterr().err


def test_ready_only_after_everything_succeeded(stage, http_server) -> None:
    http_server.files["/files/a.csv"] = b"1"
    inputs = [{"did": DID_A, "files": [url_file(http_server, "/files/a.csv")]}]
    algorithm = {"did": ALGO_DID, "files": [url_file(http_server, "/files/algo.py")]}
    http_server.files["/files/algo.py"] = b"print(3)"
    assert stage(inputs, algorithm) == 32  # no checksums in the manifest: nothing is trusted
    assert stage.emitter.details[-1]["reason"] == "algorithm files have no checksums"
    data = stage.settings.data_dir
    assert not (data / ".c2d" / "ready").exists()
    assert not (data / "transformations" / "algorithm").exists()
    assert (data / ".c2d" / "busybox").is_file()


def test_algorithm_changed_after_start_fails_32_and_is_never_placed(stage, http_server,
                                                                    emitter) -> None:
    """Issue 10 #4: the server answers v1 when the provider hashes the algorithm at start (the
    provider's own hasher, chalicelib.compute.checksums) and v2 when configure fetches it."""
    http_server.files["/files/a.csv"] = b"1"
    http_server.files["/files/algo.py"] = b"print('v1: approved')\n"
    spec = url_file(http_server, "/files/algo.py")
    hasher = AlgorithmChecksums(lambda: Sources(
        policy=FetchPolicy(allow_private=True, timeout=5), budget=Budget(10**6),
        ipfs_gateway="http://unused", arweave_gateway="http://unused",
        forbidden_buckets=frozenset({JOBS_BUCKET}), s3_factory=lambda: None))
    pinned = hasher.digests([spec])  # at start
    assert pinned == [hashlib.sha256(b"print('v1: approved')\n").hexdigest()]
    http_server.files["/files/algo.py"] = b"import shutil; shutil.copytree('/data/inputs', ...)\n"
    inputs = [{"did": DID_A, "files": [url_file(http_server, "/files/a.csv")]}]
    assert stage(inputs, {"did": ALGO_DID, "files": [spec], "checksums": pinned}) == 32
    assert emitter.statuses == [20, 32]
    assert emitter.details[-1]["reason"] == (
        "algorithm file 0 does not match the checksum pinned at start")
    data = stage.settings.data_dir
    assert not (data / "transformations" / "algorithm").exists()
    assert not (data / ".c2d" / "ready").exists()
    assert list((data / ".c2d" / "staging").iterdir()) == []


def test_planted_publish_log_symlink_is_not_followed(s3, make_settings, emitter,
                                                     tmp_path) -> None:
    """Issue 10 #6: a symlinked publish.log must not make publish write where it points."""
    settings = make_settings()
    layout = Layout(settings.data_dir)
    layout.install_busybox(settings.busybox_source)
    layout.create(settings.algorithm_uid)
    (layout.outputs / "result.txt").write_text("42")
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    (layout.logs / "publish.log").unlink()
    (layout.logs / "publish.log").symlink_to(victim)
    (layout.logs / "algorithm.log").write_text("algo says hi\n")
    assert publish.run(settings, emitter) == 0
    assert victim.read_text() == "untouched"
    assert not (layout.logs / "publish.log").is_symlink()
    uploaded = s3.get_object(Bucket=JOBS_BUCKET, Key="jobs/job-1/logs/publish.log")["Body"].read()
    assert b"uploaded result.txt" in uploaded


def test_unicode_separators_in_output_names_are_renamed(s3, make_settings, emitter) -> None:
    """Issue 12: names with Zl, Zp, Cc or Cf characters are published under safe names, and
    every result key stays under jobs/<id>/outputs/ or jobs/<id>/logs/."""
    settings = make_settings()
    layout = Layout(settings.data_dir)
    layout.create(settings.algorithm_uid)
    names = {"a\u2028b.txt": "1", "a_b.txt": "2", "p\u2029q": "3", "nel\x85.csv": "4",
             "zero\u200bwidth": "5", "rtl\u202eexe.txt": "6", "bom\ufeff": "7", "tab\tx": "8"}
    for name, body in names.items():
        (layout.outputs / name).write_text(body)
    os.mkfifo(layout.outputs / "fifo\u2028")
    assert publish.run(settings, emitter) == 0
    outputs = {r["filename"]: r for r in emitter.details[-1]["results"] if r["type"] == "output"}
    assert sorted(outputs) == sorted(["a_b.txt~1", "a_b.txt", "p_q", "nel_.csv", "zero_width",
                                      "rtl_exe.txt", "bom_", "tab_x"])
    for name, body in names.items():
        published = "a_b.txt~1" if name == "a\u2028b.txt" else name.translate(
            {c: "_" for c in (0x2028, 0x2029, 0x85, 0x200B, 0x202E, 0xFEFF, 0x09)})
        key = outputs[published]["key"]
        assert s3.get_object(Bucket=JOBS_BUCKET, Key=key)["Body"].read() == body.encode()
    for result in emitter.details[-1]["results"]:
        assert result["key"].startswith(("jobs/job-1/outputs/", "jobs/job-1/logs/"))
        assert all(ord(c) >= 32 and c not in "\x85\u2028\u2029" for c in result["key"])
    log = (layout.logs / "publish.log").read_text()
    assert "renamed 'a\\u2028b.txt' to 'a_b.txt~1'" in log
    assert "skipped 'fifo\\u2028': not a regular file" in log


@pytest.fixture
def regionless(aws, monkeypatch) -> dict[str, Any]:
    """moto with an SQS queue behind an EventBridge rule, then no AWS_REGION/AWS_DEFAULT_REGION
    left in the environment: only the dispatcher's C2D_REGION names the region."""
    sqs = boto3.client("sqs", region_name="eu-west-1")
    events = boto3.client("events", region_name="eu-west-1")
    queue = sqs.create_queue(QueueName="stage-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"]
    events.put_rule(Name="runner", EventPattern=json.dumps({"source": [SOURCE]}))
    events.put_targets(Rule="runner", Targets=[{"Id": "q", "Arn": arn}])
    boto3.client("s3", region_name="eu-west-1").create_bucket(
        Bucket=JOBS_BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    return {"sqs": sqs, "queue": queue}


def test_events_delivered_with_only_c2d_region(regionless, tmp_path, monkeypatch) -> None:
    """Issue 11 #1 and C6: with only C2D_REGION, publish's S3 uploads and both its events reach
    AWS, and every event carries the Batch attempt."""
    data = tmp_path / "data"
    (data / "outputs").mkdir(parents=True)
    (data / "outputs" / "out.txt").write_text("done")
    for name, value in {"JOB_ID": "job-7", "RESULTS_BUCKET": JOBS_BUCKET, "DATA_DIR": str(data),
                        "RUNNER_EVENTS": "eventbridge", "C2D_REGION": "eu-west-1",
                        "AWS_BATCH_JOB_ATTEMPT": "2", "C2D_JOB_KEY": RUNNER_KEY}.items():
        monkeypatch.setenv(name, value)
    assert main(["publish"]) == 0
    messages = regionless["sqs"].receive_message(QueueUrl=regionless["queue"],
                                                 MaxNumberOfMessages=10)["Messages"]
    details = sorted((json.loads(m["Body"])["detail"] for m in messages),
                     key=lambda d: d["status"])
    assert [(d["status"], d["attempt"]) for d in details] == [(60, 2), (70, 2)]
    assert details[1]["results"][0]["key"] == "jobs/job-7/outputs/out.txt"


def test_no_region_at_all_exits_2_and_says_so(tmp_path) -> None:
    env = {"PATH": "/usr/bin:/bin", "JOB_ID": "job-1", "RESULTS_BUCKET": JOBS_BUCKET,
           "DATA_DIR": str(tmp_path / "data"), "RUNNER_EVENTS": "eventbridge", "C2D_JOB_KEY": RUNNER_KEY}
    proc = subprocess.run([sys.executable, "-m", "runner", "publish"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "no AWS region" in proc.stderr and "C2D_REGION" in proc.stderr


def test_stdout_events_carry_the_attempt_only_when_known(stage, http_server, capsys) -> None:
    from runner.events import make_emitter

    data = provisioned(stage, http_server)
    assert data.is_dir()
    settings = stage.make_settings(AWS_BATCH_JOB_ATTEMPT="3")
    make_emitter(settings).emit(30)
    make_emitter(stage.make_settings()).emit(30)
    lines = [json.loads(line.split(" ", 1)[1]) for line in capsys.readouterr().out.splitlines()]
    assert [{k: v for k, v in line.items() if k not in ("at", "signature")} for line in lines] == [
        {"jobId": "job-1", "status": 30, "attempt": 3}, {"jobId": "job-1", "status": 30}]


def test_runner_image_is_python_313_with_static_busybox() -> None:
    dockerfile = (ROOT / "runner" / "Dockerfile").read_text()
    assert "FROM python:3.13-slim" in dockerfile
    assert "busybox-static" in dockerfile
    assert "/bin/busybox" in dockerfile  # the default BUSYBOX_SOURCE, checked at build time


def test_runner_image_installs_its_lock_and_every_module_it_imports() -> None:
    """The image's packages are the lock's, hash-checked, at the versions these tests ran; and
    every chalicelib module the runner imports is copied into it (a missing one is an image
    that cannot start a stage)."""
    import ast
    import importlib.metadata
    import re

    dockerfile = (ROOT / "runner" / "Dockerfile").read_text()
    assert "pip install --no-cache-dir --require-hashes --no-deps -r /tmp/runner-requirements.txt" in dockerfile
    lock = (ROOT / "runner" / "requirements.txt").read_text()
    pinned = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", lock, re.MULTILINE))
    assert {"boto3", "botocore", "s3transfer", "pycryptodome"} <= set(pinned)
    for name, version in pinned.items():
        assert importlib.metadata.version(name) == version, name
        for requirement in importlib.metadata.requires(name) or []:  # --no-deps: the lock has them all
            if "extra ==" not in requirement:
                assert re.split(r"[ <>=!~;\[(]", requirement, maxsplit=1)[0].lower() in {p.lower() for p in pinned}
    assert lock.count("--hash=sha256:") >= len(pinned)
    copied = set(re.findall(r"chalicelib/(\w+)\.py", dockerfile))
    imported = set()
    for source in (ROOT / "runner").glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("chalicelib."):
                imported.add(node.module.split(".")[1])
    for module in sorted(imported):  # and what those import in turn
        for node in ast.walk(ast.parse((ROOT / "chalicelib" / f"{module}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("chalicelib."):
                imported.add(node.module.split(".")[1])
    assert imported and imported <= copied, imported - copied


@as_root
def test_the_algorithm_uid_can_only_append_its_log_and_write_outputs(stage, http_server, s3,
                                                                      emitter) -> None:
    """Issue 10 #6, for real: a shell running as the algorithm's UID on the laid-out volume
    cannot touch the runner's logs, the inputs, the algorithm or the control files; it can
    read its inputs, append to algorithm.log and write outputs; publish then uploads both."""
    volume = Path(tempfile.mkdtemp(prefix="c2d-volume-"))
    os.chmod(volume, 0o755)  # the test's own tmp_path is root-only
    try:
        data = provisioned(stage, http_server, DATA_DIR=str(volume / "data"), ALGORITHM_UID="4000")
        attempts = {
            "read input": f"cat {data}/inputs/{DID_A}/0",
            "append own log": f"echo algo-line >> {data}/logs/algorithm.log",
            "write output": f"echo 42 > {data}/outputs/result.txt",
            "overwrite configure.log": f"echo forged > {data}/logs/configure.log",
            "remove configure.log": f"rm -f {data}/logs/configure.log",
            "plant a log symlink": f"ln -s /etc/passwd {data}/logs/other.log",
            "replace algorithm.log": f"mv {data}/logs/algorithm.log {data}/outputs/moved",
            "change an input": f"echo x > {data}/inputs/{DID_A}/0",
            "add an input": f"echo x > {data}/inputs/{DID_A}/9",
            "change the algorithm": f"echo x > {data}/transformations/algorithm",
            "remove ready": f"rm -f {data}/.c2d/ready",
            "replace busybox": f"echo x > {data}/.c2d/busybox",
            "peek at staging": f"ls {data}/.c2d/staging",
        }
        outcome = {}
        for name, command in attempts.items():
            proc = subprocess.run(["/bin/sh", "-c", command], user=4000, group=4000,
                                  capture_output=True, timeout=30, cwd="/")
            outcome[name] = proc.returncode == 0
        assert outcome == {name: name in ("read input", "append own log", "write output")
                           for name in attempts}
        assert "configure.log" in os.listdir(data / "logs")
        assert publish.run(stage.make_settings(DATA_DIR=str(data)), emitter) == 0
        body = s3.get_object(Bucket=JOBS_BUCKET, Key="jobs/job-1/logs/algorithm.log")["Body"]
        assert body.read() == b"algo-line\n"
        configure_log = s3.get_object(Bucket=JOBS_BUCKET,
                                      Key="jobs/job-1/logs/configure.log")["Body"].read()
        assert b"forged" not in configure_log and b"status 30" in configure_log
        assert s3.get_object(Bucket=JOBS_BUCKET,
                             Key="jobs/job-1/outputs/result.txt")["Body"].read() == b"42\n"
    finally:
        shutil.rmtree(volume)
