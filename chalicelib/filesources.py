"""Turn one DDO file object (url, s3, ipfs, arweave) into a local file (stdlib + botocore).

Shared by the job runner (inputs, algorithms) and the provider (the checksums of trusted
algorithms' files); the runner image copies this module with the runner.

File objects are decrypted secrets chosen by publishers: errors and descriptions name the kind
of source and at most the host, never the URL, bucket or key.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.netsafe import CHUNK_BYTES, FetchError, FetchPolicy, fetch_to_file, write_capped

# CIDs (base58/base32) with an optional path inside the DAG; Arweave ids are base64url.
IPFS_RE = re.compile(r"^[A-Za-z0-9]+(/[A-Za-z0-9._~-]+)*$")
ARWEAVE_RE = re.compile(r"^[A-Za-z0-9_-]+$")
SOURCE_KINDS = ("url", "s3", "ipfs", "arweave")


@dataclass
class Budget:
    """Bytes the job may still download; one budget for all inputs and the algorithm, since
    they share the job's disk."""

    remaining: int

    def spend(self, size: int) -> None:
        self.remaining -= size


class Sources:
    """Downloads file objects under one policy, budget and set of forbidden buckets."""

    def __init__(self, *, policy: FetchPolicy, budget: Budget, ipfs_gateway: str,
                 arweave_gateway: str, forbidden_buckets: frozenset[str],
                 s3_factory: Callable[[], Any]) -> None:
        self._policy = policy
        self._budget = budget
        self._ipfs = ipfs_gateway
        self._arweave = arweave_gateway
        self._forbidden_buckets = forbidden_buckets
        self._s3_factory = s3_factory
        self._s3: Any = None

    def describe(self, spec: Any) -> str:
        """What kind of source a file is, safe for consumer-visible logs: never its host,
        bucket, key, path or URL (DESIGN: inputs are named by index and did only)."""
        kind = spec.get("type") if isinstance(spec, Mapping) else None
        return str(kind) if kind in SOURCE_KINDS else "unsupported source"

    def download(self, spec: Any, dest: Path) -> int:
        """Fetch spec into dest within the remaining budget; return its size."""
        if not isinstance(spec, Mapping):
            raise FetchError("file entry is not an object")
        kind, limit = spec.get("type"), self._budget.remaining
        if kind == "url":
            size = fetch_to_file(_text(spec, "url"), dest, limit=limit, policy=self._policy,
                                 method=str(spec.get("method") or "GET"),
                                 headers=spec.get("headers"))
        elif kind == "ipfs":
            cid = _text(spec, "hash")
            if not IPFS_RE.match(cid) or {".", ".."} & set(cid.split("/")):
                raise FetchError("invalid ipfs hash")
            size = fetch_to_file(f"{self._ipfs}/ipfs/{cid}", dest, limit=limit,
                                 policy=self._policy)
        elif kind == "arweave":
            tx = _text(spec, "transactionId")
            if not ARWEAVE_RE.match(tx):
                raise FetchError("invalid arweave transaction id")
            size = fetch_to_file(f"{self._arweave}/{tx}", dest, limit=limit, policy=self._policy)
        elif kind == "s3":
            size = self._download_s3(_text(spec, "bucket"), _text(spec, "objectKey"), dest, limit)
        else:
            raise FetchError("unsupported file type")
        self._budget.spend(size)
        return size

    def _download_s3(self, bucket: str, key: str, dest: Path, limit: int) -> int:
        """GetObject with the job role. The job's own bucket holds other jobs' manifests
        (decrypted URLs) and results, so a DDO may never point into it."""
        if bucket in self._forbidden_buckets:
            raise FetchError("s3 bucket not allowed")
        try:
            if self._s3 is None:
                self._s3 = self._s3_factory()
            obj = self._s3.get_object(Bucket=bucket, Key=key)
            if int(obj.get("ContentLength", 0)) > limit:
                obj["Body"].close()
                raise FetchError("exceeds the size limit")
            return write_capped(_s3_body(obj["Body"], self._policy), dest, limit)
        except ClientError as exc:
            raise FetchError(f"s3 error {exc.response.get('Error', {}).get('Code', '?')}") from None
        except (BotoCoreError, OSError) as exc:
            raise FetchError(f"s3 unavailable ({type(exc).__name__})") from None


def _s3_body(body: Any, policy: FetchPolicy) -> Iterator[bytes]:
    """The object's bytes in chunks (botocore maps its stream errors to BotoCoreError)."""
    try:
        for chunk in body.iter_chunks(CHUNK_BYTES):
            policy.check_deadline()
            yield chunk
    finally:
        body.close()


def _text(spec: Mapping[str, Any], field: str) -> str:
    value = spec.get(field)
    if not isinstance(value, str) or not value:
        raise FetchError(f"file entry has no {field}")
    return value

