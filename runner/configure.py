"""The configure stage: read the inputs manifest and lay out /data for the algorithm.

Status events: 20 at start, 30 on success, 31 if the manifest or an input cannot be provisioned,
32 if the algorithm cannot. The manifest holds decrypted URLs, so it is read from S3 here and
never logged: the log names inputs by did, index and host only.
"""
from __future__ import annotations

import json
import logging
import re
import traceback
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.filesources import Budget, Sources
from chalicelib.netsafe import FetchError, FetchPolicy

from .aws import s3_client
from .events import Emitter
from .layout import CONFIGURE_LOG, Layout
from .logs import stage_log
from .settings import Settings, parse_s3_uri

DID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._-]{0,199}$")
MAX_MANIFEST_BYTES = 10 * 1024 * 1024

log = logging.getLogger(__name__)


class StageFailure(Exception):
    """Ends the stage with a status code and a short, secret-free reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def run(settings: Settings, emitter: Emitter) -> int:
    """Run the stage; the exit code is 0 on status 30, 1 otherwise."""
    layout = Layout(settings.data_dir)
    layout.create()
    with stage_log(layout.logs / CONFIGURE_LOG):
        emitter.emit(20)
        try:
            provision(settings, layout)
        except StageFailure as failure:
            log.error("configure failed: %s", failure.reason)
            emitter.emit(failure.status, failure.reason)
            return 1
        except Exception as exc:  # noqa: BLE001 - any crash must still end in a status event
            # Frames only: an exception's message may quote a decrypted URL.
            log.error("unexpected %s\n%s", type(exc).__name__,
                      "".join(traceback.format_tb(exc.__traceback__)))
            emitter.emit(31, f"internal error ({type(exc).__name__})")
            return 1
        emitter.emit(30)
        return 0


def provision(settings: Settings, layout: Layout) -> None:
    """Download inputs then the algorithm, and write the files the algorithm stage reads."""
    manifest = load_manifest(settings)
    inputs, algorithm = manifest.get("inputs"), manifest.get("algorithm")
    if not isinstance(inputs, list) or not isinstance(algorithm, dict):
        raise StageFailure(31, "manifest has no inputs or algorithm")
    sources = Sources(
        policy=FetchPolicy(allow_private=settings.allow_private, timeout=settings.fetch_timeout),
        budget=Budget(settings.max_input_bytes),
        ipfs_gateway=settings.ipfs_gateway, arweave_gateway=settings.arweave_gateway,
        forbidden_buckets=frozenset({parse_s3_uri(settings.manifest_uri)[0],
                                     settings.results_bucket}),
        s3_factory=s3_client)
    dids = [fetch_input(sources, layout, entry) for entry in inputs]
    fetch_algorithm(sources, layout, algorithm)
    custom = algorithm.get("algocustomdata")
    layout.custom_data.write_text(json.dumps(custom if custom is not None else {}))
    layout.env_file.write_text(json.dumps({
        "DIDS": json.dumps(list(dict.fromkeys(dids))),
        "TRANSFORMATION_DID": str(algorithm.get("did") or ""),
        "ALGO": str(layout.algorithm.absolute()),
    }, indent=1))


def load_manifest(settings: Settings) -> dict[str, Any]:
    """Read and sanity-check the manifest; any problem here is a provisioning failure."""
    bucket, key = parse_s3_uri(settings.manifest_uri)
    try:
        obj = s3_client().get_object(Bucket=bucket, Key=key)
        raw = obj["Body"].read(MAX_MANIFEST_BYTES + 1)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        raise StageFailure(31, f"manifest unavailable (s3 error {code})") from None
    except BotoCoreError as exc:
        raise StageFailure(31, f"manifest unavailable ({type(exc).__name__})") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise StageFailure(31, "manifest too large")
    try:
        manifest = json.loads(raw)
    except ValueError:
        raise StageFailure(31, "manifest is not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("jobId") != settings.job_id:
        raise StageFailure(31, "manifest does not belong to this job")
    return manifest


def fetch_input(sources: Sources, layout: Layout, entry: Any) -> str:
    """Download every file of one input to inputs/<did>/<index>; return the did."""
    did = entry.get("did") if isinstance(entry, dict) else None
    if not isinstance(did, str) or not DID_RE.match(did):
        raise StageFailure(31, "manifest input has an invalid did")
    files = entry.get("files")
    if not isinstance(files, list) or not files:
        raise StageFailure(31, f"input {did} has no files")
    folder = layout.inputs / did
    folder.mkdir(parents=True, exist_ok=True)
    for index, spec in enumerate(files):
        origin = sources.describe(spec)
        try:
            size = sources.download(spec, folder / str(index))
        except FetchError as exc:
            log.error("input %s #%d (%s) failed: %s", did, index, origin, exc)
            raise StageFailure(31, f"input {index} of {did}: {exc}") from None
        log.info("input %s #%d (%s): %d bytes", did, index, origin, size)
    return did


def fetch_algorithm(sources: Sources, layout: Layout, algorithm: dict[str, Any]) -> Path:
    """Write the algorithm: its raw code, or else its first file fetched like an input."""
    target = layout.algorithm
    rawcode = algorithm.get("rawcode")
    files = algorithm.get("files")
    if isinstance(rawcode, str) and rawcode:
        target.write_text(rawcode, encoding="utf-8")
        log.info("algorithm: raw code, %d bytes", target.stat().st_size)
    elif isinstance(files, list) and files:
        origin = sources.describe(files[0])
        try:
            size = sources.download(files[0], target)
        except FetchError as exc:
            log.error("algorithm (%s) failed: %s", origin, exc)
            raise StageFailure(32, f"algorithm: {exc}") from None
        log.info("algorithm (%s): %d bytes", origin, size)
    else:
        raise StageFailure(32, "algorithm has neither rawcode nor files")
    target.chmod(0o755)
    return target
