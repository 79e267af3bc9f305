"""Hostile HTTP the fuzzer does not send, over real HTTP to the local stack: malformed and
non-UTF-8 JSON, JSON that is not an object, nesting bombs, bodies just under and over the size
limits, wrong types, unicode tricks, unexpected and missing content types, duplicated parameters,
on every route with every method (declared or not). Every answer must be a documented status
(never 5xx), JSON unless documented otherwise, with no traceback.

Also the local server's own regressions: a keep-alive connection must not hand one request's
body to the next, and concurrent requests must never see each other's parameters.
"""
from __future__ import annotations

import concurrent.futures
import json
import re
import socket
import threading
import time
from typing import Any

import pytest
import requests

MIB = 1024 * 1024
BODIES: dict[str, bytes] = {
    "empty": b"",
    "malformed": b'{"consumerAddress": ',
    "not utf-8": b"\xff\xfe\xfa{}",
    "array": b"[1, 2, 3]",
    "string": b'"0x70997970C51812dc3A010C7d01b50e0d17dc79C8"',
    "null": b"null",
    "nan and infinity": b'{"nonce": NaN, "index": Infinity, "chainId": -Infinity, "expiration": 1e400}',
    "array bomb": b"[" * 50_000 + b"]" * 50_000,
    "object bomb": b'{"a":' * 30_000 + b"1" + b"}" * 30_000,
    "wrong types": json.dumps({"consumerAddress": 42, "userAddress": ["x"], "nonce": [1], "signature": {},
                               "dataset": "x", "datasets": {"a": 1}, "algorithm": 7, "environment": {},
                               "compute": [], "jobId": 1.5, "index": -1, "address": None, "token": False}).encode(),
    "huge numbers": json.dumps({"nonce": 10**100, "chainId": 10**30, "index": 10**20, "expiration": -10**40}).encode(),
    "unicode": json.dumps({"consumerAddress": "0x" + "𝟎" * 40, "userAddress": "0x" + "٠" * 40, "nonce": "١٢٣",
                           "jobId": "\u202e\u0000\ud7ff", "documentId": "did:op:\u202egpj", "index": "٣",
                           "dataset": {"documentId": "did:op:" + "é" * 64, "serviceId": "\x00"}}).encode(),
    "just under 1 MiB": json.dumps({"x": "a" * (MIB - 20)}).encode(),
    "over 1 MiB": b'{"x": "' + b"a" * MIB + b'"}',
    "over 2 MiB": b"a" * (2 * MIB + 1),
}
CONTENT_TYPES = [None, "application/json", "application/json; charset=utf-8", "text/plain",
                 "application/octet-stream", "application/xml", "multipart/form-data; boundary=x"]
UNDECLARED = ["GET", "POST", "PUT", "DELETE", "PATCH", "TRACE", "QUERY", "HEAD", "OPTIONS"]
NOT_JSON = {201, 302, 414}


def _documented(spec: dict[str, Any]) -> dict[tuple[str, str], set[int]]:
    return {(path, method.upper()): {int(code) for code in operation["responses"]}
            for path, item in spec["paths"].items() for method, operation in item.items()}


def _check(response: requests.Response, allowed: set[int], what: str) -> None:
    assert response.status_code < 500, (what, response.status_code, response.text[:300])
    assert response.status_code in allowed, (what, response.status_code, response.text[:300])
    assert "Traceback" not in response.text and "File \"" not in response.text, what
    if response.status_code not in NOT_JSON and response.request.method not in ("HEAD", "OPTIONS"):
        assert response.headers.get("Content-Type", "").startswith("application/json"), (what, response.headers)
        assert isinstance(response.json(), (dict, list)), what


def test_every_route_and_method_against_hostile_bodies(local_stack):
    base = local_stack["providerUrl"]
    session = requests.Session()
    documented = _documented(session.get(base + "/spec", timeout=10).json())
    paths = sorted({path for path, _ in documented})
    sent = 0
    for path in paths:
        for method in UNDECLARED:
            allowed = documented.get((path, method))
            if allowed is None:  # the body limit comes before routing
                allowed = {405, 413} if method != "OPTIONS" else {200, 405, 413}
            for index, (name, body) in enumerate(BODIES.items()):
                # every body with JSON; a rotating other content type so each one meets every body somewhere
                for content_type in {"application/json", CONTENT_TYPES[(index + len(path)) % len(CONTENT_TYPES)]}:
                    headers = {"Content-Type": content_type} if content_type else {}
                    try:
                        response = session.request(method, base + path, data=body, headers=headers, timeout=30)
                    except requests.ConnectionError:
                        # the server may close the connection after refusing an oversized body
                        assert len(body) > 2 * MIB, (method, path, name)
                        session = requests.Session()
                        continue
                    _check(response, allowed, f"{method} {path} {name} {content_type}")
                    sent += 1
    print(f"{sent} hostile requests over {len(paths)} paths x {len(UNDECLARED)} methods x {len(BODIES)} bodies")
    assert sent > len(paths) * len(UNDECLARED) * len(BODIES)


@pytest.mark.parametrize("query", [
    "userAddress=0x70997970C51812dc3A010C7d01b50e0d17dc79C8&userAddress=0x0000000000000000000000000000000000000000",
    "userAddress=0x70997970C51812dc3A010C7d01b50e0d17dc79C8&userAddress=0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    "userAddress", "userAddress=", "userAddress[]=0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    "userAddress=%00%ff%fe", "userAddress=%F0%9F%92%A9" * 100, "a=" + "b" * 60000,
    "userAddress=0x70997970C51812dc3A010C7d01b50e0d17dc79C8%0d%0aSet-Cookie:%20x=1",
])
def test_hostile_query_strings(local_stack, query):
    base = local_stack["providerUrl"]
    response = requests.get(f"{base}/api/services/nonce?{query}", timeout=30)
    _check(response, {200, 400, 414}, query[:60])
    assert "Set-Cookie" not in response.headers


def test_a_keep_alive_connection_never_mixes_bodies(local_stack):
    """Regression: the local server handed the first request's body to every later request on the
    same connection, and left their own bodies unread to be parsed as the next request line."""
    port = int(local_stack["providerUrl"].rsplit(":", 1)[1])
    body = b'{"userAddress": "0x1111111111111111111111111111111111111111"}'
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"POST /api/services/nonce HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                           + b"GET /api/services/nonce?userAddress=0x0000000000000000000000000000000000000000 HTTP/1.1\r\n"
                           b"Host: x\r\n\r\n"
                           + b"POST /api/services/initializeCompute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 6\r\n\r\n[1, 2]"
                           + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    statuses = re.findall(r"HTTP/1\.1 (\d{3}) ", received.decode(errors="replace"))
    assert statuses == ["405", "200", "400", "200"], received[-2000:]
    assert b'{"nonce": 0}' in received and b"body must be a JSON object" in received


def test_concurrent_requests_never_see_each_others_parameters():
    """Regression: Chalice keeps the request being served on the app object, so with the local
    server's threads a view could read another thread's request. Made deterministic here: one
    request is held between Chalice storing it and the view reading it while another comes in."""
    from chalice import Chalice
    from chalice.config import Config
    from chalice.local import LocalGateway

    from chalicelib.http import Api
    from devstack.api_server import per_thread_requests

    def answers(app: Chalice) -> list[str]:
        api = Api(app)
        held, release = threading.Event(), threading.Event()

        @app.middleware("http")
        def hold_the_first(event, get_response):
            if event.query_params and event.query_params.get("who") == "first":
                held.set()
                release.wait(5)
            return get_response(event)

        @api.route("/who", "GET", endpoint="who")
        def who(call):
            return {"who": call.params.get("who")}

        gateway = LocalGateway(app, Config())

        def ask(name: str) -> str:
            response = gateway.handle_request("GET", f"/who?who={name}", {"host": "x"}, None)
            return json.loads(response["body"])["who"]

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(ask, "first")
            assert held.wait(5)
            second = pool.submit(ask, "second")
            time.sleep(0.2)
            release.set()
            return [first.result(10), second.result(10)]

    assert answers(Chalice("plain")) == ["second", "second"], "the unprotected app must show the race"
    assert answers(per_thread_requests(Chalice("per-thread"))) == ["first", "second"]
