"""Network-safe HTTP(S) downloads of job inputs and algorithms (stdlib only).

Shared by the job runner (inputs, algorithms) and the provider (algorithm checksums for
trusted algorithms); the runner image copies this module with the runner.

The URLs come from decrypted DDO `files`, and anyone can publish a DDO for this provider, so
every URL is hostile: it may aim at the instance metadata service, at services inside the VPC or
at the runner's own host, directly or through a redirect or a DNS name. Every hop is resolved
once, every resolved address is checked, and the connection goes to the checked address (no
second lookup, so no DNS-rebinding window). Sizes are capped while streaming, and error
messages never contain the URL or host (decrypted URLs are secrets).
"""
from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping
from urllib.parse import quote, urljoin, urlsplit

CHUNK_BYTES = 64 * 1024
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
METHODS = frozenset({"GET", "POST"})
DEFAULT_PORTS = {"http": 80, "https": 443}
# Headers a manifest may not set: the connection layer owns them.
RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_URL_SAFE = "/%:@!$&'()*+,;=-._~?"


class FetchError(Exception):
    """A download failed. The message is short and never contains the URL or the host.

    `public` is what a consumer may read (job logs and status texts): it also leaves out what
    the operator's network policy found about the address (that it is private, loopback...),
    which would tell a consumer about the data owner's network. It defaults to the message."""

    def __init__(self, message: str, public: str | None = None) -> None:
        super().__init__(message)
        self.public = public or message


@dataclass(frozen=True)
class FetchPolicy:
    """How far a fetch may go: private networks (tests and local stacks only), time, redirects.

    `timeout` bounds each socket operation; `deadline` (a time.monotonic() value), when set,
    bounds the whole download, so a server trickling a byte at a time cannot hold a request
    of the provider past its answer budget."""

    allow_private: bool = False
    timeout: float = 30.0
    max_redirects: int = 5
    deadline: float | None = None

    def check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise FetchError("timed out")

    def socket_timeout(self) -> float:
        """The per-operation timeout, never beyond the deadline."""
        if self.deadline is None:
            return self.timeout
        return max(0.1, min(self.timeout, self.deadline - time.monotonic()))


def is_forbidden(address: str) -> bool:
    """True for addresses a job must never reach: loopback, private, link-local (including the
    metadata service), multicast, unspecified, reserved, and IPv4 hidden inside IPv6."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id (fe80::1%eth0)
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and is_forbidden(str(embedded)):
            return True
    return (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast
            or ip.is_unspecified or ip.is_reserved or not ip.is_global)


def resolve(host: str, port: int) -> list[str]:
    """Every address the system resolver returns for host."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def pick_address(host: str, port: int, allow_private: bool) -> str:
    """Resolve host once and return the address to connect to. All resolved addresses must be
    allowed, so a name mixing public and private records cannot be used to reach the latter."""
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError):
        raise FetchError("host name does not resolve") from None
    if not addresses:
        raise FetchError("host name does not resolve")
    if not allow_private and any(is_forbidden(a) for a in addresses):
        raise FetchError("address not allowed (loopback, private, link-local or reserved)",
                         public="source refused by the provider's fetch policy")
    return addresses[0]


class _PinnedHTTP(http.client.HTTPConnection):
    """HTTP to an already checked address, with Host taken from the URL."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to an already checked address; SNI and certificate check use the URL's host."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def _target(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL, or FetchError."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise FetchError("invalid URL") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise FetchError("only http and https URLs are allowed")
    if not parts.hostname:
        raise FetchError("URL has no host")
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme]


@contextmanager
def _network_errors() -> Iterator[None]:
    """Turn socket/TLS/HTTP errors into FetchError without their text (it may name the host,
    and http.client's header errors quote the header value, which may be a credential)."""
    try:
        yield
    except FetchError:
        raise
    except TimeoutError:
        raise FetchError("timed out") from None
    except ssl.SSLError:
        raise FetchError("TLS handshake or certificate check failed") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise FetchError(f"connection failed ({type(exc).__name__})") from None


def _open(url: str, method: str, headers: Mapping[str, str],
          policy: FetchPolicy) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """Send one request (one hop) after checking scheme and address."""
    scheme, host, port = _target(url)
    parts = urlsplit(url)
    address = pick_address(host, port, policy.allow_private)
    kind = _PinnedHTTPS if scheme == "https" else _PinnedHTTP
    policy.check_deadline()
    conn = kind(host, port, address, policy.socket_timeout())
    target = quote(parts.path or "/", safe=_URL_SAFE) + (
        "?" + quote(parts.query, safe=_URL_SAFE) if parts.query else "")
    try:
        with _network_errors():
            conn.request(method, target, headers=dict(headers))
            return conn, conn.getresponse()
    except BaseException:
        conn.close()
        raise


def _body(conn: http.client.HTTPConnection, resp: http.client.HTTPResponse,
          policy: FetchPolicy) -> Iterator[bytes]:
    """The response body in chunks as they arrive (read1: one socket read each), with network
    errors mapped and the deadline kept: each read may wait only until the deadline."""
    with _network_errors():
        while True:
            policy.check_deadline()
            if conn.sock is not None:
                conn.sock.settimeout(policy.socket_timeout())
            chunk = resp.read1(CHUNK_BYTES)
            if not chunk:
                return
            yield chunk


def write_capped(chunks: Iterable[bytes], dest: Path, limit: int) -> int:
    """Stream chunks to dest and fail as soon as more than limit bytes arrive. A failed
    download leaves no partial file behind (the algorithm must never see half an input)."""
    total = 0
    try:
        out = open(dest, "wb")
    except OSError:
        raise FetchError("could not create the file") from None
    try:
        with out:
            for chunk in chunks:
                total += len(chunk)
                if total > limit:
                    raise FetchError("exceeds the size limit")
                try:
                    out.write(chunk)
                except OSError:
                    raise FetchError("could not write the file") from None
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return total


def clean_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The manifest's request headers as strings, minus those the connection layer owns."""
    if not isinstance(headers, Mapping):
        return {}
    return {str(k): str(v) for k, v in headers.items() if str(k).lower() not in RESERVED_HEADERS}


def fetch_to_file(url: str, dest: Path, *, limit: int, policy: FetchPolicy,
                  method: str = "GET", headers: Mapping[str, str] | None = None) -> int:
    """Download url into dest and return its size, following redirects hop by hop.

    Each hop is checked like the first. The manifest's headers (often credentials) are sent
    only to the original origin, never to where a redirect points."""
    method = (method or "GET").upper()
    if method not in METHODS:
        raise FetchError("only GET and POST are allowed")
    first_origin = _target(url)
    sent = clean_headers(headers)
    for _ in range(policy.max_redirects + 1):
        conn, resp = _open(url, method, sent if _target(url) == first_origin else {}, policy)
        try:
            if resp.status in REDIRECT_CODES:
                location = resp.getheader("Location")
                if not location:
                    raise FetchError(f"HTTP {resp.status} without Location")
                url = urljoin(url, location.strip())
                if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                    method = "GET"
                continue
            if not 200 <= resp.status < 300:
                raise FetchError(f"HTTP {resp.status}")
            declared = (resp.getheader("Content-Length") or "").strip()
            if declared.isdigit() and int(declared) > limit:
                raise FetchError("exceeds the size limit")
            return write_capped(_body(conn, resp, policy), dest, limit)
        finally:
            conn.close()
    raise FetchError("too many redirects")


@dataclass(frozen=True)
class Reply:
    """A small HTTP answer read whole: status, headers (lower-case names) and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


def request(url: str, *, policy: FetchPolicy, method: str = "GET", headers: Mapping[str, str] | None = None,
            limit: int = 1 << 20) -> Reply:
    """One request answered in memory (an API call, not a download), every hop checked as
    `fetch_to_file` checks it. Redirects are followed (GET and HEAD keep their method); the
    headers, often credentials, go only to the first origin. Any status is returned as is, the
    body capped at `limit` bytes (FetchError beyond)."""
    method = method.upper()
    if method not in METHODS | {"HEAD"}:
        raise FetchError("only GET, HEAD and POST are allowed")
    first_origin = _target(url)
    sent = clean_headers(headers)
    for _ in range(policy.max_redirects + 1):
        conn, resp = _open(url, method, sent if _target(url) == first_origin else {}, policy)
        try:
            if resp.status in REDIRECT_CODES and resp.getheader("Location"):
                url = urljoin(url, resp.getheader("Location", "").strip())
                if resp.status == 303 and method == "POST":
                    method = "GET"
                continue
            declared = (resp.getheader("Content-Length") or "").strip()
            if method != "HEAD" and declared.isdigit() and int(declared) > limit:
                raise FetchError("exceeds the size limit")
            body = b""
            if method != "HEAD":
                for chunk in _body(conn, resp, policy):
                    body += chunk
                    if len(body) > limit:
                        raise FetchError("exceeds the size limit")
            return Reply(resp.status, {name.lower(): value for name, value in resp.getheaders()}, body)
        finally:
            conn.close()
    raise FetchError("too many redirects")
