"""Decrypting a service's `files` inside the provider.

A DDO v4.1 service carries `files` as the ECIES ciphertext (hex) of
{"datatokenAddress", "nftAddress", "files": [file objects]}; binding the files to the datatoken
and NFT stops a publisher from copying another asset's encrypted files into their own DDO (the
original Provider checks the same). DDO 4.0.0 encrypted the bare list.

The result holds data URLs and credentials: it goes only into the job's S3 manifest. Errors and
log lines here name the reason, never the content.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from chalicelib.assets import ecies
from chalicelib.assets.ddo import Asset
from chalicelib.auth.signatures import is_address, to_checksum_address
from chalicelib.errors import BusinessError

logger = logging.getLogger(__name__)

# What the job runner can fetch (runner/sources.py).
SUPPORTED_FILE_TYPES = frozenset({"url", "s3", "ipfs", "arweave"})


class FilesUnavailable(BusinessError):
    """The service's files cannot be used by this provider; `reason` is for logs and tests only."""

    def __init__(self, resource: str, reason: str):
        self.reason = reason
        code = {"algorithm": "file_unavailable"} if resource == "algorithm" else {
            f"{resource}.serviceId": "compute_services_not_in_same_provider"
        }
        super().__init__(code)


def decrypt_files(
    asset: Asset, service: dict[str, Any], private_key: str, resource: str = "dataset"
) -> list[dict[str, Any]]:
    """The service's file objects, decrypted with the provider key and checked.

    Refused (FilesUnavailable, with the original's codes: `{"<resource>.serviceId":
    "compute_services_not_in_same_provider"}`, or `{"algorithm": "file_unavailable"}`) when
    they were not encrypted for this provider, are bound to another datatoken or NFT, or hold
    an entry the job runner cannot fetch.
    """
    try:
        return _decrypt(asset, service, private_key)
    except _Refused as refused:
        logger.warning("files of service %s of %s refused: %s", service.get("id"), asset.did, refused.reason)
        raise FilesUnavailable(resource, refused.reason) from None


class _Refused(Exception):
    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


def _decrypt(asset: Asset, service: dict[str, Any], private_key: str) -> list[dict[str, Any]]:
    encrypted = service.get("files")
    if not isinstance(encrypted, str) or not encrypted:
        raise _Refused("service has no encrypted files")
    try:
        plain = ecies.decrypt(private_key, encrypted)
    except ecies.DecryptionError:
        raise _Refused("files are not encrypted for this provider") from None
    try:
        document = json.loads(plain)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _Refused("decrypted files are not JSON") from None
    if asset.version == "4.0.0" and isinstance(document, list):
        return _checked_entries(document)
    if not isinstance(document, dict):
        raise _Refused("decrypted files are not an object")
    for key in ("datatokenAddress", "nftAddress", "files"):
        if key not in document:
            raise _Refused(f"key {key} not found in files")
    if not _same_address(document["datatokenAddress"], service.get("datatokenAddress")):
        raise _Refused("mismatch of datatoken")
    if not _same_address(document["nftAddress"], asset.nft_address):
        raise _Refused("mismatch of dataNft")
    return _checked_entries(document["files"])


def _checked_entries(entries: Any) -> list[dict[str, Any]]:
    if not isinstance(entries, list) or not entries:
        raise _Refused("expected a non-empty files list")
    for entry in entries:
        if not isinstance(entry, dict):
            raise _Refused("a file entry is not an object")
        if entry.get("type") not in SUPPORTED_FILE_TYPES:
            raise _Refused("unsupported file type")
    return entries


def _same_address(a: Any, b: Any) -> bool:
    return is_address(a) and is_address(b) and to_checksum_address(a) == to_checksum_address(b)
