"""Container registries of the tests' own on loopback, and what pushes to and pulls from them
(issue 22: the image is pinned at start).

- `OciImage` / `OciIndex`: real OCI content (a gzip'd tar layer, the image config, the manifest,
  a multi-platform index), made byte for byte the same each time, so a digest is known before
  any registry serves it.
- `DistributionRegistry`: Debian's `docker-registry` (the CNCF distribution registry, 2.8) run as
  a process, with token authentication as Docker Hub, GHCR and Quay do it: its challenge names the
  realm of `TokenServer`, which hands ES256 tokens (x5c chain, the registry trusts the cert) for
  `repository:<name>:pull` anonymously on public repositories, and for private ones and pushes
  only to a login it knows.
- `LoopbackRegistry`: a small OCI distribution server in a thread (the same API, anonymous or
  with the same token flow), for the many tests that start jobs and need their image resolved
  without a process of its own.
- `RegistryClient`: push (blobs, then the manifest) and pull (manifest by reference, its layers
  unpacked into a root file system) over the HTTP API, answering challenges like `docker`.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator, Mapping

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
ACCEPT = ", ".join([OCI_INDEX, "application/vnd.docker.distribution.manifest.list.v2+json", OCI_MANIFEST,
                    "application/vnd.docker.distribution.manifest.v2+json"])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class OciImage:
    """One linux image: `files` {path in the image: (bytes, mode)} in one layer, an entrypoint."""

    files: Mapping[str, tuple[bytes, int]]
    entrypoint: tuple[str, ...] = ()
    architecture: str = "amd64"

    @property
    def layer_tar(self) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for path, (content, mode) in sorted(self.files.items()):
                info = tarfile.TarInfo(path.lstrip("/"))
                info.size, info.mode, info.mtime = len(content), mode, 0
                archive.addfile(info, io.BytesIO(content))
        return buffer.getvalue()

    @property
    def layer(self) -> bytes:
        return gzip.compress(self.layer_tar, mtime=0)

    @property
    def config(self) -> bytes:
        return _canonical({"architecture": self.architecture, "os": "linux",
                           "config": {"Entrypoint": list(self.entrypoint)},
                           "rootfs": {"type": "layers", "diff_ids": [sha256(self.layer_tar)]}})

    @property
    def manifest(self) -> bytes:
        return _canonical({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "digest": sha256(self.config), "size": len(self.config)},
                           "layers": [{"mediaType": OCI_LAYER, "digest": sha256(self.layer), "size": len(self.layer)}]})

    @property
    def media_type(self) -> str:
        return OCI_MANIFEST

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    def blobs(self) -> dict[str, bytes]:
        return {sha256(self.config): self.config, sha256(self.layer): self.layer}


@dataclass(frozen=True)
class OciIndex:
    """A multi-platform image: an index of one image per architecture."""

    images: tuple[OciImage, ...]

    @property
    def manifest(self) -> bytes:
        return _canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": image.digest, "size": len(image.manifest),
             "platform": {"os": "linux", "architecture": image.architecture}} for image in self.images]})

    @property
    def media_type(self) -> str:
        return OCI_INDEX

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    def blobs(self) -> dict[str, bytes]:
        return {digest: blob for image in self.images for digest, blob in image.blobs().items()}


def script_image(text: str, busybox: Path | None = None) -> OciImage:
    """An image whose entrypoint is a shell script printing `text` (Debian's static busybox as
    its /bin/sh when given, so it runs in a container)."""
    files: dict[str, tuple[bytes, int]] = {"algo.sh": (f"#!/bin/sh\necho '{text}'\n".encode(), 0o755)}
    if busybox is not None:
        files["bin/sh"] = (busybox.read_bytes(), 0o755)
    return OciImage(files, entrypoint=("/bin/sh", "/algo.sh"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- tokens, as Docker Hub's auth.docker.io hands them -------------------------------------------

class TokenServer:
    """A registry token realm (the distribution "token authentication" spec): GET
    /token?service&scope answers {"token", "expires_in"} for the actions a caller may have:
    pull on public repositories to anyone, everything to a known login (Basic). Requests are
    counted per login, so a test can tell anonymous from authenticated resolution."""

    def __init__(self, service: str, issuer: str, work: Path, *, logins: Mapping[str, str] | None = None,
                 private: tuple[str, ...] = ()) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        import datetime

        self.service, self.issuer = service, issuer
        self.logins = dict(logins or {})
        self.private = private
        self.asked: list[str] = []  # the login of each token request ("" anonymous)
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "c2d test token issuer")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self._cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self._key.public_key())
                      .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                      .not_valid_after(now + datetime.timedelta(days=2))
                      .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                      .sign(self._key, hashes.SHA256()))
        self.cert_path = work / "token-issuer.pem"
        self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self._der = base64.b64encode(self._cert.public_bytes(serialization.Encoding.DER)).decode()
        self._server: ThreadingHTTPServer | None = None

    def token(self, login: str, scopes: list[str]) -> str:
        import jwt

        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = actions.split(",")
            allowed = wanted if login else [a for a in wanted if a == "pull" and not name.startswith(self.private)]
            if kind == "repository" and allowed:
                access.append({"type": "repository", "name": name, "actions": allowed})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": login, "aud": self.service, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": os.urandom(8).hex(), "access": access}
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"x5c": [self._der]})

    @property
    def realm(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    @contextmanager
    def serving(self) -> Iterator["TokenServer"]:
        tokens = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                login = ""
                header = self.headers.get("Authorization", "")
                if header.startswith("Basic "):
                    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    if tokens.logins.get(user) != password:
                        self.send_response(401)
                        self.end_headers()
                        return
                    login = user
                tokens.asked.append(login)
                body = json.dumps({"token": tokens.token(login, query.get("scope", [])), "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()


# -- Debian's docker-registry ------------------------------------------------------------------

DISTRIBUTION = "/usr/bin/docker-registry"


def distribution_unavailable() -> str | None:
    if not Path(DISTRIBUTION).exists():
        return ("Debian's docker-registry is not installed (`make test` installs it as root: "
                "apt-get install docker-registry)")
    return None


@dataclass
class DistributionRegistry:
    """Debian's docker-registry on a loopback port, with token authentication by `tokens`."""

    work: Path
    tokens: TokenServer
    port: int = field(default_factory=free_port)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @contextmanager
    def running(self) -> Iterator["DistributionRegistry"]:
        config = self.work / "config.yml"
        storage = self.work / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps({  # YAML is a superset of JSON
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": "c2d-test-registry"},
            "auth": {"token": {"realm": self.tokens.realm, "service": self.tokens.service,
                               "issuer": self.tokens.issuer, "rootcertbundle": str(self.tokens.cert_path)}},
        }))
        log = (self.work / "registry.log").open("w")
        process = subprocess.Popen([DISTRIBUTION, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    urllib.request.urlopen(f"{self.url}/v2/", timeout=1)
                except urllib.error.HTTPError:
                    break  # 401: up, asking for a token
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("docker-registry did not start: " + (self.work / "registry.log").read_text()[-500:])
                    time.sleep(0.1)
                else:
                    break
            yield self
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
            log.close()


# -- a small registry in a thread --------------------------------------------------------------

_MANIFEST_PATH = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<reference>[^/]+)$")
_BLOB_PATH = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")


class LoopbackRegistry:
    """The OCI distribution API's read side (and `publish` to fill it), anonymous or behind a
    token realm of its own (`tokens=True`: the challenge names /token on this server, which
    hands an opaque token for any scope). Counts the manifest requests it answers. For the
    registries that misbehave: `digest_header=False` leaves Docker-Content-Digest out (optional
    in the spec), `fail_with` answers every manifest request with that status. With `logins`
    (user -> password), a token is handed only for one of them (Basic), as a private registry's
    realm does; `token_logins` lists who asked."""

    def __init__(self, *, tokens: bool = False, digest_header: bool = True, fail_with: int | None = None,
                 logins: Mapping[str, str] | None = None) -> None:
        self.tokens = tokens or bool(logins)
        self.logins = dict(logins or {})
        self.token_logins: list[str] = []
        self.digest_header = digest_header
        self.fail_with = fail_with
        self.manifests: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.blobs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self._issued: set[str] = set()
        self._server: ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def publish(self, name: str, tag: str, image: OciImage | OciIndex) -> str:
        """Tag `image` (and its platform images) in repository `name`; returns its digest."""
        self.blobs.update(image.blobs())
        if isinstance(image, OciIndex):
            for platform_image in image.images:
                self.manifests[(name, platform_image.digest)] = (platform_image.media_type, platform_image.manifest)
        self.manifests[(name, image.digest)] = (image.media_type, image.manifest)
        self.manifests[(name, tag)] = (image.media_type, image.manifest)
        return image.digest

    def start(self) -> "LoopbackRegistry":
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(send_body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(send_body=True)

            def _answer(self, send_body: bool) -> None:
                path = urllib.parse.urlsplit(self.path).path
                if path == "/token":
                    if registry.logins:
                        scheme, _, value = self.headers.get("Authorization", "").partition(" ")
                        user, _, password = (base64.b64decode(value).decode(errors="replace")
                                             if scheme == "Basic" else "").partition(":")
                        registry.token_logins.append(user)
                        if not user or registry.logins.get(user) != password:
                            return self._send(401, b'{"errors": [{"code": "UNAUTHORIZED"}]}', {}, send_body)
                    token = os.urandom(16).hex()
                    registry._issued.add(token)
                    return self._send(200, json.dumps({"token": token, "expires_in": 300}).encode(),
                                      {"Content-Type": "application/json"}, send_body)
                if registry.tokens and self.headers.get("Authorization", "").removeprefix("Bearer ") not in registry._issued:
                    return self._send(401, b'{"errors": [{"code": "UNAUTHORIZED"}]}', {
                        "WWW-Authenticate": f'Bearer realm="{registry.url}/token",service="loopback"'}, send_body)
                manifest, blob = _MANIFEST_PATH.match(path), _BLOB_PATH.match(path)
                if manifest:
                    registry.requests.append((self.command, path))
                    if registry.fail_with:
                        return self._send(registry.fail_with, b'{"errors": [{"code": "TOOMANYREQUESTS"}]}', {}, send_body)
                    found = registry.manifests.get((manifest["name"], manifest["reference"]))
                    if found is None:
                        return self._send(404, b'{"errors": [{"code": "MANIFEST_UNKNOWN"}]}', {}, send_body)
                    media_type, body = found
                    headers = {"Content-Type": media_type}
                    if registry.digest_header:
                        headers["Docker-Content-Digest"] = sha256(body)
                    return self._send(200, body, headers, send_body)
                if blob and blob["digest"] in registry.blobs:
                    return self._send(200, registry.blobs[blob["digest"]], {"Content-Type": "application/octet-stream"},
                                      send_body)
                if path == "/v2/":
                    return self._send(200, b"{}", {}, send_body)
                self._send(404, b"{}", {}, send_body)

            def _send(self, status: int, body: bytes, headers: Mapping[str, str], send_body: bool) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if send_body:
                    self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


# -- a client: push and pull as `docker` does --------------------------------------------------

class RegistryClient:
    """Push and pull over the registry API, answering Bearer challenges with `login` (or
    anonymously): independent of the provider's resolver, which is what the tests check."""

    def __init__(self, base_url: str, login: tuple[str, str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.login = login
        self._tokens: dict[str, str] = {}

    def _call(self, method: str, url: str, data: bytes | None = None, headers: Mapping[str, str] | None = None,
              scope: str = "") -> tuple[int, dict[str, str], bytes]:
        for _ in range(2):
            sent = dict(headers or {})
            if scope in self._tokens:
                sent["Authorization"] = f"Bearer {self._tokens[scope]}"
            request = urllib.request.Request(url if url.startswith("http") else self.base_url + url, data=data,
                                             method=method, headers=sent)
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()
            except urllib.error.HTTPError as error:
                if error.code == 401 and scope not in self._tokens:
                    self._tokens[scope] = self._token(error.headers.get("WWW-Authenticate", ""), scope)
                    continue
                return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()
        raise RuntimeError(f"{method} {url}: still unauthorized")

    def _token(self, challenge: str, scope: str) -> str:
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        query = urllib.parse.urlencode({"service": params.get("service", ""), "scope": scope})
        headers = {}
        if self.login:
            headers["Authorization"] = "Basic " + base64.b64encode(":".join(self.login).encode()).decode()
        request = urllib.request.Request(f"{params['realm']}?{query}", headers=headers)
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())["token"]

    def push(self, name: str, tag: str, image: OciImage | OciIndex) -> str:
        """Blobs, then each platform manifest, then the tag; returns the tag's digest."""
        scope = f"repository:{name}:pull,push"
        for digest, blob in image.blobs().items():
            status, _, _ = self._call("HEAD", f"/v2/{name}/blobs/{digest}", scope=scope)
            if status == 200:
                continue
            status, headers, body = self._call("POST", f"/v2/{name}/blobs/uploads/", b"", scope=scope)
            assert status == 202, (status, body)
            location = headers["location"]
            location = location if location.startswith("http") else self.base_url + location
            separator = "&" if "?" in location else "?"
            status, _, body = self._call("PUT", f"{location}{separator}digest={digest}", blob,
                                         {"Content-Type": "application/octet-stream"}, scope=scope)
            assert status == 201, (status, body)
        manifests = [*(image.images if isinstance(image, OciIndex) else ()), image]
        for position, manifest in enumerate(manifests):
            reference = tag if position == len(manifests) - 1 else manifest.digest
            status, headers, body = self._call("PUT", f"/v2/{name}/manifests/{reference}", manifest.manifest,
                                               {"Content-Type": manifest.media_type}, scope=scope)
            assert status == 201, (status, body)
        return image.digest

    def manifest(self, name: str, reference: str) -> tuple[int, bytes]:
        status, _, body = self._call("GET", f"/v2/{name}/manifests/{reference}", headers={"Accept": ACCEPT},
                                     scope=f"repository:{name}:pull")
        return status, body

    def pull(self, reference: str, rootfs: Path) -> str:
        """Pull `host/name@digest` (or `:tag`) as an instance would and unpack it into `rootfs`;
        returns the digest of the manifest pulled, checked against a pinned reference."""
        name = reference.split("/", 1)[1]
        if "@" in name:
            name, _, wanted = name.partition("@")
        else:
            name, _, wanted = name.rpartition(":")
        status, body = self.manifest(name, wanted)
        assert status == 200, (status, body)
        if wanted.startswith("sha256:"):
            assert sha256(body) == wanted, "the registry served other bytes than the digest pinned"
        manifest = json.loads(body)
        if manifest.get("mediaType") == OCI_INDEX:
            entry = next(m for m in manifest["manifests"] if m["platform"]["architecture"] == "amd64")
            return self.pull(f"{reference.split('/', 1)[0]}/{name}@{entry['digest']}", rootfs)
        rootfs.mkdir(parents=True, exist_ok=True)
        for layer in manifest["layers"]:
            status, _, blob = self._call("GET", f"/v2/{name}/blobs/{layer['digest']}", scope=f"repository:{name}:pull")
            assert status == 200 and sha256(blob) == layer["digest"]
            with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as archive:
                archive.extractall(rootfs, filter="tar")
        return sha256(body)


def static_busybox() -> Path | None:
    found = shutil.which("busybox")
    if found is None:
        return None
    kind = subprocess.run(["file", "-b", found], capture_output=True, text=True).stdout if shutil.which("file") else ""
    return Path(found) if "dynamically" not in kind else None
