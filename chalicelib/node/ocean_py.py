"""ocean.py's v4 requests at `<api>/node`.

An asset published for both generations has `serviceEndpoint` `<api>/node` (DESIGN §3.8): ocean.js
(≥ 4) and Ocean's CLI speak Ocean Node's protocol there. ocean.py 3 reads the same root document
but appends each listed path to the service endpoint (its own `urljoin` concatenates), so its v4
requests arrive under `/node` too: initializeCompute, compute (start, status, stop, delete),
computeResult, computeEnvironments, createAuthToken and deleteAuthToken.

Where Ocean Node's protocol has the same path and method, the two are told apart before any
validation (`accepts`): a signed request by the message its signature signs (v4's `consumerAddress
+ <the route's fields> + nonce`, Ocean Node's `consumerAddress + nonce + <command>`: one recovery,
the chosen route checks it again and spends the nonce), an unsigned or token-proven one by what it
carries:

- initializeCompute: v4 sends `compute {env, validUntil}`, Ocean Node's clients `environment`;
- compute POST: v4 sends `dataset` (and `additionalInputs`), Ocean Node's clients always `datasets`;
- compute GET and PUT: v4 names the job's `documentId`, which Ocean Node's clients never send;
- computeEnvironments: v4 asks per `chainId`, Ocean Node's clients never do.

The rest (compute DELETE, createAuthToken, deleteAuthToken) exist only in v4 and are served at
`/node` as they are at `/`. Nothing here is reachable that is not reachable at `/` already.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

Predicate = Callable[[Mapping[str, Any]], bool]


def _initialize(raw: Mapping[str, Any]) -> bool:
    return "compute" in raw and "environment" not in raw


def _start(raw: Mapping[str, Any]) -> bool:
    return "dataset" in raw and "datasets" not in raw


def _job_query(raw: Mapping[str, Any]) -> bool:
    return "documentId" in raw


def _environments(raw: Mapping[str, Any]) -> bool:
    return "chainId" in raw


# v4 endpoint name -> what tells its unsigned (or token-proven) requests apart at /node; None: only
# the signature does (computeResult: both send the same fields). Absent: served at /node as at /,
# having no Ocean Node twin there.
AT_NODE: dict[str, Optional[Predicate]] = {
    "initializeCompute": _initialize,
    "computeStart": _start,
    "computeStatus": _job_query,
    "computeStop": _job_query,
    "computeEnvironments": _environments,
    "computeResult": None,
}
V4_ONLY = ("computeDelete", "create_auth_token", "delete_auth_token")


def accepts(endpoint: str, model: Any) -> Predicate:
    """How the v4 route `endpoint` (request model `model`) takes its requests at /node."""
    shape = AT_NODE[endpoint]

    def predicate(raw: Mapping[str, Any]) -> bool:
        if raw.get("signature") not in (None, "") and hasattr(model, "signed_parts"):
            return _signed_as(model, raw)
        return shape is not None and shape(raw)

    return predicate


def _signed_as(model: Any, raw: Mapping[str, Any]) -> bool:
    """Whether the request's signature signs `model`'s message (never raises: input is raw)."""
    from chalicelib.auth.signatures import recover_address, to_checksum_address

    try:
        parts = model.signed_parts(raw)
        if parts is None or parts.nonce in (None, "") or not isinstance(parts.nonce, (str, int)):
            return False
        signer = recover_address(f"{parts.before}{parts.nonce}{parts.after}", str(parts.signature))
        return signer is not None and signer == to_checksum_address(str(parts.signer))
    except Exception:  # noqa: BLE001 - a malformed address or signature is simply not v4's
        return False


__all__ = ["AT_NODE", "Predicate", "V4_ONLY", "accepts"]
