"""Schemathesis hooks for the fuzz run (loaded through SCHEMATHESIS_HOOKS by test_hostile_fuzz).

Random signatures never pass the signature check, so a plain fuzz run only ever exercises the
code in front of it. These hooks sign about half of the schema-valid cases of the signed routes
the way a real client does (the consumer's key, a fresh nonce, the route's message prefix),
some with an AuthToken header instead, and give createAuthToken a usable expiration now and
then, so the fuzzer also reaches what runs after authentication: token creation and revocation,
job lookups with hostile job ids, compute starts with hostile datasets.
"""
from __future__ import annotations

import itertools
import json
import os
import random
import threading
import time
from typing import Any, Callable

import schemathesis
from schemathesis import GenerationMode

from signing import CONSUMER_KEY, address, sign

CONSUMER = address(CONSUMER_KEY)
_nonces = itertools.count(time.time_ns())
_tokens: list[str] = []
_lock = threading.Lock()
_random = random.Random(7)
# The stack's published sample assets (HOSTILE_SAMPLES, set by the test): bodies that name real
# assets and environments get past DDO resolution to the checks behind it (orders on chain).
SAMPLES: dict[str, Any] = json.loads(os.environ.get("HOSTILE_SAMPLES") or "{}")


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _job_prefix(params: dict[str, Any]) -> str:
    return CONSUMER + _text(params.get("jobId")) + _text(params.get("documentId"))


def _start_prefix(params: dict[str, Any]) -> str:
    dataset = params.get("dataset")
    return CONSUMER + (_text(dataset.get("documentId")) if isinstance(dataset, dict) else "")


def _result_prefix(params: dict[str, Any]) -> str:
    return CONSUMER + _text(params.get("jobId")) + _text(params.get("index"))


# (method, path) -> (where the parameters are, the signer's field, the message prefix)
SIGNED: dict[tuple[str, str], tuple[str, str, Callable[[dict[str, Any]], str]]] = {
    ("GET", "/api/services/createAuthToken"): ("query", "address", lambda params: CONSUMER),
    ("DELETE", "/api/services/deleteAuthToken"): ("query", "address", lambda params: CONSUMER),
    ("POST", "/api/services/compute"): ("body", "consumerAddress", _start_prefix),
    ("GET", "/api/services/compute"): ("query", "consumerAddress", _job_prefix),
    ("PUT", "/api/services/compute"): ("query", "consumerAddress", _job_prefix),
    ("DELETE", "/api/services/compute"): ("query", "consumerAddress", _job_prefix),
    ("GET", "/api/services/computeResult"): ("query", "consumerAddress", _result_prefix),
}


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    meta = case.meta
    if meta is None or meta.generation.mode != GenerationMode.POSITIVE:
        return case
    with _lock:
        roll = _random.random()
        nonce = next(_nonces)
        token = _random.choice(_tokens) if _tokens else None
    if case.path == "/api/services/initializeCompute" and isinstance(case.body, dict) and roll < 0.5:
        _use_samples(case.body)
    signed = SIGNED.get((case.method.upper(), case.path))
    if signed is None or roll < 0.5:
        return case
    where, signer_field, prefix = signed
    params = case.query if where == "query" else case.body
    if not isinstance(params, dict):
        return case
    if roll < 0.75:
        _use_samples(params)
    params[signer_field] = CONSUMER
    params["nonce"] = str(nonce) if where == "query" else nonce
    if case.path == "/api/services/createAuthToken" and roll < 0.8:
        params["expiration"] = str(int(time.time()) + 600)
    if case.path == "/api/services/deleteAuthToken" and token and roll < 0.8:
        params["token"] = token
    if token and roll > 0.85 and signer_field == "consumerAddress":
        params.pop("signature", None)
        case.headers["AuthToken"] = token
    else:
        params["signature"] = sign(CONSUMER_KEY, prefix(params) + str(nonce))
    return case


def _use_samples(params: dict[str, Any]) -> None:
    """Point a compute body (or a job query) at the stack's real assets and environment."""
    dataset, algorithm = SAMPLES.get("dataset"), SAMPLES.get("algorithm")
    if not dataset or not algorithm:
        return
    inputs = params.get("datasets") if isinstance(params.get("datasets"), list) else [params.get("dataset")]
    if inputs and isinstance(inputs[0], dict):
        inputs[0].update(documentId=dataset["did"], serviceId=dataset["serviceId"])
        del inputs[1:]
        if isinstance(params.get("compute"), dict):
            params["compute"].update(env=SAMPLES["environment"], validUntil=int(time.time()) + 600)
        else:
            params["environment"] = SAMPLES["environment"]
            params.pop("additionalDatasets", None)
            params.pop("additionalInputs", None)
        if isinstance(params.get("algorithm"), dict) and params["algorithm"].get("meta") is None:
            params["algorithm"].update(documentId=algorithm["did"], serviceId=algorithm["serviceId"])
            if "dataset" in params and not params["algorithm"].get("transferTxId"):
                params["algorithm"]["transferTxId"] = "0x" + _random.randbytes(32).hex()
    elif "documentId" in params:
        params["documentId"] = dataset["did"]


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    """Keep the tokens the provider issued, for later cases to use and revoke."""
    if case.path == "/api/services/createAuthToken" and response.status_code == 200:
        try:
            token = response.json().get("token")
        except Exception:  # noqa: BLE001 - the checks report a malformed body
            return
        if isinstance(token, str):
            with _lock:
                _tokens.append(token)

