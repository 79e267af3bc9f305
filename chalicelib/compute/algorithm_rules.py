"""May this algorithm run on this dataset? The dataset's compute options against the algorithm:
raw code allowed or not, trusted publishers, trusted algorithms and their checksums (the original
Provider's `InputItemValidator.validate_algo` and `_validate_trusted_algos`).

Trust semantics are the original's: both trust lists empty → any published algorithm may run
(`open_when_unrestricted=False` refuses instead, as ocean-node does); a non-empty publishers list
and a non-empty algorithms list must both accept the algorithm. filesChecksum is the
concatenation of the sha256 hex digests of the algorithm's files' contents, in order, lower
case (not a hash of them); containerSectionChecksum is sha256_hex(entrypoint + checksum) of the
algorithm DDO's metadata.algorithm.container. An empty checksum in an entry is not checked.
Extension for DDOs written for ocean-node/ocean.js: "*" matches anything in `did`,
`filesChecksum`, `containerSectionChecksum`, an entry's optional `serviceId`, and as a
publisher; the original compared "*" literally and so refused.

The algorithm's files are hashed at most once per request (`AlgorithmFacts.digests`): at start
always (the digests are pinned in the plan), at initializeCompute only when an entry pins a
filesChecksum, then through the hasher's bounded cache (chalicelib.compute.checksums), so an
unsigned caller cannot make the provider download per call.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Protocol, Sequence

from chalicelib.compute.input_rules import as_list
from chalicelib.compute.plan import FileObject
from chalicelib.errors import BusinessError, ProviderError


class FileHasher(Protocol):
    """The sha256 hex digest of each of an algorithm's files, in order (it downloads them;
    chalicelib.compute.checksums.AlgorithmChecksums is the real one)."""

    def digests(self, files: Sequence[FileObject]) -> Sequence[str]:
        """Fresh: used at start, where the digests are also pinned in the manifest."""
        ...

    def cached_digests(self, files: Sequence[FileObject]) -> Sequence[str]:
        """May come from a bounded cache: used by the unsigned initializeCompute."""
        ...


WILDCARD = "*"


def container_section_checksum(container: Mapping[str, Any]) -> str:
    """sha256 hex of entrypoint + checksum, as the original and ocean-node compute it."""
    text = str(container.get("entrypoint", "")) + str(container.get("checksum", ""))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def joined_files_checksum(checksums: Iterable[str]) -> str:
    """filesChecksum: the files' own sha256 hex digests concatenated in order, lower case."""
    return "".join(checksums).lower()


def content_checksum(content: bytes) -> str:
    """One file's checksum, the sha256 hex of its bytes."""
    return hashlib.sha256(content).hexdigest()


@dataclass


class AlgorithmFacts:
    """The algorithm as the dataset rules see it; its files are hashed at most once."""

    raw: bool
    did: str = ""
    service_id: str = ""
    owner: Optional[str] = None
    container_checksum: str = ""
    files: Sequence[FileObject] = ()
    hasher: Optional[FileHasher] = None
    cached: bool = False  # initializeCompute: the hasher's bounded cache may answer
    _digests: Optional[tuple[str, ...]] = None

    def digests(self) -> tuple[str, ...]:
        if self._digests is None:
            if self.hasher is None:
                raise BusinessError({"algorithm": "file_unavailable"})
            fetch = self.hasher.cached_digests if self.cached else self.hasher.digests
            try:
                digests = tuple(str(d).lower() for d in fetch(list(self.files)))
            except ProviderError:  # the hasher's own answer (e.g. ServiceUnavailable) stands
                raise
            except Exception:  # the hasher fetches over the network: any other failure means unavailable
                raise BusinessError({"algorithm": "file_unavailable"}) from None
            if len(digests) != len(self.files):
                raise BusinessError({"algorithm": "file_unavailable"})
            self._digests = digests
        return self._digests

    def files_checksum(self) -> str:
        return joined_files_checksum(self.digests())


def _entry_mismatch(entry: Mapping[str, Any], algorithm: AlgorithmFacts) -> Optional[str]:
    """Why a trusted-algorithm entry does not accept the algorithm, or None if it does."""
    service_id = entry.get("serviceId")
    if service_id not in (None, "", WILDCARD) and str(service_id) != algorithm.service_id:
        return "not_trusted_algo"
    files = entry.get("filesChecksum")
    if files and files != WILDCARD and str(files).lower() != algorithm.files_checksum():
        return "algorithm_file_checksum_mismatch"
    container = entry.get("containerSectionChecksum")
    if container and container != WILDCARD and str(container).lower() != algorithm.container_checksum:
        return "algorithm_container_checksum_mismatch"
    return None


def check_algorithm_allowed(resource: str, compute: Any, algorithm: AlgorithmFacts, open_when_unrestricted: bool) -> None:
    """The dataset's compute options against the algorithm (original: InputItemValidator.validate_algo)."""
    options = compute if isinstance(compute, Mapping) else {}
    if algorithm.raw:
        if options.get("allowRawAlgorithm") is not True:
            raise BusinessError({resource: "no_raw_algo_allowed"})
        return
    publishers = as_list(options.get("publisherTrustedAlgorithmPublishers"))
    trusted = as_list(options.get("publisherTrustedAlgorithms"))
    if not publishers and not trusted:
        if not open_when_unrestricted:
            raise BusinessError({resource: "not_trusted_algo"})
        return
    if publishers and WILDCARD not in publishers:
        owner = (algorithm.owner or "").lower()
        if not owner or owner not in {str(p).lower() for p in publishers}:
            raise BusinessError({resource: "not_trusted_algo_publisher"})
    if trusted:
        _check_trusted_algorithms(resource, trusted, algorithm)


def _check_trusted_algorithms(resource: str, trusted: list[Any], algorithm: AlgorithmFacts) -> None:
    if any(not isinstance(entry, Mapping) or "did" not in entry for entry in trusted):
        raise BusinessError({resource: "no_publisherTrustedAlgorithms"})
    exact = [e for e in trusted if e["did"] == algorithm.did]
    wildcard = [e for e in trusted if e["did"] == WILDCARD]
    candidates = exact + wildcard
    if not candidates:
        raise BusinessError({resource: "not_trusted_algo"})
    first_problem = None
    for entry in candidates:
        problem = _entry_mismatch(entry, algorithm)
        if problem is None:
            return
        first_problem = first_problem or problem
    raise BusinessError({resource: first_problem})
