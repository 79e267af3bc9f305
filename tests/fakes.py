"""Network peers that misbehave, shared by the chain and hostile suites."""
from __future__ import annotations

import socket
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def black_hole() -> Iterator[str]:
    """A TCP endpoint that accepts connections (the kernel does) and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
