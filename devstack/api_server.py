"""The local API: Chalice's own local server (what `chalice local` runs), with two fixes so it
answers like our deployed API does: unknown routes get a JSON 404 (deployed, an API Gateway
gateway response does the same), and a malformed Content-Length or an oversized body gets a 4xx
instead of a dropped connection. It also keeps concurrent requests apart (`per_thread_requests`,
and each request on a keep-alive connection reads its own body), and its request log lines carry
no query string: v4's token routes send their signatures there (ocean.py does), and a log line
must not hold a signature that a replay could use."""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import threading

from chalice import Chalice
from chalice.cli.factory import CLIFactory
from chalice.local import (ChaliceRequestHandler, ForbiddenError, LocalDevServer, LocalGateway, LocalGatewayException,
                           ThreadedHTTPServer)

from devstack import local_dispatch

MAX_BODY_BYTES = 2 * 1024 * 1024
# socketserver listens with a backlog of 5: a burst of new connections (a page's assets, a load
# test, 64 consumers polling) overflowed it and got resets and SYN-retry stalls of a second or more.
LISTEN_BACKLOG = 1024
_QUERY = re.compile(r"\?[^\s'\"]*")


def without_query(text: str) -> str:
    """`text` with every query string (from "?" to the next space or quote) cut to "?…"."""
    return _QUERY.sub("?…", text)


class _JsonError(LocalGatewayException):
    def __init__(self, code: int, message: str, close: bool = False):
        """`close`: the body was left unread, so the connection ends here, and the client is told."""
        # CORS as on every route (and as the deployed API's gateway responses): browsers read errors too
        headers = {"Content-Type": "application/json", "Access-Control-Allow-Origin": "*",
                   **({"Connection": "close"} if close else {})}
        super().__init__(headers, ('{"error": "%s"}' % message).encode())
        self.CODE = code


class _Gateway(LocalGateway):
    def handle_request(self, method, path, headers, body):  # type: ignore[override]
        try:
            return super().handle_request(method, path, headers, body)
        except ForbiddenError:
            raise _JsonError(404, "Not found") from None


class _Handler(ChaliceRequestHandler):
    # Headers and body go out in two writes: with Nagle's algorithm the body waits for the
    # client's delayed ACK of the headers, about 40 ms on every keep-alive request.
    disable_nagle_algorithm = True

    def __init__(self, request, client_address, server, app_object, config):  # type: ignore[override]
        self.local_gateway = _Gateway(app_object, config)
        super(ChaliceRequestHandler, self).__init__(request, client_address, server)

    def _parse_payload(self):  # type: ignore[override]
        raw = self.headers.get("content-length", "0").strip()
        if not raw.isdigit():  # the body's end is unknown: nothing after it can be read
            raise _JsonError(400, "Malformed Content-Length", close=True)
        if int(raw) > MAX_BODY_BYTES:
            raise _JsonError(413, "Request body too large", close=True)
        return super()._parse_payload()

    def _guarded_handle(self) -> None:
        try:
            headers, body = self._parse_payload()
        except LocalGatewayException as error:
            self._send_error_response(error)
            return
        # Chalice reads the payload again: hand it this one. Only for this request: one handler
        # serves a whole keep-alive connection, and the next request must read its own body.
        self._parse_payload = lambda: (headers, body)  # type: ignore[method-assign]
        try:
            self._generic_handle()
        finally:
            del self._parse_payload

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _guarded_handle  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
        """Every log line of the server (requests and errors) without the query strings it names."""
        super().log_message(format, *(without_query(arg) if isinstance(arg, str) else arg for arg in args))

    def _send_http_response(self, code, headers, body):  # type: ignore[override]
        """No body after a HEAD, whatever the app answered: the client reads none, and the bytes
        would otherwise be taken for the start of the next response on the connection."""
        super()._send_http_response(code, headers, None if self.command == "HEAD" else body)

    def __getattr__(self, name: str):
        """Any other method (TRACE, QUERY, ...) too: Chalice answers it with our JSON 405
        where http.server would answer an HTML 501."""
        if name.startswith("do_"):
            return self._guarded_handle
        raise AttributeError(name)


class _Server(ThreadedHTTPServer):
    request_queue_size = LISTEN_BACKLOG  # the kernel caps it at net.core.somaxconn (4096 by default)


def per_thread_requests(app: Chalice) -> Chalice:
    """Chalice keeps the request being served in one attribute of the app (`current_request`,
    and `lambda_context`): right in Lambda, where a container serves one request at a time, but
    this server runs one thread per connection, so a view could read the request of another
    thread and answer it with someone else's parameters. Keep both per thread."""
    state = threading.local()

    def attribute(name: str) -> property:
        return property(lambda self: getattr(state, name, None), lambda self, value: setattr(state, name, value))

    app.__class__ = type(f"PerThread{type(app).__name__}", (type(app),),
                         {"current_request": attribute("current_request"), "lambda_context": attribute("lambda_context")})
    return app


def make_server(project_dir: str, host: str, port: int, stage: str = "local") -> LocalDevServer:
    """The API on host:port; this process runs the local compute backend (COMPUTE_BACKEND=local)."""
    local_dispatch.register()
    factory = CLIFactory(project_dir=project_dir, environ=os.environ)
    config = factory.create_config_obj(chalice_stage_name=stage)
    return LocalDevServer(per_thread_requests(config.chalice_app), config, host, port, handler_cls=_Handler,
                          server_cls=_Server)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the provider API locally (chalice local)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8030")))
    parser.add_argument("--stage", default="local")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    project_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    make_server(project_dir, args.host, args.port, args.stage).serve_forever()


if __name__ == "__main__":
    main()
