"""Replay and race over real HTTP: the local stack (Chalice's local server, DynamoDB on the moto
server), many concurrent clients sending bursts of signed requests with replayed, duplicated
and out-of-order nonces.

Every scenario has an exact expected outcome: a nonce is accepted at most once, a signed request
is accepted only if its nonce is above every nonce its signer used before, the stored nonce ends
at the highest nonce sent (no lost update), and nothing but a nonce refusal answers the rest.
Signed routes used: createAuthToken (a side effect: a token) and signed GET status, with a
signature or with an AuthToken.
"""
from __future__ import annotations

import concurrent.futures
import threading
import time
from collections import Counter

import jwt

from hostile_clients import STATUS, TOKEN, SigningClient, is_nonce_refusal

BURST = 8  # copies of one signed request sent at the same instant
ROUNDS = 5
CLIENTS = 6
SEQUENCE = [5, 3, 5, 9, 7, 9, 12, 11, 12, 20, 1, 20]  # relative nonces, sent in this order
ACCEPTED_IN_SEQUENCE = [5, 9, 12, 20]  # each is above every nonce sent before it


def _burst(client: SigningClient, path: str, params: dict, copies: int, headers: dict | None = None) -> list:
    """`copies` threads send the identical request at once (released together by a barrier)."""
    barrier = threading.Barrier(copies)

    def send(_: int):
        barrier.wait()
        return client.get(path, params, headers)

    with concurrent.futures.ThreadPoolExecutor(copies) as pool:
        return list(pool.map(send, range(copies)))


def test_identical_signed_requests_in_bursts_are_accepted_once(local_stack):
    """CLIENTS clients at once, each replaying ROUNDS signed requests BURST times simultaneously,
    alternating createAuthToken and signed status: exactly one copy of each is accepted."""
    clients = [SigningClient(local_stack["providerUrl"]) for _ in range(CLIENTS)]
    start = time.time_ns()

    def run(client: SigningClient) -> list[tuple[int, list]]:
        rounds = []
        for round_ in range(ROUNDS):
            nonce = start + round_
            if round_ % 2:
                rounds.append((nonce, _burst(client, STATUS, client.status_params(nonce), BURST)))
            else:
                rounds.append((nonce, _burst(client, TOKEN, client.token_params(nonce), BURST)))
        return rounds

    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        outcomes = list(pool.map(run, clients))

    total = accepted = 0
    for client, rounds in zip(clients, outcomes):
        for nonce, responses in rounds:
            total += len(responses)
            ok = [r for r in responses if r.status_code == 200]
            accepted += len(ok)
            assert len(ok) == 1, (nonce, [(r.status_code, r.text[:120]) for r in responses])
            assert all(is_nonce_refusal(r) for r in responses if r.status_code != 200)
        assert client.current_nonce() == start + ROUNDS - 1
    assert (total, accepted) == (CLIENTS * ROUNDS * BURST, CLIENTS * ROUNDS)


def test_out_of_order_and_duplicated_nonces_from_concurrent_clients(local_stack):
    """Many clients at once, each sending SEQUENCE in order (sequentially, so the expectation is
    exact) over both signed routes, every request also sent a second time right after itself."""
    clients = [SigningClient(local_stack["providerUrl"]) for _ in range(12)]
    base = time.time_ns()

    def run(client: SigningClient) -> list[tuple[int, int]]:
        seen = []
        for position, relative in enumerate(SEQUENCE):
            nonce = base + relative
            if position % 2:
                path, params = STATUS, client.status_params(nonce)
            else:
                path, params = TOKEN, client.token_params(nonce)
            for _ in range(2):
                response = client.get(path, params)
                assert response.status_code == 200 or is_nonce_refusal(response), response.text
                seen.append((relative, response.status_code))
        return seen

    with concurrent.futures.ThreadPoolExecutor(len(clients)) as pool:
        outcomes = list(pool.map(run, clients))
    for client, seen in zip(clients, outcomes):
        assert [relative for relative, status in seen if status == 200] == ACCEPTED_IN_SEQUENCE, seen
        assert client.current_nonce() == base + max(SEQUENCE)
    assert sum(len(seen) for seen in outcomes) == len(clients) * len(SEQUENCE) * 2


def test_concurrent_distinct_nonces_never_lose_the_highest(local_stack):
    """One address, many distinct nonces at once: any subset may win the race, but each nonce
    at most once, the highest always, the stored nonce never goes down (watched by a reader
    throughout), and every accepted createAuthToken yields a distinct, working token."""
    client = SigningClient(local_stack["providerUrl"])
    base = time.time_ns()
    nonces = [base + offset for offset in range(1, 25)]
    observed: list[int] = []
    done = threading.Event()

    def watch() -> None:
        reader = SigningClient(local_stack["providerUrl"], client.key)
        while not done.is_set():
            observed.append(reader.current_nonce())

    barrier = threading.Barrier(len(nonces))

    def send(nonce: int):
        params = client.token_params(nonce)
        barrier.wait()
        return nonce, client.get(TOKEN, params)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(len(nonces)) as pool:
            results = list(pool.map(send, nonces))
    finally:
        done.set()
        watcher.join()

    accepted = [nonce for nonce, response in results if response.status_code == 200]
    assert all(response.status_code == 200 or is_nonce_refusal(response) for _, response in results)
    assert nonces[-1] in accepted and len(accepted) == len(set(accepted)) >= 1
    assert observed == sorted(observed), "the stored nonce went backwards"
    assert client.current_nonce() == nonces[-1]
    tokens = [response.json()["token"] for _, response in results if response.status_code == 200]
    assert len({jwt.decode(t, options={"verify_signature": False})["jti"] for t in tokens}) == len(tokens)
    response = client.get(STATUS, *client.token_query(nonces[-1] + 1, tokens[-1]))
    assert response.status_code == 200 and response.json() == []


def test_auth_token_requests_replayed_at_once_are_accepted_once(local_stack):
    """An AuthToken replaces the signature, not the nonce: a burst of the same tokened request
    is accepted once, and a stale nonce is refused even with a valid token."""
    client = SigningClient(local_stack["providerUrl"])
    base = time.time_ns()
    token = client.new_token(base)
    statuses = Counter()
    for round_ in range(1, 4):
        params, headers = client.token_query(base + round_ * 10, token)
        responses = _burst(client, STATUS, params, BURST, headers)
        statuses.update(r.status_code for r in responses)
        assert [r.status_code for r in responses].count(200) == 1
        assert all(is_nonce_refusal(r) for r in responses if r.status_code != 200)
    stale, headers = client.token_query(base + 5, token)
    assert is_nonce_refusal(client.get(STATUS, stale, headers))
    assert statuses == {200: 3, 400: 3 * (BURST - 1)}
    assert client.current_nonce() == base + 30
