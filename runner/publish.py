"""The publish stage: upload outputs and logs to s3://<bucket>/jobs/<jobId>/ and report results.

Status events: 60 at start (with `algorithm`, the algorithm container's StartedAt/FinishedAt as
the ECS agent recorded them: what the job is billed, runner.task_metadata), 70 with `results` on success, 62 with a reason if an upload fails
(the exit code is 0 or 62). The outputs folder was written by untrusted code, so only regular
files inside it are uploaded, each opened with O_NOFOLLOW: symlinks, devices, FIFOs and names
that could escape the folder are skipped with a note in publish.log. A name with a Unicode line
or paragraph separator, control or format character (categories Zl, Zp, Cc, Cf, and the lone
surrogates of undecodable bytes) is published under a safe name (each such character becomes
"_"). Results are only ever keys under jobs/<jobId>/outputs/ and jobs/<jobId>/logs/. The
algorithm's log is published up to MAX_OUTPUT_BYTES, like its outputs (it writes both).

Each result names the S3 version this stage wrote (`versionId`, from S3's own answer to the
upload) and the sha256 of the bytes it sent: every job's credentials may write under `jobs/`,
so the provider serves exactly that version, and what another job writes at the same key later
is never what the consumer downloads (issue 18, point 2).
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import stat
import threading
import unicodedata
from pathlib import Path
from typing import Any, BinaryIO

from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError

from .aws import s3_client
from .events import Emitter, detail_size
from .layout import ALGORITHM_LOG, CONFIGURE_LOG, PUBLISH_LOG, Layout
from .logs import flush, stage_log
from .settings import Settings
from .task_metadata import algorithm_run

LOG_TYPES = {ALGORITHM_LOG: "algorithmLog", CONFIGURE_LOG: "configurationLog",
             PUBLISH_LOG: "publishLog"}
MAX_OUTPUT_FILES = 10_000
MAX_OUTPUT_ENTRIES = 50_000  # files, folders and skipped entries walked in outputs/
EVENT_RESULTS_BYTES = 150_000  # of EventBridge's 256 KB per event
UNSAFE_CATEGORIES = frozenset({"Zl", "Zp", "Cc", "Cf", "Cs"})
UPLOAD_FAILED = 62
SSE = {"ServerSideEncryption": "AES256"}

log = logging.getLogger(__name__)
Result = dict[str, Any]


class PublishError(Exception):
    """Publishing failed; the message is the 62 event's reason."""


def run(settings: Settings, emitter: Emitter) -> int:
    """Run the stage; the exit code is 0 on status 70, 62 otherwise."""
    layout = Layout(settings.data_dir)
    with stage_log(layout.logs / PUBLISH_LOG) as logger:
        run = algorithm_run(settings.task_metadata_uri)
        emitter.emit(60, **({"algorithm": run} if run else {}))
        store = ResultStore(s3_client(settings.region), settings.results_bucket, settings.job_id)
        results: list[Result] = []
        failures: list[str] = []
        try:
            for path, name in collect_outputs(layout.outputs, settings.max_output_bytes):
                result = store.upload(layout.outputs / path, name, "output",
                                      within=layout.outputs)
                if result:
                    results.append(result)
        except PublishError as exc:
            failures.append(str(exc))
        results += upload_logs(store, layout.logs, logger, failures, settings.max_output_bytes)
        try:
            store.put_json("results.json", results)
        except PublishError as exc:
            failures.append(str(exc))
        fields = event_fields(results, store)
        if failures:
            emitter.emit(UPLOAD_FAILED, failures[0][:300], **fields)
            return UPLOAD_FAILED
        emitter.emit(70, **fields)
        return 0


class ResultStore:
    """Writes a job's results under jobs/<jobId>/ with server-side encryption."""

    def __init__(self, s3: Any, bucket: str, job_id: str) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.prefix = f"jobs/{job_id}/"
        self._versions = WrittenVersions(s3)

    def upload(self, path: Path, name: str, kind: str, within: Path | None = None,
               limit: int | None = None) -> Result | None:
        """Upload one file if it is a regular file (not followed through a symlink, and inside
        `within` if given), at most its first `limit` bytes; None if it was skipped."""
        handle = open_regular(path, within)
        if handle is None:
            log.warning("skipped %r: not a regular file inside its folder", name)
            return None
        key = self.prefix + ("outputs/" if kind == "output" else "logs/") + relative_key(name)
        with handle:
            size = os.fstat(handle.fileno()).st_size
            if limit is not None and size > limit:
                log.warning("%s is %d bytes: only its first %d are published", name, size, limit)
                size = limit
            body = _Reader(handle, size)
            try:
                self.s3.upload_fileobj(body, self.bucket, key, ExtraArgs=SSE)
            except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
                raise PublishError(f"upload of {name} failed ({_error_code(exc)})") from None
        log.info("uploaded %s (%s, %d bytes)", name, kind, body.read_bytes)
        result = {"filename": name, "filesize": body.read_bytes, "type": kind, "key": key,
                  "sha256": body.sha256.hexdigest()}
        version = self._versions.pop(key)
        if version:
            result["versionId"] = version
        return result

    def put_json(self, name: str, value: Any) -> str:
        """Write a small JSON document next to the results (the full results list)."""
        key = self.prefix + name
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=json.dumps(value).encode(),
                               ContentType="application/json", **SSE)
        except (ClientError, BotoCoreError) as exc:
            raise PublishError(f"writing {name} failed ({_error_code(exc)})") from None
        return key


def open_regular(path: Path, within: Path | None = None) -> BinaryIO | None:
    """Open path for reading only if it is a regular file reached without symlinks.

    O_NOFOLLOW refuses a symlink as the last component, the realpath check refuses symlinked
    folders on the way, and O_NONBLOCK keeps a FIFO from blocking the open."""
    if within is not None:
        real, root = os.path.realpath(path), os.path.realpath(within)
        if os.path.commonpath([real, root]) != root:
            return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb")


def relative_key(name: str) -> str:
    """Validate a relative result name as an S3 key suffix: no absolute paths, no '.' or '..'
    parts, no empty parts, no line/paragraph separators, control or format characters, valid
    UTF-8."""
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError("result name escapes its folder")
    if any(unicodedata.category(c) in UNSAFE_CATEGORIES for c in name):
        raise ValueError("result name has control, format or separator characters")
    name.encode("utf-8")  # UnicodeEncodeError (a ValueError) for undecodable file names
    return name


def safe_name(name: str) -> str:
    """name with every character of an unsafe category (Zl, Zp, Cc, Cf, Cs) replaced by "_":
    a U+2028 or U+0085 in a name would break every line-based reader of the results."""
    return "".join("_" if unicodedata.category(c) in UNSAFE_CATEGORIES else c for c in name)


def collect_outputs(root: Path, max_bytes: int) -> list[tuple[str, str]]:
    """(path, published name) of the regular files under root, walked without following
    symlinks, names made safe (a renamed file that meets an existing name gets "~<n>");
    fails if they are too many or too big together, or if the walk meets too many entries. A
    folder that cannot be read (the algorithm nested it beyond PATH_MAX, say) is skipped: it must
    not stop publish from uploading the logs and sending its status."""
    if root.is_symlink():
        raise PublishError("outputs folder is a symlink")
    if not root.is_dir():
        return []
    found: list[str] = []
    total = seen = 0
    pending = [""]
    while pending:
        prefix = pending.pop()
        try:
            with os.scandir(root / prefix if prefix else root) as entries:
                for entry in entries:  # counted as read: a folder of millions must not fill memory
                    seen += 1
                    if seen > MAX_OUTPUT_ENTRIES:
                        raise PublishError(f"more than {MAX_OUTPUT_ENTRIES} output files and folders")
                    name = prefix + entry.name
                    if entry.is_symlink():
                        log.warning("skipped %r: symlink", name)
                    elif entry.is_dir(follow_symlinks=False):
                        pending.append(name + "/")
                    elif not entry.is_file(follow_symlinks=False):
                        log.warning("skipped %r: not a regular file", name)
                    else:
                        total += entry.stat(follow_symlinks=False).st_size
                        found.append(name)
        except OSError as exc:  # e.g. nested beyond PATH_MAX: skip it, publish the rest and the logs
            log.warning("skipped folder %r: it cannot be read (%s)", prefix, errno.errorcode.get(exc.errno, "?"))
        if len(found) > MAX_OUTPUT_FILES:
            raise PublishError(f"more than {MAX_OUTPUT_FILES} output files")
    if total > max_bytes:
        raise PublishError("outputs exceed the size limit")
    return _published_names(sorted(found))


def _published_names(paths: list[str]) -> list[tuple[str, str]]:
    """Pair each path with its safe, unique published name; a name still refused by
    relative_key after renaming is skipped."""
    taken = {p for p in paths if safe_name(p) == p}
    pairs: list[tuple[str, str]] = []
    for path in paths:
        name = safe_name(path)
        if name != path:
            base, count = name, 1
            while name in taken:
                name, count = f"{base}~{count}", count + 1
            taken.add(name)
            log.warning("renamed %r to %r: unsafe characters in the name", path, name)
        if not _is_safe(name):
            log.warning("skipped %r: unsafe file name", path)
            continue
        pairs.append((path, name))
    return pairs


def upload_logs(store: ResultStore, folder: Path, logger: logging.Logger,
                failures: list[str], max_bytes: int | None = None,
                only: tuple[str, ...] = tuple(LOG_TYPES)) -> list[Result]:
    """Upload the known logs (`only` these: a failed configure publishes its own), the last of
    `only` being the calling stage's own log, flushed and uploaded last so it holds the stage's
    whole story; failures are collected, not raised, so one missing log does not hide the
    others. The algorithm writes its own log, so it is cut at max_bytes like its outputs: else
    it would be a way around the outputs' limit."""
    results: list[Result] = []
    for name, kind in LOG_TYPES.items():
        path = folder / name
        if name not in only or not os.path.lexists(path):
            continue
        if name == only[-1]:
            log.info("uploading %s", name)
            flush(logger)
        try:
            result = store.upload(path, name, kind, within=folder,
                                  limit=max_bytes if name == ALGORITHM_LOG else None)
        except PublishError as exc:
            failures.append(str(exc))
            continue
        if result:
            results.append(result)
    return results


def event_fields(results: list[Result], store: ResultStore) -> dict[str, Any]:
    """The results part of the 70/62 event, cut to fit EventBridge: logs always, then as many
    outputs as fit. The full list is always in results.json (`resultsKey`)."""
    outputs = [r for r in results if r["type"] == "output"]
    logs = [r for r in results if r["type"] != "output"]
    room = EVENT_RESULTS_BYTES - detail_size({"results": logs})
    kept: list[Result] = []
    for result in outputs:
        room -= detail_size(result) + 1
        if room < 0:
            break
        kept.append(result)
    return {"results": kept + logs, "resultsTruncated": len(kept) < len(outputs),
            "resultsKey": store.prefix + "results.json", "bucket": store.bucket}


class _Reader:
    """At most the first `limit` bytes of a file, as the file object upload_fileobj reads, and
    their sha256. It has no seek: s3transfer then reads it once, in order (retries resend the
    part it buffered), so the digest is of exactly the bytes uploaded."""

    def __init__(self, handle: BinaryIO, limit: int) -> None:
        self._handle, self._left = handle, limit
        self.sha256 = hashlib.sha256()
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        size = self._left if size is None or size < 0 else min(size, self._left)
        data = self._handle.read(size) if size else b""
        self._left -= len(data)
        self.read_bytes += len(data)
        self.sha256.update(data)
        return data


class WrittenVersions:
    """The VersionId S3 answered for each key this client wrote (PutObject, or the
    CompleteMultipartUpload of a multipart upload). s3transfer's upload_fileobj returns nothing,
    and asking S3 afterwards which version is the latest could name another job's write, so the
    answer is taken from the upload's own responses, through the client's event hooks (the key
    travels from the request's parameters to its response in the call's context)."""

    CONTEXT_KEY = "c2d_written_key"

    def __init__(self, s3: Any) -> None:
        self._versions: dict[str, str] = {}
        self._lock = threading.Lock()
        events = getattr(getattr(s3, "meta", None), "events", None)
        if events is None:
            return
        for operation in ("PutObject", "CompleteMultipartUpload"):
            events.register(f"provide-client-params.s3.{operation}", self._remember_key)
            events.register(f"after-call.s3.{operation}", self._remember_version)

    def _remember_key(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context[self.CONTEXT_KEY] = params.get("Key")

    def _remember_version(self, http_response: Any, parsed: Any, context: dict[str, Any], **_: Any) -> None:
        key = context.get(self.CONTEXT_KEY)
        version = parsed.get("VersionId") if isinstance(parsed, dict) else None
        if key and isinstance(version, str) and version != "null" and 200 <= getattr(http_response, "status_code", 0) < 300:
            with self._lock:
                self._versions[key] = version

    def pop(self, key: str) -> str | None:
        with self._lock:
            return self._versions.pop(key, None)


def _is_safe(name: str) -> bool:
    try:
        relative_key(name)
    except ValueError:
        return False
    return True


def _error_code(exc: Exception) -> str:
    """A short cause without bucket or key names."""
    cause = exc if isinstance(exc, ClientError) else exc.__cause__ or exc.__context__
    if isinstance(cause, ClientError):
        return str(cause.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__
