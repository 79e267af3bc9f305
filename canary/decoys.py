"""Listeners of the host that a sealed local probe must not reach (the local run only).

On AWS the probe's targets are real: the instance's metadata service, its ECS agent, the
internet, the other probe job. On a developer's machine none of those need exist, so a probe that
reaches nothing would prove nothing. The canary therefore plants what the sandbox must keep the
algorithm from: a TCP port on the host's loopback (the provider, moto and anvil listen there), an
abstract Unix socket in the host's network namespace, and a TCP port on the host's own non-loopback
address, which stands in for "outside" (a machine without internet still has that). Each records
who connected, so the canary has the host's side of the evidence as well as the probe's.
"""
from __future__ import annotations

import socket
import threading
from typing import Any

from canary.verdict import FAIL, PASS, Row

OFF_HOST = "192.0.2.1"  # TEST-NET-1: only asks the routing table which address would be used


def own_address() -> str | None:
    """This host's non-loopback IPv4 address (a UDP connect sends nothing), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((OFF_HOST, 9))
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


class Decoys:
    def __init__(self) -> None:
        self.sockets: list[tuple[str, socket.socket]] = []
        self.contacts: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.name = ""

    def start(self, run: str) -> dict[str, list[Any]]:
        """Listen; returns the `decoys` part of every probe's algoCustomData."""
        self.name = f"c2d-canary-{run}-host"
        loopback = socket.create_server(("127.0.0.1", 0))
        self._serve(f"127.0.0.1:{loopback.getsockname()[1]}", loopback)
        abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        abstract.bind("\0" + self.name)
        abstract.listen(16)
        self._serve(f"@{self.name}", abstract)
        decoys: dict[str, list[Any]] = {"loopback": [loopback.getsockname()[1]], "abstract": [self.name], "outside": []}
        address = own_address()
        if address:
            outside = socket.create_server((address, 0))
            self._serve(f"{address}:{outside.getsockname()[1]}", outside)
            decoys["outside"].append(f"{address}:{outside.getsockname()[1]}")
        return decoys

    def _serve(self, label: str, sock: socket.socket) -> None:
        sock.settimeout(0.5)
        self.sockets.append((label, sock))

        def accept() -> None:
            while not self._stop.is_set():
                try:
                    conn, _ = sock.accept()
                except OSError:
                    continue
                with conn:
                    conn.settimeout(2)
                    try:
                        hello = conn.recv(200).decode("latin-1").strip()
                    except OSError:
                        hello = ""
                with self._lock:
                    self.contacts.append(f"{label} <- {hello or 'a connection'}")

        threading.Thread(target=accept, daemon=True).start()

    def stop(self) -> Row:
        """Close the listeners; the row says whether anything connected."""
        self._stop.set()
        for _, sock in self.sockets:
            sock.close()
        labels = ", ".join(label for label, _ in self.sockets)
        if self.contacts:
            return Row("host", "listeners", "host.planted_listeners", FAIL, "reached: " + "; ".join(self.contacts))
        return Row("host", "listeners", "host.planted_listeners", PASS, f"no probe connected to {labels}")
