"""The configure stage: read the inputs manifest and lay out /data for the algorithm.

Status events: 20 at start, 30 then 40 on success (the algorithm container starts as configure
exits), 31 if the manifest or an input cannot be provisioned,
32 if the algorithm cannot (including a file that does not match the checksum the provider
pinned at start); the exit code is the status (0 for 30), so AWS Batch alone tells them apart.
The manifest holds decrypted URLs, so it is read from S3 here and never logged. configure.log is
a result the consumer reads: it names inputs by index and did only, never a host, bucket, path
or URL; the operator's details go to stderr only (logs.operator_log).

`/data/.c2d/ready` is written last, only when everything succeeded: without it the algorithm
container's command runs nothing (docs/internals.md, "Job volume").

A failed configure publishes its own log (configure.log, under jobs/<jobId>/logs/) and reports
it with its 31/32: the algorithm container depends on configure SUCCESS, so after a failure
neither it (whose image might ignore our command) nor publish, which depends on it, ever starts.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.filesources import Budget, Sources
from chalicelib.job_key import SealError, open_manifest
from chalicelib.netsafe import CHUNK_BYTES, FetchError, FetchPolicy

from .aws import s3_client
from .events import Emitter
from .layout import CONFIGURE_LOG, DIR_MODE, FILE_MODE, Layout, own, root_dir, write_file
from .logs import operator_log, stage_log
from .publish import PublishError, ResultStore, event_fields, upload_logs
from .settings import Settings, parse_s3_uri, s3_version

DID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._-]{0,199}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_MANIFEST_BYTES = 10 * 1024 * 1024
DATA_FAILED, ALGORITHM_FAILED = 31, 32

log = logging.getLogger(__name__)


class StageFailure(Exception):
    """Ends the stage with a status code and a short, secret-free reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def run(settings: Settings, emitter: Emitter) -> int:
    """Run the stage; the exit code is 0 on status 30, else the failure status (31, 32)."""
    layout = Layout(settings.data_dir)
    has_busybox = layout.busybox.is_file() or layout.install_busybox(settings.busybox_source)
    try:
        layout.create(settings.algorithm_uid)
    except OSError as exc:
        print(f"runner: the job volume cannot be prepared ({type(exc).__name__})", file=sys.stderr)
        emitter.emit(DATA_FAILED, "the job volume could not be prepared")
        return DATA_FAILED
    with stage_log(layout.logs / CONFIGURE_LOG) as logger:
        if not has_busybox:
            operator_log().error("no static busybox at %s: the algorithm container cannot start",
                                 settings.busybox_source)
        emitter.emit(20)
        if settings.notice:
            log.warning("note: %s", settings.notice)
        try:
            provision(settings, layout)
            layout.mark_ready()
        except StageFailure as failure:
            log.error("configure failed: %s", failure.reason)
            emitter.emit(failure.status, failure.reason, **publish_own_log(settings, layout, logger))
            return failure.status
        except Exception as exc:  # noqa: BLE001 - any crash must still end in a status event
            # Frames only: an exception's message may quote a decrypted URL.
            log.error("unexpected %s", type(exc).__name__)
            operator_log().error("unexpected %s\n%s", type(exc).__name__,
                                 "".join(traceback.format_tb(exc.__traceback__)))
            emitter.emit(DATA_FAILED, f"internal error ({type(exc).__name__})",
                         **publish_own_log(settings, layout, logger))
            return DATA_FAILED
        emitter.emit(30)
        # configure's exit is the algorithm's turn (dependsOn SUCCESS): the job shows 40 while it
        # runs, as clients expect, though Batch says STARTING until publish starts
        emitter.emit(40)
        return 0


def publish_own_log(settings: Settings, layout: Layout, logger: logging.Logger) -> dict[str, Any]:
    """After a failure, upload configure.log (publish will not run) and return the results
    fields of the failure event (publish.event_fields); none if the upload failed, whose reason
    goes to the operator only."""
    log.info("the algorithm was not run: the job's inputs were not provisioned")
    store = ResultStore(s3_client(settings.region), settings.results_bucket, settings.job_id)
    failures: list[str] = []
    results = upload_logs(store, layout.logs, logger, failures, only=(CONFIGURE_LOG,))
    if not failures:
        try:
            store.put_json("results.json", results)
        except PublishError as exc:
            failures.append(str(exc))
    if failures:
        operator_log().error("configure.log not published: %s", failures[0])
        return {}
    return event_fields(results, store)


def provision(settings: Settings, layout: Layout) -> None:
    """Download inputs then the algorithm, and write the files the algorithm stage reads."""
    manifest = load_manifest(settings)
    inputs, algorithm = manifest.get("inputs"), manifest.get("algorithm")
    if not isinstance(inputs, list) or not isinstance(algorithm, dict):
        raise StageFailure(DATA_FAILED, "manifest has no inputs or algorithm")
    region = settings.region
    sources = Sources(
        policy=FetchPolicy(allow_private=settings.allow_private, timeout=settings.fetch_timeout),
        budget=Budget(settings.max_input_bytes),
        ipfs_gateway=settings.ipfs_gateway, arweave_gateway=settings.arweave_gateway,
        forbidden_buckets=frozenset({parse_s3_uri(settings.manifest_uri)[0],
                                     settings.results_bucket}),
        s3_factory=lambda: s3_client(region))
    dids = [fetch_input(sources, layout, position, entry) for position, entry in enumerate(inputs)]
    fetch_algorithm(sources, layout, algorithm)
    custom = algorithm.get("algocustomdata")
    write_file(layout.custom_data, json.dumps(custom if custom is not None else {}).encode())
    write_file(layout.env_file, json.dumps({
        "DIDS": json.dumps(list(dict.fromkeys(dids))),
        "TRANSFORMATION_DID": str(algorithm.get("did") or ""),
        "ALGO": str(layout.algorithm.absolute()),
    }, indent=1).encode())


def load_manifest(settings: Settings) -> dict[str, Any]:
    """Read the version of the manifest the API wrote (MANIFEST_URI's versionId: what another
    job writes at the same key later is never read), open it with the job's key, and
    sanity-check it; any problem here is a provisioning failure."""
    bucket, key = parse_s3_uri(settings.manifest_uri)
    version = s3_version(settings.manifest_uri)
    try:
        obj = s3_client(settings.region).get_object(Bucket=bucket, Key=key, **({"VersionId": version} if version else {}))
        raw = obj["Body"].read(MAX_MANIFEST_BYTES + 1)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        raise StageFailure(31, f"manifest unavailable (s3 error {code})") from None
    except BotoCoreError as exc:
        raise StageFailure(31, f"manifest unavailable ({type(exc).__name__})") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise StageFailure(31, "manifest too large")
    try:
        manifest = open_manifest(settings.job_key, settings.job_id, raw)
    except SealError:
        raise StageFailure(31, "manifest does not open with this job's key") from None
    if not isinstance(manifest, dict) or manifest.get("jobId") != settings.job_id:
        raise StageFailure(31, "manifest does not belong to this job")
    return manifest


def fetch_input(sources: Sources, layout: Layout, position: int, entry: Any) -> str:
    """Download every file of input `position` to inputs/<did>/<index>; return the did."""
    did = entry.get("did") if isinstance(entry, dict) else None
    if not isinstance(did, str) or not DID_RE.match(did):
        raise StageFailure(DATA_FAILED, f"input {position} has an invalid did")
    name = f"input {position} ({did})"
    files = entry.get("files")
    if not isinstance(files, list) or not files:
        raise StageFailure(DATA_FAILED, f"{name} has no files")
    folder = layout.inputs / did
    root_dir(folder)
    for index, spec in enumerate(files):
        target = folder / str(index)
        size = _download(sources, spec, target, f"{name} file {index}", DATA_FAILED)
        own(target, 0, FILE_MODE)
        log.info("%s file %d (%s): %d bytes", name, index, sources.describe(spec), size)
    return did


def fetch_algorithm(sources: Sources, layout: Layout, algorithm: dict[str, Any]) -> Path:
    """Write the algorithm: its raw code, or else its first file, fetched like an input and
    placed only once it matches the sha256 the provider pinned at start (manifest
    `algorithm.checksums`, aligned with `files`): the data owner approved those bytes."""
    target = layout.algorithm
    rawcode = algorithm.get("rawcode")
    files = algorithm.get("files")
    if isinstance(rawcode, str) and rawcode:
        write_file(target, rawcode.encode("utf-8"))
        log.info("algorithm: raw code, %d bytes", target.stat().st_size)
    elif isinstance(files, list) and files:
        checksums = algorithm.get("checksums")
        if (not isinstance(checksums, list) or len(checksums) != len(files)
                or not all(isinstance(c, str) and SHA256_RE.match(c) for c in checksums)):
            raise StageFailure(ALGORITHM_FAILED, "algorithm files have no checksums")
        staged = layout.staging / "algorithm"
        size = _download(sources, files[0], staged, "algorithm file 0", ALGORITHM_FAILED)
        if _sha256(staged) != checksums[0]:
            staged.unlink()
            raise StageFailure(ALGORITHM_FAILED,
                               "algorithm file 0 does not match the checksum pinned at start")
        os.replace(staged, target)
        log.info("algorithm file 0 (%s): %d bytes, checksum verified",
                 sources.describe(files[0]), size)
    else:
        raise StageFailure(ALGORITHM_FAILED, "algorithm has neither rawcode nor files")
    own(target, 0, FILE_MODE)
    own(layout.transformations, 0, DIR_MODE)
    return target


def _download(sources: Sources, spec: Any, target: Path, name: str, status: int) -> int:
    """One file; a failure ends the stage with `status` and a consumer-safe reason, and the
    operator-only detail goes to stderr."""
    try:
        return sources.download(spec, target)
    except FetchError as exc:
        operator_log().error("%s (%s) failed: %s", name, sources.describe(spec), exc)
        raise StageFailure(status, f"{name}: {exc.public}") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()
