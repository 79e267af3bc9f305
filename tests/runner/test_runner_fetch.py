"""Network safety and limits of chalicelib.netsafe (the runner's and the provider's downloads)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib import netsafe as fetch
from chalicelib.netsafe import FetchError, FetchPolicy, fetch_to_file, is_forbidden

OPEN = FetchPolicy(allow_private=True, timeout=5)
STRICT = FetchPolicy(allow_private=False, timeout=5)
BIG = 10**9


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254",
    "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "100.64.0.1", "::1", "::",
    "fe80::1", "fe80::1%eth0", "fc00::1", "fd00:ec2::254", "ff02::1", "::ffff:127.0.0.1",
    "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:7f00:1::1", "2001:db8::1",
])
def test_forbidden_addresses(address: str) -> None:
    assert is_forbidden(address)


@settings(max_examples=300, deadline=None)
@given(st.one_of(*[st.ip_addresses(network=net) for net in (
    "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
    "100.64.0.0/10", "224.0.0.0/4", "240.0.0.0/4", "0.0.0.0/8", "::1/128", "fc00::/7",
    "fe80::/10", "ff00::/8", "::ffff:127.0.0.0/104", "::ffff:169.254.0.0/112")]))
def test_forbidden_ranges_property(address) -> None:
    assert is_forbidden(str(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111"])
def test_public_addresses_allowed(address: str) -> None:
    assert not is_forbidden(address)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/files/a",
    "http://10.0.0.1/",
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://[::1]:{port}/files/a",
    "http://localhost:{port}/files/a",
    "http://2130706433:{port}/files/a",  # 127.0.0.1 in decimal
    "http://[::ffff:127.0.0.1]:{port}/files/a",
])
def test_private_targets_refused_without_flag(http_server, tmp_path: Path, url: str) -> None:
    http_server.files["/files/a"] = b"secret"
    dest = tmp_path / "out"
    with pytest.raises(FetchError, match="address not allowed"):
        fetch_to_file(url.format(port=http_server.port), dest, limit=BIG, policy=STRICT)
    assert http_server.requests == []
    assert not dest.exists()


@pytest.mark.parametrize("target", [
    "http://169.254.169.254/latest/meta-data/",
    "http://127.0.0.1:{port}/files/secret",
    "http://localhost:{port}/files/secret",
    "http://[::1]:{port}/files/secret",
])
@pytest.mark.parametrize("code", [302, 307])
def test_redirect_to_private_refused(http_server, tmp_path: Path, monkeypatch,
                                     target: str, code: int) -> None:
    """A public name (faked: it maps to the test server) redirecting inward is stopped at the hop."""
    real_pick = fetch.pick_address

    def pick(host: str, port: int, allow_private: bool) -> str:
        return "127.0.0.1" if host == "public.example" else real_pick(host, port, allow_private)

    monkeypatch.setattr(fetch, "pick_address", pick)
    http_server.files["/files/secret"] = b"secret"
    target = target.format(port=http_server.port)
    url = http_server.url(f"/redirect?code={code}&to={target}", host="public.example")
    with pytest.raises(FetchError, match="address not allowed"):
        fetch_to_file(url, tmp_path / "out", limit=BIG, policy=STRICT)
    assert http_server.paths() == ["/redirect"]
    assert not (tmp_path / "out").exists()


def test_allowed_fetch_with_flag(http_server, tmp_path: Path) -> None:
    http_server.files["/files/data.csv"] = b"a,b\n1,2\n"
    size = fetch_to_file(http_server.url("/files/data.csv"), tmp_path / "d", limit=BIG,
                         policy=OPEN)
    assert size == 8 and (tmp_path / "d").read_bytes() == b"a,b\n1,2\n"


def test_redirect_followed_and_headers_kept_to_first_origin(http_server, tmp_path: Path) -> None:
    http_server.files["/files/x"] = b"x"
    inner = http_server.url("/files/x", host="localhost")  # another origin
    url = http_server.url("/redirect?to=/echo")  # same origin, relative Location
    fetch_to_file(url, tmp_path / "a", limit=BIG, policy=OPEN, headers={"X-Key": "k1"})
    echoed = json.loads((tmp_path / "a").read_text())
    assert echoed["headers"]["X-Key"] == "k1"

    url = http_server.url(f"/redirect?to={inner}")
    fetch_to_file(url, tmp_path / "b", limit=BIG, policy=OPEN, headers={"Authorization": "t"})
    last_headers = http_server.requests[-1][2]
    assert "Authorization" not in last_headers and (tmp_path / "b").read_bytes() == b"x"


def test_post_with_headers(http_server, tmp_path: Path) -> None:
    fetch_to_file(http_server.url("/echo"), tmp_path / "e", limit=BIG, policy=OPEN,
                  method="post", headers={"X-Api-Key": "abc", "Host": "evil"})
    echoed = json.loads((tmp_path / "e").read_text())
    assert echoed["method"] == "POST" and echoed["headers"]["X-Api-Key"] == "abc"
    assert echoed["headers"]["Host"].startswith("127.0.0.1")


@pytest.mark.parametrize("path", ["/files/big", "/stream/5000"])
def test_size_cap_removes_partial_file(http_server, tmp_path: Path, path: str) -> None:
    """Refused from Content-Length when declared, while streaming otherwise."""
    http_server.files["/files/big"] = b"y" * 5000
    dest = tmp_path / "big"
    with pytest.raises(FetchError, match="size limit"):
        fetch_to_file(http_server.url(path), dest, limit=4999, policy=OPEN)
    assert not dest.exists()
    assert fetch_to_file(http_server.url(path), dest, limit=5000, policy=OPEN) == 5000


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://x/",
                                 "http:///nohost", "http://example.com:99999/"])
def test_bad_urls_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(FetchError):
        fetch_to_file(url, tmp_path / "x", limit=BIG, policy=OPEN)


def test_http_errors_and_loops(http_server, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_to_file(http_server.url("/status/404"), tmp_path / "x", limit=BIG, policy=OPEN)
    with pytest.raises(FetchError, match="too many redirects"):
        fetch_to_file(http_server.url("/loop"), tmp_path / "x", limit=BIG, policy=OPEN)
    with pytest.raises(FetchError, match="GET and POST"):
        fetch_to_file(http_server.url("/echo"), tmp_path / "x", limit=BIG, policy=OPEN,
                      method="DELETE")
    assert not (tmp_path / "x").exists()


def test_timeout(http_server, tmp_path: Path) -> None:
    policy = FetchPolicy(allow_private=True, timeout=0.3)
    with pytest.raises(FetchError, match="timed out"):
        fetch_to_file(http_server.url("/slow"), tmp_path / "x", limit=BIG, policy=policy)


def test_errors_do_not_name_the_host(tmp_path: Path) -> None:
    with pytest.raises(FetchError) as caught:
        fetch_to_file("https://secret-host.invalid/path?token=abc", tmp_path / "x", limit=BIG,
                      policy=STRICT)
    assert "secret-host" not in str(caught.value) and "token" not in str(caught.value)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory) -> Iterator[tuple[int, Path]]:
    """An HTTPS server on loopback with a self-signed certificate for `localhost`."""
    import datetime
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = f"sni ok, host {self.headers['Host']}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: object, client_address: object) -> None:
            pass

    server = Server(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1]), cert_file
    server.shutdown()
    server.server_close()


def test_https_checks_certificate_against_url_host(tls_server, tmp_path: Path,
                                                   monkeypatch) -> None:
    """The socket goes to the pinned address while SNI and the certificate use the name."""
    port, cert_file = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    size = fetch_to_file(f"https://localhost:{port}/x", tmp_path / "ok", limit=BIG, policy=OPEN)
    assert (tmp_path / "ok").read_text() == f"sni ok, host localhost:{port}" and size > 0
    with pytest.raises(FetchError, match="TLS"):  # the certificate does not name 127.0.0.1
        fetch_to_file(f"https://127.0.0.1:{port}/x", tmp_path / "no", limit=BIG, policy=OPEN)
    monkeypatch.delenv("SSL_CERT_FILE")
    with pytest.raises(FetchError, match="TLS"):  # not trusted without the test CA
        fetch_to_file(f"https://localhost:{port}/x", tmp_path / "no", limit=BIG, policy=OPEN)


def test_deadline_bounds_a_trickling_download(http_server, tmp_path: Path) -> None:
    """Each read of a trickling server is within the socket timeout; the deadline still ends
    the whole download (the provider hashes algorithms inside a 25 s request)."""
    import time

    # 64 KiB reads: the response is read in one chunk once it has all arrived
    policy = FetchPolicy(allow_private=True, timeout=5, deadline=time.monotonic() + 0.5)
    began = time.monotonic()
    with pytest.raises(FetchError, match="timed out"):
        fetch_to_file(http_server.url("/trickle/30"), tmp_path / "t", limit=BIG, policy=policy)
    assert time.monotonic() - began < 2.0
    assert not (tmp_path / "t").exists()
    late = FetchPolicy(allow_private=True, timeout=5, deadline=time.monotonic() + 0.3)
    began = time.monotonic()
    with pytest.raises(FetchError, match="timed out"):
        fetch_to_file(http_server.url("/slow"), tmp_path / "s", limit=BIG, policy=late)
    assert time.monotonic() - began < 1.2
