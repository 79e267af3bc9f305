"""A signature is good once, on one route (DESIGN §3.2, issue 20 observation 2).

Several signed routes sign the same shape (v4's token routes, its status/stop/delete without a
job, and Ocean Node's invalidation all sign `address + nonce`), so a signature spent on one
route must be refused on every other. The routes are the app's own signed operations, and each
one's message comes from its request model (`message_fields`, `command`), so a new signed route
joins the matrix by itself: the test signs once, uses the signature on route A (accepted, or
refused for any reason after authentication: the nonce is then spent), then on route B, which
must refuse it as a replay.
"""
from __future__ import annotations

import itertools
import json
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import pytest

import app as app_module
from chalicelib.http import Operation
from signing import CONSUMER_KEY, address, sign

CONSUMER = address(CONSUMER_KEY)
# Routes by path and method: an alternative (ocean.py's v4 requests at /node, chalicelib.node.ocean_py)
# is its root twin's model and function, reached by what a request carries, so the twin stands for it.
SIGNED = [operation for operation in app_module.api.operations if operation.signed and operation.accepts is None]
# Fields no message carries that bring a request past validation to its route's own checks, so
# that route A refuses for the route's reasons (an invalid token, an unknown job) or accepts.
# A route without an entry is still in the matrix: refused at validation, after authentication.
PAST_VALIDATION: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/api/services/createAuthToken"): {"expiration": "{expiration}"},
    ("DELETE", "/api/services/deleteAuthToken"): {"token": "not-a-token"},
    ("POST", "/node/api/services/auth/token/invalidate"): {"token": "not-a-token"},
    ("PUT", "/node/api/services/compute"): {"jobId": "no-such-job"},
    ("GET", "/node/api/services/computeResult"): {"jobId": "no-such-job", "index": 0},
    ("GET", "/node/api/services/computeStreamableLogs"): {"jobId": "no-such-job"},
    ("GET", "/node/api/services/computeReceipt"): {"jobId": "no-such-job"},
    ("GET", "/node/api/services/computeAudit"): {"documentId": "did:op:1"},
    ("GET", "/node/api/services/computeAuditResult"): {"documentId": "did:op:1", "jobId": "no-such-job", "index": 0},
    ("POST", "/node/api/services/computeRelease"): {"documentId": "did:op:1", "jobId": "no-such-job", "decision": "release"},
    ("POST", "/node/api/services/freeCompute"): {"environment": "no-such-environment", "algorithm": {"documentId": "did:op:1"},
                                                 "datasets": [{"documentId": "did:op:1", "serviceId": "0"}]},
}
TEXT = "job-7"  # what a route with fields before the nonce signs there (ends with a digit: see RESPLIT)


def name(operation: Operation) -> str:
    return f"{operation.method} {operation.path}"


def free_fields(operation: Operation) -> tuple[str, ...]:
    """The fields of the message besides the signer's: where a route carries text before the nonce."""
    model = operation.model
    return tuple(path for path in model.message_fields if path != model.signer_field)


@dataclass(frozen=True)
class Use:
    """One use of the signature: a route, the text it carries before the nonce, and how many of
    that text's trailing digits it moves into the nonce (the same message, split elsewhere)."""

    operation: Operation
    text: str
    moved: int = 0

    def can_carry(self) -> bool:
        return (self.text == "" or bool(free_fields(self.operation))) and self.moved <= len(self.text)

    def message(self, nonce: int) -> str:
        """What this use signs: the same whatever the split, so one signature serves both uses of a pair."""
        return CONSUMER + self.text + str(nonce) + self.operation.model.command

    def request(self, client, nonce: int, signature: str):
        operation, model = self.operation, self.operation.model
        carried = self.text[:len(self.text) - self.moved]
        nonce_text = self.text[len(carried):] + str(nonce)
        params: dict[str, Any] = {}
        extra = PAST_VALIDATION.get((operation.method, operation.path), {})
        for key, value in extra.items():
            params[key] = str(int(time.time()) + 600) if value == "{expiration}" else value
        params.update({model.signer_field: CONSUMER, "nonce": nonce_text, "signature": signature})
        if carried:
            _put(params, free_fields(operation)[0], carried)
        if operation.in_body:
            return client.http.request(operation.method, operation.path, body=json.dumps(params).encode(),
                                       headers={"Content-Type": "application/json"})
        assert all(not isinstance(value, dict) for value in params.values()), name(operation)
        return client.http.request(operation.method, operation.path + "?" + urllib.parse.urlencode(params),
                                   headers={})


def _put(params: dict[str, Any], path: str, value: str) -> None:
    *parents, last = path.split(".")
    for part in parents:
        params = params.setdefault(part, {})
    params[last] = value


def pairs() -> list[tuple[Use, Use]]:
    """Every ordered pair of uses of one signature: the same command after the nonce (Ocean Node's
    commands differ per route, so their routes pair only with themselves), the same text before it."""
    found = []
    for first, second in itertools.product(SIGNED, repeat=2):
        if first.model.command != second.model.command:
            continue
        for text, moved in (("", 0), (TEXT, 0), (TEXT, 1)):
            a, b = Use(first, text), Use(second, text, moved)
            if a.can_carry() and b.can_carry():
                found.append((a, b))
    return found


PAIRS = pairs()


def pair_id(pair: tuple[Use, Use]) -> str:
    a, b = pair
    shape = "address+nonce" if not a.text else ("address+text+nonce" if not b.moved else "resplit")
    return f"{name(a.operation)} -> {name(b.operation)} [{shape}{'+' + a.operation.model.command if a.operation.model.command else ''}]"


def current_nonce(client) -> int:
    return json.loads(client.http.get(f"/api/services/nonce?userAddress={CONSUMER}").body)["nonce"]


def test_every_signed_route_declares_its_message():
    """The matrix reads each route's message from its model: every signed route has one."""
    from chalicelib.schemas import SignedParams

    # v4's 7, Ocean Node's 8 (its DDO validation included), v4's delete and token routes at /node
    # for ocean.py (3), the console's 8, the data owner's 8
    assert len(SIGNED) == 34, [name(op) for op in SIGNED]
    assert all(issubclass(op.model, SignedParams) for op in SIGNED)
    assert {name(op) for op in SIGNED if op.model.command == "" and not free_fields(op)} == {
        "GET /api/services/createAuthToken", "DELETE /api/services/deleteAuthToken",
        "GET /node/api/services/createAuthToken", "DELETE /node/api/services/deleteAuthToken",
        "POST /node/api/services/auth/token/invalidate"}
    assert len(PAIRS) == 444, len(PAIRS)


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_a_signature_used_on_one_route_is_refused_on_every_route_of_its_shape(client, pair):
    first, second = pair
    nonce = 1000
    signature = sign(CONSUMER_KEY, first.message(nonce))
    answer = first.request(client, nonce, signature)
    assert answer.status_code < 500, (answer.status_code, answer.body)
    assert current_nonce(client) == nonce, f"route A ({answer.status_code} {answer.body[:200]!r}) did not spend the nonce"
    replay = second.request(client, nonce, signature)
    body = json.loads(replay.body)
    assert replay.status_code == 400 and "nonce" in body.get("errors", {}), (replay.status_code, body)
    assert current_nonce(client) == nonce


def test_invalidate_with_a_bad_token_spends_the_signature_v4_create_token_refuses_it(client):
    """Observation 2: the invalidation answered 400 without spending the nonce, and the same
    signature then got a 24-hour token from v4's createAuthToken."""
    nonce = int(time.time() * 1000)
    signature = sign(CONSUMER_KEY, CONSUMER + str(nonce))
    invalidate = client.http.post("/node/api/services/auth/token/invalidate", headers={"Content-Type": "application/json"},
                                  body=json.dumps({"address": CONSUMER, "nonce": str(nonce), "signature": signature,
                                                   "token": "not-a-token"}))
    assert invalidate.status_code == 400 and json.loads(invalidate.body) == {"error": "Token is invalid."}
    create = client.http.get("/api/services/createAuthToken?" + urllib.parse.urlencode({
        "address": CONSUMER, "nonce": nonce, "signature": signature, "expiration": int(time.time()) + 600}))
    assert create.status_code == 400 and "nonce" in json.loads(create.body)["errors"]
    assert "token" not in json.loads(create.body)


def test_refused_delete_token_spends_the_signature_delete_jobs_refuses_it(client):
    """Observation 2: a refused deleteAuthToken, then DELETE /api/services/compute (every job of
    the caller) with the same signature, authenticated."""
    nonce = int(time.time() * 1000)
    signature = sign(CONSUMER_KEY, CONSUMER + str(nonce))
    refused = client.http.delete("/api/services/deleteAuthToken?" + urllib.parse.urlencode({
        "address": CONSUMER, "nonce": nonce, "signature": signature, "token": "not-a-token"}))
    assert refused.status_code == 400 and json.loads(refused.body) == {"error": "Token is invalid."}
    deleted = client.http.delete("/api/services/compute?" + urllib.parse.urlencode({
        "consumerAddress": CONSUMER, "nonce": nonce, "signature": signature}))
    assert deleted.status_code == 400 and "nonce" in json.loads(deleted.body)["errors"]


def test_a_request_refused_by_validation_after_its_signature_checks_spends_the_nonce(client):
    """Everything but the signed parts is checked after the nonce is spent: a createAuthToken
    without its expiration leaves no signature behind for the routes of its shape."""
    nonce = 5
    signature = sign(CONSUMER_KEY, CONSUMER + str(nonce))
    missing = client.http.get("/api/services/createAuthToken?" + urllib.parse.urlencode(
        {"address": CONSUMER, "nonce": nonce, "signature": signature}))
    assert missing.status_code == 400 and json.loads(missing.body)["errors"] == {"expiration": ["required"]}
    assert current_nonce(client) == nonce


def test_a_bad_signature_spends_nothing(client):
    """Only a good signature spends the nonce: anyone could otherwise burn a consumer's nonces."""
    from signing import OTHER_KEY

    forged = sign(OTHER_KEY, CONSUMER + "9")
    for response in (
        client.http.delete("/api/services/compute?" + urllib.parse.urlencode(
            {"consumerAddress": CONSUMER, "nonce": 9, "signature": forged})),
        client.http.post("/node/api/services/auth/token/invalidate", headers={"Content-Type": "application/json"},
                         body=json.dumps({"address": CONSUMER, "nonce": "9", "signature": forged, "token": "x"})),
    ):
        assert response.status_code == 400 and json.loads(response.body)["errors"]["signature"] == [
            "Invalid signature provided."]
    assert current_nonce(client) == 0
