"""The canary as a consumer of the provider's public API, nothing more: what ocean.py and ocean.js
send, signed with the canary's key.

Two start paths:
- `paid` (Ocean Provider v4 at `/`): initializeCompute for the dataset's providerFee, the
  dataset's datatoken ordered on chain (`startOrder`, the fee approved first), then the compute
  start with the probe as a raw algorithm; status and computeResult at `/` too.
- `free` (Ocean Node at `/node`): `freeCompute` on the environment's free tier, no order and no
  gas; status and computeResult at `/node`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import requests
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak

TERMINAL = {7, 8, 31, 32, 41, 62, 70}
RESULT_FILE = "canary.json"


class Refused(Exception):
    """The provider answered a request with an error: the message says which and what it said."""


@dataclass(frozen=True)
class Dataset:
    """A canary dataset as the canary orders it (canary/datasets.py publishes them)."""

    did: str
    serviceId: str
    datatoken: str = ""
    serviceIndex: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Dataset":
        return cls(str(data["did"]), str(data["serviceId"]), str(data.get("datatoken", "")), int(data.get("serviceIndex", 0)))


class Provider:
    """One consumer key against one provider URL."""

    def __init__(self, url: str, key: str, chain_id: int, timeout: float = 60):
        self.url = url.rstrip("/")
        self.account = Account.from_key(key)
        self.address = self.account.address
        self.chain_id = chain_id
        self.timeout = timeout

    def sign(self, message: str) -> str:
        return Account.sign_message(encode_defunct(primitive=keccak(text=message)), self.account.key).signature.to_0x_hex()

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = requests.request(method, self.url + path, timeout=self.timeout, **kwargs)
        if response.status_code >= 400:
            raise Refused(f"{method} {path} answered {response.status_code}: {response.text[:500]}")
        return response

    def next_nonce(self) -> int:
        answer = self.call("GET", "/api/services/nonce", params={"userAddress": self.address}).json()
        return int(answer["nonce"]) + 1

    def environments(self) -> dict[str, int]:
        """The environments on the canary's chain, with their GPUs per job (v4 computeEnvironments)."""
        chain = str(self.chain_id)
        listed = self.call("GET", "/api/services/computeEnvironments", params={"chainId": chain}).json()
        return {environment["id"]: int(environment.get("nGPU") or 0) for environment in listed.get(chain, [])}

    # -- paid, Ocean Provider v4 ----------------------------------------------------------------

    def quote_and_order(self, environment: str, dataset: Dataset, meta: dict[str, Any],
                        order: Callable[[Dataset, dict[str, Any]], str], seconds: int) -> str:
        """initializeCompute for the dataset's providerFee, then the order on chain; returns its tx."""
        quote = self.call("POST", "/api/services/initializeCompute", json={
            "datasets": [{"documentId": dataset.did, "serviceId": dataset.serviceId}], "algorithm": {"meta": meta},
            "compute": {"env": environment, "validUntil": int(time.time()) + seconds},
            "consumerAddress": self.address, "chainId": self.chain_id}).json()
        return order(dataset, quote["datasets"][0]["providerFee"])

    def start_ordered(self, environment: str, dataset: Dataset, meta: dict[str, Any], custom: dict[str, Any],
                      transfer: str) -> str:
        """POST compute with the dataset's order and the probe as a raw algorithm; returns the job id."""
        nonce = self.next_nonce()
        started = self.call("POST", "/api/services/compute", json={
            "consumerAddress": self.address, "nonce": nonce, "environment": environment,
            "signature": self.sign(self.address + dataset.did + str(nonce)),
            "dataset": {"documentId": dataset.did, "serviceId": dataset.serviceId, "transferTxId": transfer},
            "algorithm": {"meta": meta, "algocustomdata": custom}}).json()
        return started[0]["jobId"]

    def status_v4(self, job_id: str) -> dict[str, Any]:
        nonce = self.next_nonce()
        return self.call("GET", "/api/services/compute", params={
            "consumerAddress": self.address, "jobId": job_id, "nonce": nonce,
            "signature": self.sign(self.address + job_id + str(nonce))}).json()[0]

    def result_v4(self, job_id: str, index: int) -> bytes:
        nonce = self.next_nonce()
        redirect = self.call("GET", "/api/services/computeResult", allow_redirects=False, params={
            "consumerAddress": self.address, "jobId": job_id, "index": str(index), "nonce": nonce,
            "signature": self.sign(self.address + job_id + str(index) + str(nonce))})
        return self._download(redirect)

    # -- free, Ocean Node -----------------------------------------------------------------------

    def start_free(self, environment: str, dataset: Dataset, meta: dict[str, Any], custom: dict[str, Any],
                   seconds: int) -> str:
        nonce = str(self.next_nonce())
        started = self.call("POST", "/node/api/services/freeCompute", json={
            "consumerAddress": self.address, "nonce": nonce, "environment": environment,
            "signature": self.sign(self.address + nonce + "freeStartCompute"),
            "datasets": [{"documentId": dataset.did, "serviceId": dataset.serviceId}],
            "algorithm": {"meta": meta, "algocustomdata": custom}, "maxJobDuration": seconds}).json()
        return started[0]["jobId"]

    def status_node(self, job_id: str) -> dict[str, Any]:
        return self.call("GET", "/node/api/services/compute",
                         params={"consumerAddress": self.address, "jobId": job_id}).json()[0]

    def result_node(self, job_id: str, index: int) -> bytes:
        nonce = str(self.next_nonce())
        redirect = self.call("GET", "/node/api/services/computeResult", allow_redirects=False, params={
            "consumerAddress": self.address, "jobId": job_id, "index": index, "nonce": nonce,
            "signature": self.sign(self.address + nonce + "getComputeResult")})
        return self._download(redirect)

    def logs_node(self, job_id: str) -> str | None:
        """computeStreamableLogs (Ocean Node): the algorithm's log so far; None while there is none."""
        nonce = str(self.next_nonce())
        response = requests.get(self.url + "/node/api/services/computeStreamableLogs", timeout=self.timeout, params={
            "consumerAddress": self.address, "jobId": job_id, "nonce": nonce,
            "signature": self.sign(self.address + nonce + "getComputeStreamableLogs")})
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise Refused(f"computeStreamableLogs answered {response.status_code}: {response.text[:300]}")
        return response.text

    def _download(self, redirect: requests.Response) -> bytes:
        location = redirect.headers.get("Location")
        if redirect.status_code != 302 or not location:
            raise Refused(f"computeResult answered {redirect.status_code} without a Location")
        answer = requests.get(location, timeout=self.timeout)
        answer.raise_for_status()
        return answer.content


def result_index(status: dict[str, Any], filename: str = RESULT_FILE) -> int | None:
    """The computeResult index of an output, from the status object's `results`."""
    for position, item in enumerate(status.get("results") or []):
        if item.get("type") == "output" and item.get("filename") == filename:
            return int(item.get("index", position))
    return None
