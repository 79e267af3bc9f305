"""Fault injection for the in-process suites: AWS errors answered by botocore itself (the request
never reaches moto), and network peers that misbehave (a chain RPC that never answers, one that
answers for another chain, a metadata service that is down)."""
from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

from botocore.awsrequest import AWSResponse


class AwsFault:
    """Answers matching calls of one botocore client operation with an AWS error (via the
    client's `before-call` event, so botocore raises exactly what AWS's answer would raise).

    `when(params)` selects the calls (e.g. by TableName); `times` limits how many are failed.
    """

    def __init__(self, code: str, status: int = 400, when: Callable[[dict[str, Any]], bool] = lambda params: True,
                 times: int | None = None, **extra: Any):
        self.code, self.status, self.when, self.times, self.extra = code, status, when, times, extra
        self.failed: list[dict[str, Any]] = []

    def __call__(self, params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        body = _api_params(params)
        if not self.when(body) or (self.times is not None and len(self.failed) >= self.times):
            return None
        self.failed.append(body)
        parsed = {"Error": {"Code": self.code, "Message": "injected fault"},
                  "ResponseMetadata": {"HTTPStatusCode": self.status}, **self.extra}
        return AWSResponse("https://fault.invalid/", self.status, {}, None), parsed


def _api_params(request: dict[str, Any]) -> dict[str, Any]:
    """The call's parameters from botocore's serialized request (JSON protocols: the body)."""
    body = request.get("body")
    if isinstance(body, (bytes, str)) and body:
        try:
            parsed = json.loads(body)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return body if isinstance(body, dict) else {}


@contextmanager
def aws_fault(clients: list[Any], operation: str, fault: AwsFault) -> Iterator[AwsFault]:
    """Inject `fault` into `operation` (e.g. "dynamodb.UpdateItem") of every given client."""
    event = f"before-call.{operation}"
    unique = {id(client): client for client in clients}.values()
    for client in unique:
        client.meta.events.register_first(event, fault)
    try:
        yield fault
    finally:
        for client in unique:
            client.meta.events.unregister(event, fault)


def dynamodb_clients() -> list[Any]:
    """The botocore clients behind every PynamoDB model (jobs, nonces, orders, ...)."""
    from chalicelib import models

    return [model._get_connection().connection.client for model in models.ALL_MODELS]


def table_is(name: str) -> Callable[[dict[str, Any]], bool]:
    """Calls on the table `name`; a transaction, if any of its items is one of that table's."""
    def on_table(params: dict[str, Any]) -> bool:
        actions = [action for item in params.get("TransactItems", []) for action in item.values()]
        return params.get("TableName") == name or any(action.get("TableName") == name for action in actions)

    return on_table


def table_is_not(name: str) -> Callable[[dict[str, Any]], bool]:
    """Calls on any table but `name` (a transaction: none of whose items is one of its)."""
    on_table = table_is(name)
    return lambda params: not on_table(params)


@contextmanager
def json_rpc_stub(chain_id: int) -> Iterator[str]:
    """An Ethereum JSON-RPC endpoint that answers for chain `chain_id` (and nothing else)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            calls = request if isinstance(request, list) else [request]
            answers = [{"jsonrpc": "2.0", "id": call.get("id"), "result": hex(chain_id)}
                       if call.get("method") in ("eth_chainId", "net_version") else
                       {"jsonrpc": "2.0", "id": call.get("id"), "error": {"code": -32601, "message": "not here"}}
                       for call in calls]
            body = json.dumps(answers if isinstance(request, list) else answers[0]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
