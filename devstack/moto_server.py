"""The local AWS: moto's server, with every AWS API call applied one at a time.

moto applies a conditional write as read, check, write, without a lock, and its server runs one
thread per connection: two concurrent UpdateItem calls with the same condition can then both
succeed (measured on moto 5.2: 1 key in 60 had two winners among 48 concurrent calls). DynamoDB
never does that, and the provider relies on it: a nonce is consumed, and an order is marked used,
by one conditional write each. Serializing the calls restores the guarantee locally; connections
are still served concurrently.

Run as `python -m devstack.moto_server -H 127.0.0.1 -p 5010` (the options of `moto.server`).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any, Callable, Iterable


class OneCallAtATime:
    """WSGI middleware: the whole call, body included, under one lock."""

    def __init__(self, app: Callable[..., Iterable[bytes]]):
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self._lock:
            result = self._app(environ, start_response)
            try:
                return list(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()


def main(argv: list[str] | None = None) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=int(os.environ.get("MOTO_PORT", "5000")))
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, OneCallAtATime(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
