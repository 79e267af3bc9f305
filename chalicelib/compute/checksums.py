"""The sha256 of each file of an algorithm, computed inside the provider with the runner's own
network-safe sources (no private or metadata-service addresses, capped size, the provider's
bucket refused).

Two uses (docs/internals.md, "Algorithm checksums"):

- **start** (signed, paid with an order): `digests()` downloads the files once, fresh. The
  digests both answer a trusted-algorithm entry's filesChecksum and go into the inputs manifest
  (`algorithm.checksums`), and the runner refuses to place a file that no longer matches them.
- **initializeCompute** (unsigned, anyone): `cached_digests()` never downloads per call. The
  digests are kept in this process, keyed by the algorithm's decrypted file objects (a DDO
  content key: another URL, method or header is another entry), for `CACHE_SECONDS`, at most
  `CACHE_ENTRIES` of them; and a process computes at most `MISSES_PER_MINUTE` new ones a minute,
  beyond which initializeCompute answers 503 instead of downloading. An in-process cache was
  chosen over a DynamoDB table because it needs no new table, permission or write path, and the
  bound it gives (one download per algorithm per Lambda container per `CACHE_SECONDS`, plus the
  rate limit for anything new) already turns the amplifier into a constant; an unsigned caller
  cannot be told apart from another, so the bound is per process, not per claimed address. A
  stale initialize answer is harmless: the start hashes again and pins what it hashed.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from chalicelib.compute.algorithm_rules import joined_files_checksum
from chalicelib.errors import ServiceUnavailable
from chalicelib.filesources import Budget, Sources
from chalicelib.netsafe import CHUNK_BYTES, FetchPolicy

MAX_ALGORITHM_BYTES = 50 * 1024 * 1024  # an algorithm, not a dataset; Lambda's /tmp is 512 MB
DOWNLOAD_SECONDS = 10.0  # all of an algorithm's files, inside a request's 25 s answer budget
CACHE_SECONDS = 600
CACHE_ENTRIES = 256
MISSES_PER_MINUTE = 10
BUSY = "Algorithm checksums are being computed for too many requests, try again later"


class AlgorithmChecksums:
    """Downloads an algorithm's files and hashes them; see the module docstring."""

    def __init__(self, new_sources: Callable[[], Sources], clock: Callable[[], float] = time.monotonic,
                 cache_seconds: float = CACHE_SECONDS, cache_entries: int = CACHE_ENTRIES,
                 misses_per_minute: int = MISSES_PER_MINUTE) -> None:
        self._new_sources = new_sources
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._cache_entries = cache_entries
        self._misses_per_minute = misses_per_minute
        self._cache: OrderedDict[str, tuple[float, list[str]]] = OrderedDict()
        self._misses: list[float] = []
        self._inflight: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def digests(self, files: Sequence[Mapping[str, Any]]) -> list[str]:
        """Download every file now and return the sha256 hex of each, in order."""
        sources = self._new_sources()
        digests = []
        with tempfile.TemporaryDirectory(prefix="algo-") as folder:
            for position, spec in enumerate(files):
                path = Path(folder) / str(position)
                sources.download(spec, path)
                digests.append(_sha256(path))
                path.unlink()
        return digests

    def cached_digests(self, files: Sequence[Mapping[str, Any]]) -> list[str]:
        """digests() at most once per file objects per CACHE_SECONDS (concurrent askers of the
        same files wait for one download), and at most MISSES_PER_MINUTE downloads a minute in
        this process (ServiceUnavailable beyond)."""
        key = content_key(files)
        with self._lock:
            gate = self._inflight.setdefault(key, threading.Lock())
        try:
            with gate:
                return list(self._cached_or_new(key, files))
        finally:
            with self._lock:
                if self._inflight.get(key) is gate and not gate.locked():
                    del self._inflight[key]

    def _cached_or_new(self, key: str, files: Sequence[Mapping[str, Any]]) -> list[str]:
        now = self._clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit and now - hit[0] < self._cache_seconds:
                self._cache.move_to_end(key)
                return hit[1]
            self._misses = [t for t in self._misses if now - t < 60]
            if len(self._misses) >= self._misses_per_minute:
                raise ServiceUnavailable(BUSY)
            self._misses.append(now)
        digests = self.digests(files)
        with self._lock:
            self._cache[key] = (now, digests)
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_entries:
                self._cache.popitem(last=False)
        return digests

    def files_checksum(self, files: Sequence[Mapping[str, Any]]) -> str:
        """The joined filesChecksum of publisherTrustedAlgorithms, from one fresh download."""
        return joined_files_checksum(self.digests(files))


def content_key(files: Sequence[Mapping[str, Any]]) -> str:
    """A digest of the decrypted file objects (never kept in clear: they are secrets)."""
    text = json.dumps([dict(f) for f in files], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def from_settings(settings: Any) -> AlgorithmChecksums:
    from chalicelib import aws

    def new_sources() -> Sources:
        return Sources(
            policy=FetchPolicy(allow_private=settings.allow_private_networks, timeout=5,
                               deadline=time.monotonic() + DOWNLOAD_SECONDS),
            budget=Budget(MAX_ALGORITHM_BYTES),
            ipfs_gateway=settings.ipfs_gateway,
            arweave_gateway=settings.arweave_gateway,
            forbidden_buckets=frozenset({settings.bucket}),
            s3_factory=lambda: aws.client("s3"),
        )

    return AlgorithmChecksums(new_sources)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()
