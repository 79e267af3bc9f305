"""Pin the algorithm's image at start: `image:tag` resolved to its manifest digest through the
registry's HTTP API (the OCI distribution spec), so the job definition runs `image@sha256:…` and
what runs is exactly what was checked, whatever the tag points to when an instance pulls it,
minutes or hours later (issue 22).

How a registry is asked (what Docker, containerd and skopeo do):

- `HEAD /v2/<repository>/manifests/<tag>` accepting OCI and Docker v2 manifests and indexes; the
  answer's `Docker-Content-Digest` is the digest of what the tag points to (an index for a
  multi-platform image). HEAD requests do not count against Docker Hub's pull limits. Without
  that header (a registry may leave it out), a GET and the sha256 of the bytes answered.
- A 401 with `WWW-Authenticate: Bearer realm=…,service=…` (Docker Hub, GHCR, Quay, ECR Public,
  a distribution registry with token auth): a token from the realm for
  `repository:<repository>:pull`, anonymous, or with the operator's login for that registry
  (REGISTRY_CREDENTIALS; higher pull limits, private repositories), then the request again. A
  `Basic` challenge takes the login directly.
- Docker Hub's API host is `registry-1.docker.io`; every other registry is its own host, over
  HTTPS. A registry on a loopback address is spoken to over plain HTTP, as Docker treats
  127.0.0.0/8 as an insecure registry, and only where private addresses are allowed at all
  (ALLOW_PRIVATE_NETWORKS, local stacks and tests).

Every hop goes through `chalicelib.netsafe`: no private, loopback or metadata address unless
allowed (ALGORITHM_REGISTRIES may be "*", and a token realm is whatever the registry names: such an
address is refused as `image_registry_not_allowed`), the
answer capped, and the whole resolution bounded by REGISTRY_SECONDS and the request's deadline
(chalicelib.budget). A registry that does not answer in time is a 503 (ServiceUnavailable); it
is asked before anything of the start is reserved.

The DDO's `container.checksum` (required: compute.container_rules) must be the digest the tag
resolves to, or, when the tag is a multi-platform index, the digest of its linux/amd64 manifest
(what `docker inspect` shows on such an instance): any other is refused with 400
`image_checksum_mismatch`. A tag or repository the registry does not show (404, or 401/403 once
authenticated: Docker Hub answers so for a repository that does not exist) is 400
`image_not_found`.
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Protocol
from urllib.parse import urlencode

from chalicelib import budget
from chalicelib.config import DOCKER_HUB, image_location
from chalicelib.errors import BusinessError, ServiceUnavailable
from chalicelib.netsafe import FetchError, FetchPolicy, Reply, request

REGISTRY_SECONDS = 4.0  # the whole resolution: token and manifest, whatever the registry does
REGISTRY_CALL_SECONDS = 3.0  # one socket operation
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # distribution's own limit on a manifest
MAX_TOKEN_BYTES = 64 * 1024
DOCKER_HUB_API = "registry-1.docker.io"
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = frozenset(MANIFEST_TYPES[:2])
PLATFORM = ("linux", "amd64")  # the Batch instances' (README: x86_64)

IMAGE_CHECKSUM_MISMATCH = "image_checksum_mismatch"
IMAGE_NOT_FOUND = "image_not_found"
IMAGE_REGISTRY_NOT_ALLOWED = "image_registry_not_allowed"  # as compute.container_rules answers
UNAVAILABLE = "The algorithm image's registry did not answer in time; nothing was reserved, try again"

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class RegistryLogin:
    """A login to one registry (a user and a password or access token): the operator's, or a
    consumer's for one job (compute.registry_auth). The password never appears in a repr."""

    username: str
    password: str = field(repr=False)

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    def secret_string(self) -> str:
        """The secret ECS reads a private image's login from (repositoryCredentials)."""
        return json.dumps({"username": self.username, "password": self.password})


@dataclass(frozen=True)
class PinnedImage:
    """What runs: `repository@digest`, and where it came from (`name:tag`, as the DDO said)."""

    name: str  # the image as the DDO names it, without tag or digest
    tag: str  # "" when the DDO pinned a digest in the image name itself
    digest: str
    resolved: bool  # asked the registry (False: the backend pulls no image, the DDO's checksum stands)

    @property
    def reference(self) -> str:
        return f"{self.name}@{self.digest}"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tag": self.tag, "digest": self.digest, "resolved": self.resolved}


class ImageDigests(Protocol):
    """Pins an algorithm container's image (compute.validation calls it on every start)."""

    def pin(self, container: Mapping[str, str], login: Optional[RegistryLogin] = None) -> PinnedImage:
        """`login`: the consumer's for this job (compute.registry_auth), used instead of the
        operator's for the image's registry."""
        ...


def image_parts(container: Mapping[str, str]) -> tuple[str, str, str]:
    """(name, tag, digest) of a DDO container: the tag in the image name, else `tag`, else
    `latest`; the digest named in the image (`name@sha256:…`), else ""."""
    image = str(container.get("image") or "").strip()
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)
    tag = ""
    if ":" in last[-1]:
        base, tag = last[-1].split(":", 1)
        name = "/".join([*last[:-1], base])
    if digest:
        return name, "", digest.lower()
    return name, tag or str(container.get("tag") or "").strip() or "latest", ""


class DeclaredDigests:
    """The local backend pulls no image (README, "Local mode"): what the DDO pins stands."""

    def pin(self, container: Mapping[str, str], login: Optional[RegistryLogin] = None) -> PinnedImage:
        name, tag, digest = image_parts(container)
        return PinnedImage(name, tag, digest or str(container.get("checksum") or "").lower(), resolved=False)


class RegistryDigests:
    """Resolves tags through the registries' HTTP API (see the module docstring).

    `logins()` gives the operator's logins by registry host (docker.io, ghcr.io, host:port),
    read on first use; `endpoints` maps a registry host to the base URL its API is reached at
    (tests point Docker Hub at a registry of their own)."""

    def __init__(self, logins: Callable[[], Mapping[str, RegistryLogin]] = dict, *, allow_private: bool = False,
                 endpoints: Optional[Mapping[str, str]] = None, seconds: float = REGISTRY_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logins = logins
        self._allow_private = allow_private
        self._endpoints = dict(endpoints or {})
        self._seconds = seconds
        self._clock = clock
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}  # (realm+service, scope) -> (token, until)
        self._lock = threading.Lock()

    def pin(self, container: Mapping[str, str], login: Optional[RegistryLogin] = None) -> PinnedImage:
        name, tag, named_digest = image_parts(container)
        checksum = str(container.get("checksum") or "").strip().lower()
        if tag and not _TAG.fullmatch(tag):
            raise BusinessError({"algorithm.container": IMAGE_NOT_FOUND})
        host, _, repository = image_location(name).partition("/")
        policy = FetchPolicy(allow_private=self._allow_private, timeout=REGISTRY_CALL_SECONDS, max_redirects=3,
                             deadline=self._clock() + budget.call_timeout(self._seconds))
        session = _Session(self, host, repository, policy, login)
        reply = session.manifest(named_digest or tag, method="HEAD")
        digest = reply.header("Docker-Content-Digest").strip().lower()
        body = b""
        if not _DIGEST.fullmatch(digest) or reply.status == 405:
            reply = session.manifest(named_digest or tag, method="GET")
            body = reply.body
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if named_digest and digest != named_digest:
            raise BusinessError({"algorithm.container": IMAGE_CHECKSUM_MISMATCH})
        if checksum and checksum != digest:
            platform_digest = self._platform_manifest(session, named_digest or tag, reply, body)
            if platform_digest != checksum:
                raise BusinessError({"algorithm.container": IMAGE_CHECKSUM_MISMATCH})
            digest = platform_digest
        return PinnedImage(name, tag, digest, resolved=True)

    def _platform_manifest(self, session: "_Session", reference: str, reply: Reply, body: bytes) -> str:
        """The linux/amd64 manifest's digest when the tag is a multi-platform index, else ""."""
        media_type = reply.header("Content-Type").split(";", 1)[0].strip()
        if media_type not in INDEX_TYPES:
            return ""
        if not body:
            body = session.manifest(reference, method="GET").body
        try:
            index = json.loads(body)
        except ValueError:
            return ""
        for entry in index.get("manifests", []) if isinstance(index, dict) else []:
            platform = entry.get("platform") if isinstance(entry, dict) else None
            if isinstance(platform, dict) and (platform.get("os"), platform.get("architecture")) == PLATFORM:
                digest = str(entry.get("digest", "")).lower()
                if _DIGEST.fullmatch(digest):
                    return digest
        return ""

    # -- what a session needs of the resolver ---------------------------------------------------

    def base_url(self, host: str) -> str:
        if host in self._endpoints:
            return self._endpoints[host].rstrip("/")
        if host == DOCKER_HUB:
            return f"https://{DOCKER_HUB_API}"
        return f"{'http' if self._allow_private and _is_loopback(host) else 'https'}://{host}"

    def plain_http_allowed(self, url: str) -> bool:
        """Whether `url` may be spoken to without TLS: a loopback registry where private
        addresses are allowed (as Docker's default insecure registries), or a test's endpoint."""
        host = url.split("://", 1)[-1].split("/", 1)[0]
        return any(url.startswith(base + "/") or url == base for base in self._endpoints.values()) or (
            self._allow_private and _is_loopback(host))

    def login(self, host: str) -> Optional[RegistryLogin]:
        return self._logins().get(host)

    def cached_token(self, key: tuple[str, str]) -> Optional[str]:
        with self._lock:
            found = self._tokens.get(key)
        return found[0] if found and found[1] > time.time() else None

    def keep_token(self, key: tuple[str, str], token: str, seconds: float) -> None:
        with self._lock:
            if len(self._tokens) > 256:
                self._tokens.clear()
            self._tokens[key] = (token, time.time() + max(0.0, seconds - 30))


class _Session:
    """The requests of one resolution: the manifest, and the token a challenge asks for."""

    def __init__(self, resolver: RegistryDigests, host: str, repository: str, policy: FetchPolicy,
                 login: Optional[RegistryLogin] = None) -> None:
        self._resolver = resolver
        self._job_login = login  # a consumer's: its tokens are never cached (another job's login may differ)
        self._host = host
        self._repository = repository
        self._policy = policy
        self._authorization: Optional[str] = None

    def manifest(self, reference: str, method: str) -> Reply:
        url = f"{self._resolver.base_url(self._host)}/v2/{self._repository}/manifests/{reference}"
        reply = self._send(url, method)
        if reply.status == 401 and self._authorization is None:
            self._authorization = self._answer(reply.header("WWW-Authenticate"))
            if self._authorization:
                reply = self._send(url, method)
        if reply.status in (401, 403, 404):
            raise BusinessError({"algorithm.container": IMAGE_NOT_FOUND})
        if reply.status == 405 and method == "HEAD":
            return reply  # the caller asks with GET
        if not 200 <= reply.status < 300:
            raise ServiceUnavailable(UNAVAILABLE)  # 429 (pull limits), 5xx: try again later
        return reply

    def _send(self, url: str, method: str, headers: Optional[Mapping[str, str]] = None,
              limit: int = MAX_MANIFEST_BYTES) -> Reply:
        sent = dict(headers or {"Accept": ", ".join(MANIFEST_TYPES)})
        if self._authorization and headers is None:
            sent["Authorization"] = self._authorization
        try:
            return request(url, policy=self._policy, method=method, headers=sent, limit=limit)
        except FetchError as error:
            if "not allowed" in str(error) or "only http" in str(error):  # the fetch policy's refusal
                raise BusinessError({"algorithm.container": IMAGE_REGISTRY_NOT_ALLOWED}) from None
            raise ServiceUnavailable(UNAVAILABLE) from None

    def _answer(self, challenge: str) -> Optional[str]:
        """The Authorization header that answers a 401's challenge, or None (nothing to try)."""
        scheme, _, rest = challenge.strip().partition(" ")
        login = self._job_login or self._resolver.login(self._host)
        if scheme.lower() == "basic":
            return login.basic() if login else None
        if scheme.lower() != "bearer":
            return None
        params = dict(_CHALLENGE.findall(rest))
        realm = params.get("realm", "")
        if not realm:
            return None
        if not realm.startswith("https://") and not (self._resolver.plain_http_allowed(realm)):
            login = None  # a login never travels in clear text, whatever realm the registry names
        scope = f"repository:{self._repository}:pull"
        key = (realm + " " + params.get("service", ""), scope + (" " + login.username if login else ""))
        token = None if self._job_login else self._resolver.cached_token(key)
        if token is None:
            query = urlencode({**({"service": params["service"]} if "service" in params else {}), "scope": scope})
            reply = self._send(f"{realm}{'&' if '?' in realm else '?'}{query}", "GET",
                               headers={"Authorization": login.basic()} if login else {}, limit=MAX_TOKEN_BYTES)
            if reply.status in (401, 403):
                raise BusinessError({"algorithm.container": IMAGE_NOT_FOUND})
            if reply.status != 200:
                raise ServiceUnavailable(UNAVAILABLE)
            try:
                answer = json.loads(reply.body)
                token = str(answer.get("token") or answer.get("access_token") or "")
                lifetime = float(answer.get("expires_in") or 60)
            except (ValueError, AttributeError, TypeError):
                raise ServiceUnavailable(UNAVAILABLE) from None
            if not token:
                raise ServiceUnavailable(UNAVAILABLE)
            if not self._job_login:
                self._resolver.keep_token(key, token, lifetime)
        return f"Bearer {token}"


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_logins(raw: str) -> dict[str, RegistryLogin]:
    """REGISTRY_CREDENTIALS: JSON {"<registry host>": {"username": "...", "password": "..."}}
    (Docker Hub as docker.io). ValueError names what is wrong, never a value."""
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise ValueError("must be a JSON object") from None
    if not isinstance(parsed, dict):
        raise ValueError("must be a JSON object")
    logins = {}
    for host, login in parsed.items():
        if not (isinstance(login, dict) and isinstance(login.get("username"), str)
                and isinstance(login.get("password"), str) and login["username"]):
            raise ValueError(f'the entry of {host!r} must be {{"username": "...", "password": "..."}}')
        location = image_location(f"{host}/x/y").split("/", 1)[0]  # docker.io's aliases, lower case
        logins[location] = RegistryLogin(login["username"], login["password"])
    return logins
