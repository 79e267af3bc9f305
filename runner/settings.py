"""Runner configuration, read once from the environment (the whole CLI contract is env vars)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, TypeVar
from urllib.parse import parse_qs, urlsplit

from chalicelib.job_key import ENVIRONMENT_VARIABLE as JOB_KEY_VARIABLE
from chalicelib.job_key import SealError, check_job_key

GIB = 1024**3
JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
DEFAULT_BUSYBOX = "/bin/busybox"  # Debian busybox-static, installed by runner/Dockerfile
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
REGION_VARIABLES = ("C2D_REGION", "AWS_REGION", "AWS_DEFAULT_REGION")
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
DEFAULT_ALGORITHM_UID = 4000
MAX_NOTICE = 500
Num = TypeVar("Num", int, float)


class ConfigError(ValueError):
    """The environment does not describe a runnable job."""


@dataclass(frozen=True)
class Settings:
    """Everything a stage needs to know about its job and its limits."""

    job_id: str
    manifest_uri: str
    data_dir: Path
    results_bucket: str
    events_mode: str
    event_bus: str
    ipfs_gateway: str
    arweave_gateway: str
    max_input_bytes: int
    max_output_bytes: int
    fetch_timeout: float
    allow_private: bool
    region: str = ""
    algorithm_uid: int = DEFAULT_ALGORITHM_UID
    attempt: int | None = None
    busybox_source: str = DEFAULT_BUSYBOX
    notice: str = ""  # C2D_NOTICE: what the provider tells the consumer in configure.log
    job_key: str = ""  # C2D_JOB_KEY (chalicelib.job_key): opens the manifest, signs the events
    task_metadata_uri: str = ""  # ECS_CONTAINER_METADATA_URI_V4, set by the ECS agent (runner.task_metadata)

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, need_manifest: bool = True) -> "Settings":
        """Validate the env up front so a misconfigured job fails before touching anything."""
        job_id = env.get("JOB_ID", "")
        if not JOB_ID_RE.match(job_id):
            raise ConfigError("JOB_ID is missing or has characters other than [A-Za-z0-9._-]")
        manifest_uri = env.get("MANIFEST_URI", "")
        if manifest_uri:
            parse_s3_uri(manifest_uri)
        elif need_manifest:
            raise ConfigError("MANIFEST_URI (s3://bucket/key) is required")
        results_bucket = env.get("RESULTS_BUCKET") or (
            parse_s3_uri(manifest_uri)[0] if manifest_uri else "")
        if not results_bucket:
            raise ConfigError("RESULTS_BUCKET or MANIFEST_URI is required")
        job_key = env.get(JOB_KEY_VARIABLE, "")
        try:
            check_job_key(job_key)
        except SealError:
            raise ConfigError(f"{JOB_KEY_VARIABLE} is missing or is not a job key") from None
        events_mode = env.get("RUNNER_EVENTS", "eventbridge")
        if events_mode not in ("eventbridge", "stdout"):
            raise ConfigError("RUNNER_EVENTS must be 'eventbridge' or 'stdout'")
        return cls(
            region=region_from_env(env),
            algorithm_uid=_algorithm_uid(env),
            attempt=_attempt(env),
            busybox_source=busybox_source(env),
            notice=_notice(env),
            job_key=job_key,
            task_metadata_uri=env.get("ECS_CONTAINER_METADATA_URI_V4", "").strip(),
            job_id=job_id,
            manifest_uri=manifest_uri,
            data_dir=Path(env.get("DATA_DIR", "/data")),
            results_bucket=results_bucket,
            events_mode=events_mode,
            event_bus=env.get("EVENT_BUS_NAME", "default"),
            ipfs_gateway=_gateway(env, "IPFS_GATEWAY", "https://ipfs.io"),
            arweave_gateway=_gateway(env, "ARWEAVE_GATEWAY", "https://arweave.net"),
            max_input_bytes=_number(env, "MAX_INPUT_BYTES", 5 * GIB, int),
            max_output_bytes=_number(env, "MAX_OUTPUT_BYTES", 5 * GIB, int),
            fetch_timeout=_number(env, "FETCH_TIMEOUT", 30.0, float),
            allow_private=env.get("ALLOW_PRIVATE_NETWORKS", "").strip().lower() in TRUE_WORDS,
        )


def region_from_env(env: Mapping[str, str]) -> str:
    """The job's region: C2D_REGION (set by the dispatcher), else the ECS agent's AWS_REGION,
    else AWS_DEFAULT_REGION. Batch itself sets none of them, and a client without a region
    cannot send events, so a job without one must stop here instead of losing every event."""
    for name in REGION_VARIABLES:
        value = env.get(name, "").strip()
        if value:
            if not REGION_RE.match(value):
                raise ConfigError(f"{name} is not an AWS region name")
            return value
    raise ConfigError("no AWS region: set C2D_REGION (or AWS_REGION / AWS_DEFAULT_REGION)")


def busybox_source(env: Mapping[str, str]) -> str:
    """The static busybox configure copies to /data/.c2d (runner/Dockerfile installs Debian's
    busybox-static there); a setting so tests and local stacks can name another file."""
    return env.get("BUSYBOX_SOURCE", DEFAULT_BUSYBOX).strip()


def _notice(env: Mapping[str, str]) -> str:
    """C2D_NOTICE, set by the dispatcher (e.g. network access was not granted on this
    environment): one printable line for the consumer-visible configure log."""
    text = "".join(c if c.isprintable() else " " for c in env.get("C2D_NOTICE", ""))
    return text.strip()[:MAX_NOTICE]


def _algorithm_uid(env: Mapping[str, str]) -> int:
    """The UID the algorithm container runs as (4000, or 4001 with network access); never root,
    since it owns outputs/ and algorithm.log."""
    raw = env.get("ALGORITHM_UID", "").strip()
    if not raw:
        return DEFAULT_ALGORITHM_UID
    if not raw.isdigit() or not 0 < int(raw) < 2**31:
        raise ConfigError("ALGORITHM_UID must be a non-root numeric UID")
    return int(raw)


def _attempt(env: Mapping[str, str]) -> int | None:
    """AWS Batch's 1-based attempt number, carried in every event (absent locally)."""
    raw = env.get("AWS_BATCH_JOB_ATTEMPT", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError("AWS_BATCH_JOB_ATTEMPT must be a positive integer")
    return int(raw)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split s3://bucket/key[?versionId=v]; the manifest location is the only S3 address the
    runner is given."""
    parts = urlsplit(uri)
    key = parts.path.lstrip("/")
    if parts.scheme != "s3" or not parts.netloc or not key:
        raise ConfigError("expected an s3://bucket/key URI")
    s3_version(uri)
    return parts.netloc, key


def s3_version(uri: str) -> str | None:
    """The `versionId` an s3:// URI pins (the manifest the API wrote), None if it pins none."""
    query = parse_qs(urlsplit(uri).query, keep_blank_values=True)
    if set(query) - {"versionId"} or len(query.get("versionId", [""])) != 1:
        raise ConfigError("an s3:// URI may only pin one versionId")
    version = query.get("versionId", [""])[0]
    return version or None


def _gateway(env: Mapping[str, str], name: str, default: str) -> str:
    """Gateways are joined with a path, so normalise away a trailing slash."""
    value = env.get(name) or default
    if urlsplit(value).scheme not in ("http", "https"):
        raise ConfigError(f"{name} must be an http(s) URL")
    return value.rstrip("/")


def _number(env: Mapping[str, str], name: str, default: Num, kind: Callable[[str], Num]) -> Num:
    """Positive numeric limits; a typo must not silently disable a cap."""
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive")
    return value
