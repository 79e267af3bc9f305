"""The configure stage against moto S3 and the local HTTP server."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from chalicelib.job_key import detail_signed, new_job_key, seal_manifest
from runner_test_key import RUNNER_KEY
from runner import configure
from runner.__main__ import main

JOBS_BUCKET, DATA_BUCKET = "c2d-jobs", "c2d-data"  # created by conftest's s3 fixture

DID_A = "did:op:" + "a" * 64
DID_B = "did:op:" + "b" * 64
ALGO_DID = "did:op:" + "c" * 64
SECRET = "tok3n-s3cr3t"


def put_manifest(s3: Any, inputs: list[dict[str, Any]], algorithm: dict[str, Any],
                 job_id: str = "job-1", key: str = RUNNER_KEY) -> str:
    """The manifest as the API writes it: sealed with the job's key; returns its version id."""
    manifest = {"jobId": job_id, "owner": "0x" + "1" * 40, "bucket": JOBS_BUCKET,
                "prefix": f"jobs/{job_id}/", "inputs": inputs, "algorithm": algorithm}
    return s3.put_object(Bucket=JOBS_BUCKET, Key=f"jobs/{job_id}/manifest.json",
                         Body=seal_manifest(key, job_id, manifest))["VersionId"]


def url_file(server: Any, path: str, **extra: Any) -> dict[str, Any]:
    return {"type": "url", "url": server.url(f"{path}?token={SECRET}"), "method": "GET", **extra}


def algorithm_file(server: Any, path: str, content: bytes, **extra: Any) -> dict[str, Any]:
    """A manifest algorithm entry for one served file, with the checksum pinned at start."""
    server.files[path] = content
    return {"did": ALGO_DID, "files": [url_file(server, path)],
            "checksums": [hashlib.sha256(content).hexdigest()], **extra}


def assert_no_secrets(settings: Any, emitter: Any) -> None:
    """Neither the log nor any event may carry an input URL, its query or the S3 key."""
    log = (settings.data_dir / "logs" / "configure.log").read_text()
    events = json.dumps(emitter.details)
    for text in (log, events):
        assert SECRET not in text and "http://" not in text and "/files/" not in text
        assert "private/" not in text and "127.0.0.1" not in text and DATA_BUCKET not in text


class Stage:
    """Runs configure with private networks allowed (the test server is on loopback)."""

    def __init__(self, s3: Any, server: Any, make_settings: Any, emitter: Any) -> None:
        self.s3, self.server, self.make_settings, self.emitter = s3, server, make_settings, emitter
        self.settings: Any = None

    def __call__(self, inputs: list[dict[str, Any]], algorithm: dict[str, Any], **env: str) -> int:
        put_manifest(self.s3, inputs, algorithm)
        env = {"ALLOW_PRIVATE_NETWORKS": "1", "IPFS_GATEWAY": self.server.url(""),
               "ARWEAVE_GATEWAY": self.server.url("/ar/"), **env}
        self.settings = self.make_settings(**env)
        return configure.run(self.settings, self.emitter)


@pytest.fixture
def stage(s3, http_server, make_settings, emitter) -> Stage:
    return Stage(s3, http_server, make_settings, emitter)


def test_provisions_every_source_type(stage, s3, http_server, emitter) -> None:
    http_server.files.update({"/files/a.csv": b"a,b\n", "/ipfs/QmHash123": b"ipfs!",
                              "/ar/TxId_-9": b"arweave!", "/files/b.txt": b"bee"})
    s3.put_object(Bucket=DATA_BUCKET, Key="private/data.bin", Body=b"\x00\x01")
    inputs = [
        {"did": DID_A, "files": [
            url_file(http_server, "/files/a.csv", headers={"Authorization": SECRET}),
            {"type": "s3", "bucket": DATA_BUCKET, "objectKey": "private/data.bin"},
            {"type": "ipfs", "hash": "QmHash123"},
            {"type": "arweave", "transactionId": "TxId_-9"}]},
        {"did": DID_B, "files": [url_file(http_server, "/files/b.txt")]},
    ]
    algorithm = algorithm_file(http_server, "/files/algo.py", b"print(1)\n",
                               algocustomdata={"threshold": 3})
    assert stage(inputs, algorithm) == 0
    data = stage.settings.data_dir
    assert emitter.statuses == [20, 30, 40]  # 40: configure's exit is the algorithm's turn
    assert (data / "inputs" / DID_A / "0").read_bytes() == b"a,b\n"
    assert (data / "inputs" / DID_A / "1").read_bytes() == b"\x00\x01"
    assert (data / "inputs" / DID_A / "2").read_bytes() == b"ipfs!"
    assert (data / "inputs" / DID_A / "3").read_bytes() == b"arweave!"
    assert (data / "inputs" / DID_B / "0").read_bytes() == b"bee"
    assert (data / "transformations" / "algorithm").read_bytes() == b"print(1)\n"
    assert json.loads((data / "inputs" / "algoCustomData.json").read_text()) == {"threshold": 3}
    env = json.loads((data / "transformations" / "env.json").read_text())
    assert json.loads(env["DIDS"]) == [DID_A, DID_B]
    assert env["TRANSFORMATION_DID"] == ALGO_DID
    assert env["ALGO"] == str((data / "transformations" / "algorithm").absolute())
    assert (data / "outputs").is_dir() and (data / "logs").is_dir()
    log = (data / "logs" / "configure.log").read_text()
    assert f"input 0 ({DID_A}) file 0 (url): 4 bytes" in log
    assert f"input 0 ({DID_A}) file 1 (s3): 2 bytes" in log
    assert "algorithm file 0 (url): 9 bytes, checksum verified" in log
    assert (data / ".c2d" / "ready").is_file()
    assert (data / ".c2d" / "busybox").read_bytes() == Path(
        stage.settings.busybox_source).read_bytes()
    assert_no_secrets(stage.settings, emitter)


def test_rawcode_algorithm(stage, http_server) -> None:
    http_server.files["/files/a.csv"] = b"1"
    algorithm = {"did": "", "rawcode": "print('raw')", "files": []}
    assert stage([{"did": DID_A, "files": [url_file(http_server, "/files/a.csv")]}], algorithm) == 0
    data = stage.settings.data_dir
    assert (data / "transformations" / "algorithm").read_text() == "print('raw')"
    assert json.loads((data / "inputs" / "algoCustomData.json").read_text()) == {}
    assert json.loads((data / "transformations" / "env.json").read_text())["TRANSFORMATION_DID"] == ""


def test_the_dispatcher_s_notice_is_in_the_consumer_visible_log(stage, http_server) -> None:
    """C2D_NOTICE (e.g. the dispatcher's "network access was not granted on this environment")
    reaches configure.log as one line; without it configure says nothing of the kind."""
    from chalicelib.compute.job_placement import NETWORK_NOT_GRANTED

    http_server.files["/files/a.csv"] = b"1"
    inputs = [{"did": DID_A, "files": [url_file(http_server, "/files/a.csv")]}]
    assert stage(inputs, {"rawcode": "x"}, C2D_NOTICE=NETWORK_NOT_GRANTED + "\nforged line") == 0
    log = (stage.settings.data_dir / "logs" / "configure.log").read_text()
    assert f"note: {NETWORK_NOT_GRANTED} forged line" in log
    assert stage(inputs, {"rawcode": "x"}) == 0
    assert "not granted" not in (stage.settings.data_dir / "logs" / "configure.log").read_text()


def test_input_failure_is_31_without_secrets(stage, http_server, emitter) -> None:
    http_server.files["/files/a.csv"] = b"1"
    inputs = [{"did": DID_A, "files": [url_file(http_server, "/files/a.csv"),
                                       url_file(http_server, "/status/404")]}]
    assert stage(inputs, {"rawcode": "x"}) == 31
    assert emitter.statuses == [20, 31]
    assert emitter.details[-1]["reason"] == f"input 0 ({DID_A}) file 1: HTTP 404"
    assert not (stage.settings.data_dir / "inputs" / DID_A / "1").exists()
    assert not (stage.settings.data_dir / ".c2d" / "ready").exists()
    assert_no_secrets(stage.settings, emitter)


def test_a_failed_configure_publishes_its_own_log(stage, s3, http_server, emitter) -> None:
    """Issue 18, point 3: the algorithm depends on configure SUCCESS, so after a failure neither
    it nor publish starts; configure uploads configure.log itself and reports it with its 31."""
    inputs = [{"did": DID_A, "files": [url_file(http_server, "/status/404")]}]
    assert stage(inputs, {"rawcode": "x"}) == 31
    failure = emitter.details[-1]
    assert failure["status"] == 31 and failure["resultsKey"] == "jobs/job-1/results.json"
    (entry,) = failure["results"]
    assert (entry["filename"], entry["type"], entry["key"]) == ("configure.log", "configurationLog",
                                                                "jobs/job-1/logs/configure.log")
    body = s3.get_object(Bucket=JOBS_BUCKET, Key=entry["key"], VersionId=entry["versionId"])["Body"].read()
    assert f"input 0 ({DID_A}) file 0: HTTP 404".encode() in body and b"the algorithm was not run" in body
    assert SECRET.encode() not in body and b"127.0.0.1" not in body
    assert json.loads(s3.get_object(Bucket=JOBS_BUCKET, Key="jobs/job-1/results.json")["Body"].read()) == [entry]
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=JOBS_BUCKET, Prefix="jobs/job-1/")["Contents"]) == [
        "jobs/job-1/logs/configure.log", "jobs/job-1/manifest.json", "jobs/job-1/results.json"]


def test_private_input_refused_without_flag(stage, s3, http_server, emitter, capfd) -> None:
    """The consumer reads the reason and configure.log: they name the input by index and did,
    and say neither where the file is nor that its address is private (issue 10 #8, C10)."""
    http_server.files["/files/a.csv"] = b"1"
    s3.put_object(Bucket=DATA_BUCKET, Key="private/ok.bin", Body=b"ok")
    inputs = [{"did": DID_B, "files": [{"type": "s3", "bucket": DATA_BUCKET,
                                        "objectKey": "private/ok.bin"}]},
              {"did": DID_A, "files": [url_file(http_server, "/files/a.csv")]}]
    assert stage(inputs, {"rawcode": "x"}, ALLOW_PRIVATE_NETWORKS="0") == 31
    reason = emitter.details[-1]["reason"]
    assert emitter.statuses == [20, 31]
    assert reason == f"input 1 ({DID_A}) file 0: source refused by the provider's fetch policy"
    log = (stage.settings.data_dir / "logs" / "configure.log").read_text()
    assert f"input 1 ({DID_A}) file 0" in log
    for text in (reason, log):
        for leak in ("127.0.0.1", str(http_server.port), "private", "loopback", "address",
                     "http", "/files/", "a.csv", DATA_BUCKET, "ok.bin"):
            assert leak not in text, leak
    assert "address not allowed" in capfd.readouterr().err  # the operator still learns why
    assert http_server.requests == []


@pytest.mark.parametrize("algorithm", [
    {"did": ALGO_DID, "files": [{"type": "url", "url": "http://127.0.0.1:1/status/500"}]},
    {"did": ALGO_DID, "rawcode": "", "files": []},
    {"did": ALGO_DID, "files": [{"type": "ftp", "url": "ftp://x"}]},
])
def test_algorithm_failure_is_32(stage, http_server, emitter, algorithm) -> None:
    http_server.files["/files/a.csv"] = b"1"
    algorithm = {**algorithm, "checksums": ["0" * 64] * len(algorithm["files"])}
    assert stage([{"did": DID_A, "files": [url_file(http_server, "/files/a.csv")]}], algorithm) == 32
    assert emitter.statuses == [20, 32]
    assert emitter.details[-1]["reason"].startswith("algorithm")
    assert not (stage.settings.data_dir / ".c2d" / "ready").exists()


def test_total_input_budget(stage, s3, http_server, emitter) -> None:
    http_server.files["/files/a.csv"] = b"x" * 600
    s3.put_object(Bucket=DATA_BUCKET, Key="private/big", Body=b"y" * 600)
    inputs = [{"did": DID_A, "files": [url_file(http_server, "/files/a.csv"),
                                       {"type": "s3", "bucket": DATA_BUCKET,
                                        "objectKey": "private/big"}]}]
    assert stage(inputs, {"rawcode": "x"}, MAX_INPUT_BYTES="1000") == 31
    assert emitter.details[-1]["reason"] == f"input 0 ({DID_A}) file 1: exceeds the size limit"
    assert not (stage.settings.data_dir / "inputs" / DID_A / "1").exists()


def test_job_bucket_is_not_an_input(stage, emitter) -> None:
    """Another job's manifest holds decrypted URLs: a DDO must not be able to read it."""
    inputs = [{"did": DID_A, "files": [{"type": "s3", "bucket": JOBS_BUCKET,
                                        "objectKey": "jobs/other/manifest.json"}]}]
    assert stage(inputs, {"rawcode": "x"}) == 31
    assert emitter.details[-1]["reason"] == f"input 0 ({DID_A}) file 0: s3 bucket not allowed"


@pytest.mark.parametrize("spec", [{"type": "ipfs", "hash": "Qm1/../../admin"},
                                  {"type": "arweave", "transactionId": "../graphql"},
                                  {"type": "smartcontract", "address": "0x0"}])
def test_bad_file_entries_refused(stage, emitter, spec) -> None:
    assert stage([{"did": DID_A, "files": [spec]}], {"rawcode": "x"}) == 31
    assert emitter.statuses == [20, 31]


@pytest.mark.parametrize("did", ["../../etc", "did:op:x/../../y", ""])
def test_bad_did_refused(stage, emitter, did) -> None:
    assert stage([{"did": did, "files": [{"type": "ipfs", "hash": "Qm1"}]}], {"rawcode": "x"}) == 31
    assert emitter.statuses == [20, 31]
    assert emitter.details[-1]["reason"] == "input 0 has an invalid did"


def test_missing_or_foreign_manifest(s3, make_settings, emitter) -> None:
    settings = make_settings()
    assert configure.run(settings, emitter) == 31
    assert emitter.details[-1]["reason"] == "manifest unavailable (s3 error NoSuchKey)"
    put_manifest(s3, [], {"rawcode": "x"}, job_id="job-1")
    assert configure.run(make_settings(job_id="job-2", MANIFEST_URI=settings.manifest_uri),
                         emitter) == 31
    assert emitter.details[-1]["reason"] == "manifest does not open with this job's key"


def test_another_jobs_key_opens_nothing_and_a_later_write_is_not_read(s3, http_server, make_settings,
                                                                       emitter) -> None:
    """Issue 18, point 2. The manifest is read at the version the API wrote (MANIFEST_URI's
    versionId) and opened with the job's key: every job's credentials may write under jobs/,
    but a manifest another job wrote later at the same key is not what configure reads, and a
    manifest sealed with another key (or unsealed) opens nothing."""
    http_server.files["/files/a.csv"] = b"mine"
    version = put_manifest(s3, [{"did": DID_A, "files": [url_file(http_server, "/files/a.csv")]}], {"rawcode": "x"})
    uri = f"s3://{JOBS_BUCKET}/jobs/job-1/manifest.json?versionId={version}"
    http_server.files["/files/theirs"] = b"theirs"
    theirs = [{"did": DID_A, "files": [url_file(http_server, "/files/theirs")]}]
    put_manifest(s3, theirs, {"rawcode": "x"}, key=new_job_key())  # another job's write, later
    settings = make_settings(MANIFEST_URI=uri, ALLOW_PRIVATE_NETWORKS="1")
    assert configure.run(settings, emitter) == 0
    assert (settings.data_dir / "inputs" / DID_A / "0").read_bytes() == b"mine"
    # the latest version (theirs) is sealed with another key: it opens nothing
    latest = make_settings(ALLOW_PRIVATE_NETWORKS="1")
    assert configure.run(latest, emitter) == 31
    assert emitter.details[-1]["reason"] == "manifest does not open with this job's key"
    s3.put_object(Bucket=JOBS_BUCKET, Key="jobs/job-1/manifest.json", Body=json.dumps(
        {"jobId": "job-1", "inputs": theirs, "algorithm": {"rawcode": "x"}}).encode())  # unsealed
    assert configure.run(latest, emitter) == 31
    assert emitter.details[-1]["reason"] == "manifest does not open with this job's key"
    assert "/files/theirs" not in http_server.paths()


def test_cli_stdout_events(s3, http_server, tmp_path: Path, monkeypatch, capsys) -> None:
    http_server.files["/files/a.csv"] = b"1"
    put_manifest(s3, [{"did": DID_A, "files": [url_file(http_server, "/files/a.csv")]}],
                 {"rawcode": "x"})
    for name, value in {"JOB_ID": "job-1", "DATA_DIR": str(tmp_path / "d"),
                        "MANIFEST_URI": f"s3://{JOBS_BUCKET}/jobs/job-1/manifest.json",
                        "RUNNER_EVENTS": "stdout", "ALLOW_PRIVATE_NETWORKS": "true",
                        "BUSYBOX_SOURCE": str(tmp_path / "none"), "C2D_JOB_KEY": RUNNER_KEY}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RESULTS_BUCKET", raising=False)
    assert main(["configure"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(line.startswith("C2D-EVENT ") for line in lines)
    details = [json.loads(line.split(" ", 1)[1]) for line in lines]
    assert all(detail_signed(RUNNER_KEY, detail) and isinstance(detail.pop("at"), int) for detail in details)
    assert [{k: v for k, v in d.items() if k != "signature"} for d in details] == [
        {"jobId": "job-1", "status": 20}, {"jobId": "job-1", "status": 30}, {"jobId": "job-1", "status": 40}]
