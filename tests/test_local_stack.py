"""`make run`'s stack over real HTTP: moto server, Chalice's local server, a real signing client."""
from __future__ import annotations

import collections
import concurrent.futures
import socket
import threading
import time
from pathlib import Path

import requests

from signing import CONSUMER_KEY, address, sign

CONSUMER = address(CONSUMER_KEY)


def test_root_nonce_token_lifecycle_over_http(local_stack):
    base = local_stack["providerUrl"]
    root = requests.get(base + "/", timeout=10).json()
    assert root["providerAddresses"] and root["serviceEndpoints"]["nonce"] == ["GET", "/api/services/nonce"]
    for name, (method, path) in root["serviceEndpoints"].items():
        response = requests.request(method, base + path, timeout=10)
        assert response.status_code < 500, (name, response.text)

    nonce = requests.get(base + "/api/services/nonce", params={"userAddress": CONSUMER}, timeout=10).json()["nonce"]
    nonce += 1
    token = requests.get(base + "/api/services/createAuthToken", timeout=10, params={
        "address": CONSUMER, "nonce": nonce, "signature": sign(CONSUMER_KEY, CONSUMER + str(nonce)),
        "expiration": int(time.time()) + 300}).json()["token"]
    nonce += 1
    deleted = requests.delete(base + "/api/services/deleteAuthToken", timeout=10, params={
        "address": CONSUMER, "nonce": nonce, "token": token, "signature": sign(CONSUMER_KEY, CONSUMER + str(nonce))})
    assert deleted.json() == {"success": "Token has been deactivated."}
    assert requests.get(base + "/api/services/nonce", params={"userAddress": CONSUMER}, timeout=10).json() == {"nonce": nonce}


def test_the_request_log_holds_no_query_string(local_stack):
    """ocean.py sends v4's token routes their signature in the query string; the local server's
    request log names the route without it (issue 20 #2)."""
    base = local_stack["providerUrl"]
    nonce = requests.get(base + "/api/services/nonce", params={"userAddress": CONSUMER}, timeout=10).json()["nonce"] + 1
    signature = sign(CONSUMER_KEY, CONSUMER + str(nonce))
    answer = requests.get(base + "/api/services/createAuthToken", timeout=10, params={
        "address": CONSUMER, "nonce": nonce, "signature": signature, "expiration": int(time.time()) + 300})
    assert answer.status_code == 200
    log = (Path(local_stack["logDir"]) / "api.log").read_text(errors="replace")
    assert '"GET /api/services/createAuthToken?… HTTP/1.1" 200' in log
    assert signature[2:] not in log


def test_unknown_route_wrong_method_and_bad_input_are_json_4xx(local_stack):
    base = local_stack["providerUrl"]
    cases = [
        ("GET", "/nothing/here", None, 404),
        ("POST", "/", None, 405),
        ("GET", "/api/services/nonce", None, 400),
        ("GET", "/api/services/nonce?userAddress=0x12", None, 400),
        ("POST", "/api/services/nonce", b"{not json", 405),
        ("GET", "/api/services/createAuthToken", b"{not json", 400),
        ("GET", "/api/services/createAuthToken", b"[1,2]", 400),
        ("GET", "/api/services/createAuthToken", b"\xff\xfe", 400),
    ]
    for method, path, body, expected in cases:
        response = requests.request(method, base + path, data=body, timeout=10,
                                    headers={"Content-Type": "application/json"})
        assert response.status_code == expected, (method, path, response.text)
        assert isinstance(response.json(), dict)


def test_same_signed_request_from_50_threads_succeeds_once(local_stack):
    """Through the moto server: exactly one of 50 identical signed requests consumes the nonce."""
    base = local_stack["providerUrl"]
    nonce = requests.get(base + "/api/services/nonce", params={"userAddress": CONSUMER}, timeout=10).json()["nonce"] + 1
    params = {"address": CONSUMER, "nonce": nonce, "signature": sign(CONSUMER_KEY, CONSUMER + str(nonce)),
              "expiration": int(time.time()) + 300}
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(lambda _: requests.get(base + "/api/services/createAuthToken", params=params,
                                                        timeout=60).status_code, range(50)))
    assert statuses.count(200) == 1 and statuses.count(400) == 49, statuses


def test_a_burst_of_64_new_connections_is_served_without_a_reset(local_stack):
    """Issue 12: with socketserver's listen backlog of 5, a burst of new connections got resets and
    SYN-retry stalls of seconds; every one of 64 simultaneous connections must get its answer."""
    host, port = local_stack["providerUrl"].removeprefix("http://").split(":")
    barrier = threading.Barrier(64)

    def one(_: int) -> str:
        barrier.wait()
        try:
            with socket.create_connection((host, int(port)), timeout=5) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: provider\r\nConnection: close\r\n\r\n")
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
        except OSError as error:  # a reset, or a stall past the timeout
            return type(error).__name__
        return answer.split(b"\r\n", 1)[0].decode()

    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(one, range(64)))
    assert answers == ["HTTP/1.1 200 OK"] * 64, collections.Counter(answers)
