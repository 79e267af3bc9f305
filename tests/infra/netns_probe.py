"""Run inside a network namespace by tests/infra/test_network_rules.py (`ip netns exec NS python
netns_probe.py ...`): serve TCP/UDP ports, or connect to one as a given UID.

    serve [--uid N] tcp:HOST:PORT ... udp:HOST:PORT ...   (HOST may be IPv6: tcp:::1:80)   answer "ok"; log UDP receipts to --log
    probe --uid N tcp|udp HOST PORT                       exit 0 if "ok" came back, else 1

Privileges are dropped with os.setgid/os.setuid before any socket is made (a socket belongs
to the UID that created it), so the kernel sees the socket owned by that UID, as the algorithm's would be."""
from __future__ import annotations

import argparse
import os
import selectors
import socket
import sys


def family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def drop_to(uid: int | None) -> None:
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)


def serve(endpoints: list[str], uid: int | None, receipts: str | None) -> None:
    log = open(receipts, "a", buffering=1) if receipts else None
    drop_to(uid)  # before the sockets exist: a socket belongs to the UID that created it
    selector = selectors.DefaultSelector()
    for endpoint in endpoints:
        proto, rest = endpoint.split(":", 1)
        host, port = rest.rsplit(":", 1)
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        sock = socket.socket(family(host), kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
        if proto == "tcp":
            sock.listen(16)
        selector.register(sock, selectors.EVENT_READ, proto)
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            sock = key.fileobj
            if key.data == "tcp":
                conn, _ = sock.accept()
                with conn:
                    conn.sendall(b"ok\n")
            else:
                data, peer = sock.recvfrom(512)
                if log:
                    log.write(f"{data.decode(errors='replace')}\n")
                sock.sendto(b"ok\n", peer)


def probe(uid: int | None, proto: str, host: str, port: int, wait: float) -> int:
    drop_to(uid)
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(family(host), kind) as sock:
        sock.settimeout(wait)
        try:
            if proto == "tcp":
                sock.connect((host, port))
                answer = sock.recv(16)
            else:
                sock.sendto(f"from {os.getuid()}".encode(), (host, port))
                answer = sock.recv(16)
        except OSError as error:
            print(f"blocked: {type(error).__name__}", flush=True)
            return 1
    print(f"reached: {answer!r}", flush=True)
    return 0 if answer.startswith(b"ok") else 1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["serve", "probe"])
    parser.add_argument("--uid", type=int)
    parser.add_argument("--log")
    parser.add_argument("--wait", type=float, default=0.8)
    parser.add_argument("args", nargs="+")
    args = parser.parse_args()
    if args.mode == "serve":
        serve(args.args, args.uid, args.log)
        return 0
    proto, host, port = args.args
    return probe(args.uid, proto, host, int(port), args.wait)


if __name__ == "__main__":
    sys.exit(main())
