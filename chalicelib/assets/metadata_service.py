"""An Aquarius-compatible metadata service (METADATA_URL), asked for DDOs the way the original
Provider asks: GET {METADATA_URL}/api/aquarius/assets/ddo/{did}.

urllib with a timeout, no extra dependency: a 404 means "no such did", anything else that is not a
JSON object within the size cap means the service is down (503). The URL is never put in an error
message (it may hold credentials); the did is validated before it becomes part of a path.
"""
from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any, Callable

from chalicelib import budget
from chalicelib.assets.ddo import is_did
from chalicelib.errors import ServiceUnavailable

logger = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 2 * 1024 * 1024

Opener = Callable[..., Any]


class MetadataService:
    """Fetches DDOs by did from an Aquarius-compatible service."""

    def __init__(self, base_url: str, timeout: float = 5.0, opener: Opener = urllib.request.urlopen):
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._open = opener

    def ddo(self, did: str) -> dict[str, Any] | None:
        """The DDO the service holds for `did`, or None if it has none."""
        if not is_did(did):
            return None
        request = urllib.request.Request(
            f"{self._base_url}/api/aquarius/assets/ddo/{did}", headers={"Accept": "application/json"}
        )
        try:
            with self._open(request, timeout=budget.call_timeout(self._timeout)) as response:
                body = response.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as error:
            error.close()
            if error.code == 404:
                return None
            logger.warning("metadata service answered HTTP %s", error.code)
            raise ServiceUnavailable("The metadata service is not available") from None
        except (urllib.error.URLError, OSError, ValueError) as error:
            logger.warning("metadata service did not answer: %s", type(error).__name__)
            raise ServiceUnavailable("The metadata service is not available") from None
        if len(body) > MAX_RESPONSE_BYTES:
            raise ServiceUnavailable("The metadata service answered with an oversized document")
        try:
            ddo = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            ddo = None
        if not isinstance(ddo, dict):
            raise ServiceUnavailable("The metadata service answered with a malformed document")
        return ddo
