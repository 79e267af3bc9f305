"""filesChecksum of an algorithm, for trusted-algorithm entries that pin one: its files are
downloaded inside the provider with the runner's own network-safe sources (no private or
metadata-service addresses, capped size, the provider's bucket refused) and hashed."""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from chalicelib.compute.validation import joined_files_checksum
from chalicelib.filesources import Budget, Sources
from chalicelib.netsafe import CHUNK_BYTES, FetchPolicy

MAX_ALGORITHM_BYTES = 50 * 1024 * 1024  # an algorithm, not a dataset; Lambda's /tmp is 512 MB


class AlgorithmChecksums:
    def __init__(self, new_sources: Callable[[], Sources]):
        self._new_sources = new_sources

    def __call__(self, files: Sequence[Mapping[str, Any]]) -> str:
        sources = self._new_sources()
        digests = []
        with tempfile.TemporaryDirectory(prefix="algo-") as folder:
            for position, spec in enumerate(files):
                path = Path(folder) / str(position)
                sources.download(spec, path)
                digests.append(_sha256(path))
        return joined_files_checksum(digests)


def from_settings(settings: Any) -> AlgorithmChecksums:
    from chalicelib import aws

    def new_sources() -> Sources:
        return Sources(
            policy=FetchPolicy(allow_private=settings.allow_private_networks, timeout=10),
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
