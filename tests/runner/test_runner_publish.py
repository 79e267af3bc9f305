"""The publish stage against moto S3."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from runner import publish
from runner.events import MAX_DETAIL_BYTES, detail_size
from runner.publish import ResultStore, collect_outputs, event_fields, relative_key

JOBS_BUCKET = "c2d-jobs"  # created by conftest's s3 fixture


def keys(s3: Any) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=JOBS_BUCKET).get("Contents", []))


@pytest.fixture
def data(make_settings) -> Path:
    root = make_settings().data_dir
    (root / "outputs" / "sub").mkdir(parents=True)
    (root / "logs").mkdir()
    (root / "outputs" / "out.txt").write_text("hello")
    (root / "outputs" / "sub" / "deep.json").write_text("{}")
    (root / "logs" / "algorithm.log").write_text("algo ran\n")
    (root / "logs" / "configure.log").write_text("configured\n")
    return root


def test_uploads_outputs_and_logs(s3, data, make_settings, emitter) -> None:
    assert publish.run(make_settings(), emitter) == 0
    assert emitter.statuses == [60, 70]
    final = emitter.details[-1]
    summary = [(r["filename"], r["type"], r["key"]) for r in final["results"]]
    assert summary == [
        ("out.txt", "output", "jobs/job-1/outputs/out.txt"),
        ("sub/deep.json", "output", "jobs/job-1/outputs/sub/deep.json"),
        ("algorithm.log", "algorithmLog", "jobs/job-1/logs/algorithm.log"),
        ("configure.log", "configurationLog", "jobs/job-1/logs/configure.log"),
        ("publish.log", "publishLog", "jobs/job-1/logs/publish.log"),
    ]
    assert final["results"][0]["filesize"] == 5
    assert final["resultsKey"] == "jobs/job-1/results.json" and not final["resultsTruncated"]
    assert final["bucket"] == JOBS_BUCKET
    for result in final["results"]:
        head = s3.head_object(Bucket=JOBS_BUCKET, Key=result["key"])
        assert head["ServerSideEncryption"] == "AES256"
        assert head["ContentLength"] == result["filesize"]
    stored = s3.get_object(Bucket=JOBS_BUCKET, Key="jobs/job-1/results.json")
    assert stored["ServerSideEncryption"] == "AES256"
    assert json.loads(stored["Body"].read()) == final["results"]
    publish_log = s3.get_object(Bucket=JOBS_BUCKET, Key="jobs/job-1/logs/publish.log")
    assert b"uploaded out.txt" in publish_log["Body"].read()


def test_each_result_names_the_version_it_wrote_and_its_sha256(s3, data, make_settings, emitter) -> None:
    """Issue 18, point 2: every job's credentials may write under jobs/, so each result names the
    S3 version publish wrote (S3's own answer, single and multipart uploads alike) and the
    sha256 of the bytes sent; another write at the same key afterwards changes neither."""
    import hashlib

    big = os.urandom(9 * 1024 * 1024)  # above s3transfer's 8 MiB multipart threshold
    (data / "outputs" / "big.bin").write_bytes(big)
    assert publish.run(make_settings(), emitter) == 0
    results = {r["filename"]: r for r in emitter.details[-1]["results"]}
    s3.put_object(Bucket=JOBS_BUCKET, Key="jobs/job-1/outputs/big.bin", Body=b"another job's bytes")
    s3.put_object(Bucket=JOBS_BUCKET, Key="jobs/job-1/outputs/out.txt", Body=b"another job's bytes")
    for name, expected in (("big.bin", big), ("out.txt", b"hello")):
        result = results[name]
        assert result["sha256"] == hashlib.sha256(expected).hexdigest() and result["filesize"] == len(expected)
        body = s3.get_object(Bucket=JOBS_BUCKET, Key=result["key"], VersionId=result["versionId"])["Body"].read()
        assert body == expected
    versions = {r["versionId"] for r in results.values()}
    assert len(versions) == len(results) and None not in versions
    # an algorithm log cut at MAX_OUTPUT_BYTES: the digest is of what was sent
    (data / "outputs" / "big.bin").unlink()
    (data / "logs" / "algorithm.log").write_bytes(b"x" * 40 + b"y" * 60)
    assert publish.run(make_settings(MAX_OUTPUT_BYTES="40"), emitter) == 0
    log = next(r for r in emitter.details[-1]["results"] if r["type"] == "algorithmLog")
    assert log["filesize"] == 40 and log["sha256"] == hashlib.sha256(b"x" * 40).hexdigest()


def test_symlinks_and_special_files_are_not_uploaded(s3, data, make_settings, emitter) -> None:
    outputs = data / "outputs"
    (outputs / "passwd").symlink_to("/etc/passwd")
    (outputs / "etc").symlink_to("/etc", target_is_directory=True)
    (outputs / "sub" / "up").symlink_to("../../logs")
    os.mkfifo(outputs / "pipe")
    (data / "logs" / "algorithm.log").unlink()
    (data / "logs" / "algorithm.log").symlink_to("/etc/passwd")
    assert publish.run(make_settings(), emitter) == 0
    assert keys(s3) == ["jobs/job-1/logs/configure.log", "jobs/job-1/logs/publish.log",
                        "jobs/job-1/outputs/out.txt", "jobs/job-1/outputs/sub/deep.json",
                        "jobs/job-1/results.json"]
    log = (data / "logs" / "publish.log").read_text()
    assert "skipped 'passwd': symlink" in log and "skipped 'pipe'" in log
    assert "skipped 'etc': symlink" in log and "skipped 'sub/up': symlink" in log


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../b", "a//b", ".", "a/./b",
                                  "x\ny", "\udcff", "a\u2028b", "a\u2029b", "a\x85b",
                                  "a\u200bb", "a\u202eb", "a\ufeffb", "a\x7fb"])
def test_result_names_cannot_escape(name: str) -> None:
    with pytest.raises(ValueError):
        relative_key(name)


def test_upload_refuses_paths_outside_folder(data: Path) -> None:
    """Even if a name with '..' reached upload, the file outside outputs/ would not be read."""
    secret = data / "secret.txt"
    secret.write_text("top secret")
    store = ResultStore(s3=None, bucket=JOBS_BUCKET, job_id="job-1")
    assert store.upload(data / "outputs" / ".." / "secret.txt", "x", "output",
                        within=data / "outputs") is None


def test_outputs_folder_symlink_refused(s3, make_settings, emitter) -> None:
    root = make_settings().data_dir
    root.mkdir()
    (root / "outputs").symlink_to("/etc", target_is_directory=True)
    assert publish.run(make_settings(), emitter) == 62
    assert emitter.statuses == [60, 62]
    assert emitter.details[-1]["reason"] == "outputs folder is a symlink"


def test_upload_failure_is_62(aws, data, make_settings, emitter) -> None:
    """No bucket: every upload fails with NoSuchBucket."""
    assert publish.run(make_settings(), emitter) == 62
    assert emitter.statuses == [60, 62]
    assert emitter.details[-1]["reason"] == "upload of out.txt failed (NoSuchBucket)"


def test_output_size_cap_still_uploads_logs(s3, data, make_settings, emitter) -> None:
    assert publish.run(make_settings(MAX_OUTPUT_BYTES="6"), emitter) == 62
    assert emitter.details[-1]["reason"] == "outputs exceed the size limit"
    assert [r["type"] for r in emitter.details[-1]["results"]] == [
        "algorithmLog", "configurationLog", "publishLog"]
    assert "jobs/job-1/outputs/out.txt" not in keys(s3)


def test_event_results_fit_eventbridge() -> None:
    store = ResultStore(s3=None, bucket=JOBS_BUCKET, job_id="job-1")
    results = [{"filename": f"{'n' * 200}{i}.csv", "filesize": i, "type": "output",
                "key": f"jobs/job-1/outputs/{'n' * 200}{i}.csv"} for i in range(5000)]
    results.append({"filename": "algorithm.log", "filesize": 1, "type": "algorithmLog",
                    "key": "jobs/job-1/logs/algorithm.log"})
    fields = event_fields(results, store)
    assert fields["resultsTruncated"] is True
    assert fields["results"][-1]["type"] == "algorithmLog"
    assert 100 < len(fields["results"]) < 5000
    assert detail_size({"jobId": "job-1", "status": 70, **fields}) < MAX_DETAIL_BYTES


def test_collect_outputs_limits(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("12345")
    assert collect_outputs(tmp_path, 5) == [("a", "a")]
    with pytest.raises(publish.PublishError):
        collect_outputs(tmp_path, 4)
    assert collect_outputs(tmp_path / "missing", 5) == []


def _nest(folder: Path, depth: int) -> None:
    """As a hostile algorithm would: mkdir + openat one level at a time, so no call ever names the
    whole (longer than PATH_MAX) path."""
    fd = os.open(folder, os.O_RDONLY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        inner = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(fd)


def test_outputs_nested_beyond_path_max_still_publish_the_rest_and_the_logs(s3, data, make_settings, emitter) -> None:
    _nest(data / "outputs", 2100)  # 2 bytes a level: past Linux's 4096-byte PATH_MAX
    assert publish.run(make_settings(), emitter) == 0
    assert emitter.statuses == [60, 70]
    assert {"jobs/job-1/outputs/out.txt", "jobs/job-1/logs/algorithm.log",
            "jobs/job-1/logs/publish.log"} <= set(keys(s3))
    publish_log = s3.get_object(Bucket=JOBS_BUCKET, Key="jobs/job-1/logs/publish.log")["Body"].read()
    assert b"cannot be read (ENAMETOOLONG)" in publish_log


def test_too_many_entries_fail_early_but_the_logs_are_published(s3, data, make_settings, emitter,
                                                                 monkeypatch) -> None:
    monkeypatch.setattr(publish, "MAX_OUTPUT_ENTRIES", 50)
    for index in range(60):  # empty folders: no file counts, only the walk's entries do
        (data / "outputs" / f"empty{index}").mkdir()
    assert publish.run(make_settings(), emitter) == 62
    assert emitter.statuses == [60, 62]
    assert "more than 50 output files and folders" in emitter.details[-1]["reason"]
    assert "jobs/job-1/logs/publish.log" in keys(s3)
    assert not any(k.startswith("jobs/job-1/outputs/") for k in keys(s3))


def test_the_algorithm_log_is_cut_at_the_outputs_limit(s3, data, make_settings, emitter) -> None:
    """The algorithm writes its own log: it must not be a way around MAX_OUTPUT_BYTES."""
    (data / "logs" / "algorithm.log").write_bytes(b"y" * 5000)
    assert publish.run(make_settings(MAX_OUTPUT_BYTES="1000"), emitter) == 0
    stored = s3.get_object(Bucket=JOBS_BUCKET, Key="jobs/job-1/logs/algorithm.log")["Body"].read()
    assert stored == b"y" * 1000
    entry = [r for r in emitter.details[-1]["results"] if r["type"] == "algorithmLog"][0]
    assert entry["filesize"] == 1000
    publish_log = s3.get_object(Bucket=JOBS_BUCKET, Key="jobs/job-1/logs/publish.log")["Body"].read()
    assert b"algorithm.log is 5000 bytes: only its first 1000 are published" in publish_log


def task_metadata(algorithm_started: str, algorithm_finished: str, exit_code: int = 0) -> dict[str, Any]:
    """The ECS agent's task metadata v4 `/task` answer for a job's task (the fields of
    amazon-ecs-agent's v4 TaskResponse/ContainerResponse; Go writes times with nanoseconds)."""
    def container(name: str, started: str, finished: str, code: int, image: str) -> dict[str, Any]:
        return {"DockerId": name + "0" * 56, "Name": name, "DockerName": f"ecs-c2d-algo-1-{name}-a1b2c3",
                "Image": image, "ImageID": "sha256:" + "0" * 64, "Labels": {}, "DesiredStatus": "STOPPED",
                "KnownStatus": "STOPPED", "ExitCode": code, "Limits": {"CPU": 1024, "Memory": 512},
                "CreatedAt": started, "StartedAt": started, "FinishedAt": finished, "Type": "NORMAL",
                "LogDriver": "awslogs", "Networks": [{"NetworkMode": "host", "IPv4Addresses": [""]}],
                "ContainerARN": f"arn:aws:ecs:us-east-1:123456789012:container/c/{name}"}

    return {"Cluster": "arn:aws:ecs:us-east-1:123456789012:cluster/AWSBatch-ce", "TaskARN":
            "arn:aws:ecs:us-east-1:123456789012:task/AWSBatch-ce/8f3c2a1b0d9e4f5a6b7c8d9e0f1a2b3c",
            "Family": "c2d-algo-1", "Revision": "1", "DesiredStatus": "RUNNING", "KnownStatus": "RUNNING",
            "Limits": {"CPU": 4, "Memory": 5120}, "PullStartedAt": "2026-05-01T10:00:00.1Z",
            "AvailabilityZone": "us-east-1a", "LaunchType": "EC2", "Containers": [
                container("configure", "2026-05-01T10:00:01.5Z", "2026-05-01T10:00:09.25Z", 0, "runner"),
                container("algorithm", algorithm_started, algorithm_finished, exit_code, "python@sha256:ab"),
                container("publish", "2026-05-01T10:03:31.1Z", "0001-01-01T00:00:00Z", 0, "runner")]}


def test_publish_reports_the_algorithm_containers_own_times(s3, data, make_settings, emitter, http_server) -> None:
    """Issue 18, point 3: publish (root, after the algorithm container exited) reads the task
    metadata endpoint v4 and reports the algorithm container's StartedAt/FinishedAt, Docker's own
    times that no image can change, in its 60: what the job is billed (a 200 s algorithm, 200 s)."""
    from datetime import datetime

    http_server.files["/v4/abc/task"] = json.dumps(task_metadata(
        "2026-05-01T10:00:10.123456789Z", "2026-05-01T10:03:30.123456789Z", 3)).encode()
    settings = make_settings(ECS_CONTAINER_METADATA_URI_V4=http_server.url("/v4/abc"))
    assert publish.run(settings, emitter) == 0
    started = emitter.details[0]
    assert started["status"] == 60
    expected = datetime.fromisoformat("2026-05-01T10:00:10.123456+00:00").timestamp()
    assert started["algorithm"] == {"startedAt": round(expected, 3), "finishedAt": round(expected + 200, 3),
                                    "exitCode": 3}
    # no endpoint, one that does not answer, or an algorithm that never ran: nothing is claimed
    for uri in ("", http_server.url("/status/500"), "ftp://x/"):
        emitter.details.clear()
        assert publish.run(make_settings(ECS_CONTAINER_METADATA_URI_V4=uri), emitter) == 0
        assert "algorithm" not in emitter.details[0]
    http_server.files["/v4/never/task"] = json.dumps(task_metadata("", "")).encode()
    emitter.details.clear()
    assert publish.run(make_settings(ECS_CONTAINER_METADATA_URI_V4=http_server.url("/v4/never")), emitter) == 0
    assert "algorithm" not in emitter.details[0]
