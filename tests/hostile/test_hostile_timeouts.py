"""Dependencies that accept connections and never answer: every request still answers within
the request budget (chalicelib.budget), with a 503 and nothing half made.

DynamoDB is black-holed by pointing the PynamoDB models at a peer that accepts and never
answers (in-process moto leaves requests to other hosts alone); the chain by a Chains whose RPC
is such a peer, with the configured RPC timeout. A start that finds too little time left refuses
before it reserves anything.
"""
from __future__ import annotations

import json
import threading
import time
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from fakes import black_hole
from lifecycle_helpers import initialize, order_both, post_start, start_body
from signing import CONSUMER_KEY, address
from test_lifecycle_compute import provider  # noqa: F401 (fixture)

CONSUMER = address(CONSUMER_KEY)


def _budget() -> float:
    from chalicelib import budget

    return budget.REQUEST_BUDGET_SECONDS


def _timed_start_through(rpc_url, client, chain, published, monkeypatch, dataset_tx, algorithm_tx):
    """POST /compute with the provider's chain calls sent to `rpc_url`: (status, answer, seconds)."""
    from chalicelib import services
    from chalicelib.chain.web3access import Chains

    monkeypatch.setattr(services, "chains", lambda: Chains({chain.chain_id: rpc_url}, services.settings().rpc_timeout))
    services.compute_workflow.cache_clear()
    try:
        began = time.monotonic()
        status, answer = post_start(client, start_body(published, chain.consumer, time.time_ns(), dataset_tx, algorithm_tx))
        return status, answer, time.monotonic() - began
    finally:
        services.compute_workflow.cache_clear()


@contextmanager
def dynamodb_black_holed() -> Iterator[None]:
    """Every table behind a peer that never answers, for the duration of the block."""
    from chalicelib import models

    with black_hole() as url:
        for model in models.ALL_MODELS:
            model.Meta.host, model._connection = url, None
        try:
            yield
        finally:
            for model in models.ALL_MODELS:
                model.Meta.host, model._connection = None, None


def _unavailable(response) -> dict:
    assert response.status_code == 503, (response.status_code, response.body)
    body = json.loads(response.body)
    assert "Traceback" not in json.dumps(body) and "127.0.0.1" not in json.dumps(body)
    return body


def test_budget_adds_up_to_less_than_the_gateway_limit():
    """The per-call limits are what the budget says, and one hung call of each kind fits in it."""
    from chalicelib import aws, budget, config, models

    assert budget.REQUEST_BUDGET_SECONDS <= 25 < 29
    for model in models.ALL_MODELS:
        assert model.Meta.connect_timeout_seconds == budget.DYNAMODB_CONNECT_SECONDS
        assert model.Meta.read_timeout_seconds == budget.DYNAMODB_READ_SECONDS
        assert model.Meta.max_retry_attempts == budget.DYNAMODB_RETRIES
    assert budget.worst_dynamodb_call() + budget.worst_aws_call() + budget.RPC_TIMEOUT_SECONDS \
        < budget.REQUEST_BUDGET_SECONDS
    assert budget.START_RESERVE_SECONDS < budget.REQUEST_BUDGET_SECONDS
    settings = config.load_settings({"CHAINS": '{"1": "http://x"}', "RESULTS_BUCKET": "b"})
    assert settings.rpc_timeout == budget.RPC_TIMEOUT_SECONDS
    options = aws.client_config("batch")
    assert (options.connect_timeout, options.read_timeout) == (budget.AWS_CONNECT_SECONDS, budget.AWS_READ_SECONDS)
    assert options.retries == {"total_max_attempts": budget.AWS_ATTEMPTS, "mode": "standard"}


def test_nonce_with_dynamodb_black_holed_answers_503_within_the_budget(client):
    with dynamodb_black_holed():
        began = time.monotonic()
        response = client.http.get(f"/api/services/nonce?userAddress={CONSUMER}")
        took = time.monotonic() - began
    print(f"GET /nonce, DynamoDB black-holed: {response.status_code} in {took:.1f} s")
    assert "Nonce store" in _unavailable(response)["error"]
    assert took < _budget(), f"{took:.1f} s"
    assert client.http.get(f"/api/services/nonce?userAddress={CONSUMER}").status_code == 200


def test_start_with_dynamodb_black_holed_answers_503_within_the_budget(client, provider):  # noqa: F811
    chain, batch, published = provider
    account = chain.consumer
    quote = initialize(client, published, account.address)
    dataset_tx, algorithm_tx = order_both(chain, published, quote)
    body = start_body(published, account, time.time_ns(), dataset_tx, algorithm_tx)
    with dynamodb_black_holed():
        began = time.monotonic()
        status, answer = post_start(client, body)
        took = time.monotonic() - began
    print(f"POST /compute, DynamoDB black-holed: {status} in {took:.1f} s")
    assert status == 503, answer
    assert took < _budget(), f"{took:.1f} s"
    batch.stubber.assert_no_pending_responses()


def test_start_with_the_chain_black_holed_answers_503_within_the_budget(client, provider, monkeypatch):  # noqa: F811
    chain, batch, published = provider
    from chalicelib.models import OrderUse

    account = chain.consumer
    quote = initialize(client, published, account.address)
    dataset_tx, algorithm_tx = order_both(chain, published, quote)
    with black_hole() as url:
        status, answer, took = _timed_start_through(url, client, chain, published, monkeypatch, dataset_tx, algorithm_tx)
    print(f"POST /compute, chain RPC black-holed: {status} in {took:.1f} s")
    assert status == 503 and "not reachable" in answer["error"], answer
    assert took < _budget(), f"{took:.1f} s"
    assert list(OrderUse.scan()) == []


@contextmanager
def slow_rpc(upstream: str, delay: float) -> Iterator[tuple[str, list[float]]]:
    """A JSON-RPC proxy to `upstream` that answers every call correctly, `delay` seconds late
    (a node that is slow, not down); yields its URL and when each call arrived."""
    calls: list[float] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            calls.append(time.monotonic())
            time.sleep(delay)
            request = urllib.request.Request(upstream, data=body, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    payload = answer.read()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                pass  # the caller gave up on us

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", calls
    finally:
        server.shutdown()
        server.server_close()


def test_start_with_a_slow_chain_answers_within_the_budget(client, provider, monkeypatch):  # noqa: F811
    """Each RPC call answers just inside RPC_TIMEOUT, but a start makes many: the calls stop at
    the request's deadline and nothing is reserved."""
    chain, batch, published = provider
    from chalicelib import services
    from chalicelib.models import JobRecord, OrderUse

    account = chain.consumer
    quote = initialize(client, published, account.address)
    dataset_tx, algorithm_tx = order_both(chain, published, quote)
    delay = services.settings().rpc_timeout * 0.8
    with slow_rpc(chain.rpc_url, delay) as (url, calls):
        status, answer, took = _timed_start_through(url, client, chain, published, monkeypatch, dataset_tx, algorithm_tx)
    print(f"POST /compute, chain answering {delay:.1f} s late: {status} in {took:.1f} s after {len(calls)} RPC calls")
    assert status == 503, answer
    assert took < _budget() + 1.5, f"{took:.1f} s"  # the last call ends at the deadline; 4 s are left to 29
    assert list(OrderUse.scan()) == [] and list(JobRecord.scan()) == []


class _Context:
    """A Lambda context with a fixed amount of time left."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def get_remaining_time_in_millis(self) -> int:
        return int(self.seconds * 1000)


def test_deadline_reads_the_lambda_clock_else_the_configured_budget():
    from chalicelib.budget import Deadline
    from chalicelib.errors import ServiceUnavailable

    assert Deadline.for_invocation(_Context(3)).remaining() <= 3
    assert 20 < Deadline.for_invocation(_Context(600)).remaining() <= _budget()
    assert 20 < Deadline.for_invocation(None).remaining() <= _budget()
    with pytest.raises(ServiceUnavailable):
        Deadline.for_invocation(_Context(3)).require(5)
    Deadline.for_invocation(_Context(10)).require(5)


def test_calls_never_wait_past_the_request_deadline():
    from chalicelib import budget
    from chalicelib.errors import ServiceUnavailable

    assert budget.call_timeout(5.0) == 5.0  # no request deadline: the call's own limit
    with budget.within(budget.Deadline(2.0)):
        assert 1.5 < budget.call_timeout(5.0) <= 2.0
        assert budget.call_timeout(1.0) == 1.0
    with budget.within(budget.Deadline(0.05)), pytest.raises(ServiceUnavailable):
        budget.call_timeout(5.0)
    assert budget.call_timeout(5.0) == 5.0


def test_start_with_too_little_time_left_refuses_before_reserving(client, provider, tmp_path):  # noqa: F811
    """A Lambda whose timeout leaves less than the start needs after its reservation (Chalice's
    own LambdaContext, from a stage with a short lambda_timeout): 503, nothing reserved."""
    chain, batch, published = provider
    from chalice.test import Client

    import app as app_module
    from chalicelib import budget, services
    from chalicelib.models import JobRecord, OrderUse

    account = chain.consumer
    quote = initialize(client, published, account.address)
    dataset_tx, algorithm_tx = order_both(chain, published, quote)
    short = tmp_path / ".chalice"
    short.mkdir()
    (short / "config.json").write_text(json.dumps({"version": "2.0", "app_name": "ocean-c2d-provider", "stages": {
        "local": {"api_gateway_stage": "api", "lambda_timeout": int(budget.START_RESERVE_SECONDS) - 1}}}))
    with Client(app_module.app, stage_name="local", project_dir=str(tmp_path)) as hurried:
        status, answer = post_start(hurried, start_body(published, account, time.time_ns(), dataset_tx, algorithm_tx))
    assert status == 503 and "time" in answer["error"], answer
    assert list(OrderUse.scan()) == [] and list(JobRecord.scan()) == []
    assert services.usage_counter().current(["ocean-c2d-cpu"]) == {"ocean-c2d-cpu": 0}

    batch.expect_new_definition()
    batch.expect_submit()
    status, answer = post_start(client, start_body(published, account, time.time_ns(), dataset_tx, algorithm_tx))
    assert status == 200, answer
