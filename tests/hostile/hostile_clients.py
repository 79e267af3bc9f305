"""Signing HTTP clients for the hostile suites and the load benchmark: each has its own key (so
its nonces are its own) and one keep-alive session per thread, as a real client pool would."""
from __future__ import annotations

import secrets
import threading
import time
from typing import Any

import requests

from chalicelib.auth.signatures import address_of_key
from signing import sign

STATUS = "/api/services/compute"
TOKEN = "/api/services/createAuthToken"
NONCE = "/api/services/nonce"


class SigningClient:
    def __init__(self, base_url: str, key: str | None = None):
        self.base = base_url
        self.key = key or "0x" + secrets.token_hex(32)
        self.address = address_of_key(self.key)
        self._local = threading.local()

    @property
    def http(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def signature(self, message: str) -> str:
        return sign(self.key, message)

    # -- signed requests, prepared once so that a replay is byte-for-byte the same request --------

    def token_params(self, nonce: int, lifetime: int = 600) -> dict[str, Any]:
        return {"address": self.address, "nonce": str(nonce), "expiration": str(int(time.time()) + lifetime),
                "signature": self.signature(self.address + str(nonce))}

    def status_params(self, nonce: int, job_id: str = "", document_id: str = "") -> dict[str, Any]:
        params = {"consumerAddress": self.address, "nonce": str(nonce),
                  "signature": self.signature(self.address + job_id + document_id + str(nonce))}
        if job_id:
            params["jobId"] = job_id
        if document_id:
            params["documentId"] = document_id
        return params

    def token_query(self, nonce: int, auth_token: str) -> tuple[dict[str, Any], dict[str, str]]:
        """A signed status query that proves the caller with an AuthToken instead of a signature."""
        return {"consumerAddress": self.address, "nonce": str(nonce)}, {"AuthToken": auth_token}

    # -- calls ----------------------------------------------------------------------------------

    def get(self, path: str, params: dict[str, Any], headers: dict[str, str] | None = None) -> requests.Response:
        return self.http.get(self.base + path, params=params, headers=headers, timeout=60)

    def current_nonce(self) -> int:
        response = self.http.get(self.base + NONCE, params={"userAddress": self.address}, timeout=60)
        assert response.status_code == 200, response.text
        return int(response.json()["nonce"])

    def new_token(self, nonce: int) -> str:
        response = self.get(TOKEN, self.token_params(nonce))
        assert response.status_code == 200, response.text
        return response.json()["token"]


def is_nonce_refusal(response: requests.Response) -> bool:
    """The one refusal a replayed or stale nonce may get: 400 naming the nonce."""
    return response.status_code == 400 and "nonce" in response.json().get("errors", {})
