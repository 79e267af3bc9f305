"""Settings of the provider, read once per container.

Everything an operator can set lives here, so a missing or malformed value fails in one place
with a message that names the variable, instead of deep inside a request.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Mapping

from chalicelib import budget
from chalicelib.errors import ConfigurationError

_HEX_KEY = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_S3_ARN = re.compile(r"^arn:aws[a-z-]*:s3:::([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*))?$")
ANY_PUBLISHER = "*"


@dataclass(frozen=True)
class S3Place:
    """One bucket, or a prefix in it, and the publishers (NFT owners, lower case) that may use it."""

    bucket: str
    prefix: str  # "" for the whole bucket
    publishers: frozenset[str]

    def holds(self, bucket: str, key: str) -> bool:
        if bucket != self.bucket:
            return False
        if not self.prefix or self.prefix.endswith("/"):
            return key.startswith(self.prefix)
        return key == self.prefix or key.startswith(self.prefix + "/")


@dataclass(frozen=True)
class S3FileSources:
    """S3_FILE_SOURCES: which publishers may name which S3 places in their DDOs' `s3` files.

    The jobs' credentials can read every place the operator lets jobs read (DataObjectArns), so
    without this a publisher could point a dataset at another publisher's private object and buy
    it from itself (issue 10 #5). JSON object, keys bucket or bucket/prefix ARNs
    (`arn:aws:s3:::bucket`, `arn:aws:s3:::bucket/prefix/`, a trailing `*` allowed), values lists
    of publisher addresses or "*" for any publisher. Unset or `{}`: no `s3` file is accepted."""

    places: tuple[S3Place, ...] = ()

    def allows(self, publisher: str, bucket: str, key: str) -> bool:
        if {".", ".."} & set(key.split("/")):
            return False
        who = publisher.lower()
        return any(place.holds(bucket, key) and (who in place.publishers or ANY_PUBLISHER in place.publishers)
                   for place in self.places)

    @classmethod
    def parse(cls, raw: str) -> "S3FileSources":
        if not raw.strip():
            return cls()
        problem = ConfigurationError('S3_FILE_SOURCES must be a JSON object {"arn:aws:s3:::bucket[/prefix]": '
                                     '["0x<publisher address>" or "*", ...]}')
        try:
            parsed = json.loads(raw)
        except ValueError:
            raise problem from None
        if not isinstance(parsed, dict):
            raise problem
        places = []
        for arn, publishers in parsed.items():
            match = _S3_ARN.match(str(arn))
            if not match or not isinstance(publishers, list) or not all(
                    isinstance(p, str) and (p == ANY_PUBLISHER or _ADDRESS.match(p)) for p in publishers):
                raise problem
            prefix = (match.group(2) or "").removesuffix("*")
            places.append(S3Place(match.group(1), prefix, frozenset(p.lower() for p in publishers)))
        return cls(tuple(places))


# Registries an algorithm image may come from unless ALGORITHM_REGISTRIES says otherwise: the public
# ones Ocean's algorithms are published on. Not the account's own ECR (the instances pull with AWS
# credentials: the job's execution role, or the instance role, whose AmazonEC2ContainerServiceforEC2Role
# reads every repository), nor registries inside the VPC (no credentials needed): a consumer naming
# a private image would have it run and get its files back as results. "*" allows any registry.
DEFAULT_ALGORITHM_REGISTRIES = ("docker.io", "public.ecr.aws", "ghcr.io", "quay.io")
ANY_REGISTRY = "*"
DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})
_REGISTRY_ENTRY = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9][a-z0-9._-]*)*$")


def image_location(image: str) -> str:
    """`host/repository` of an image reference as Docker resolves it (distribution/reference):
    the first component is a registry only if it has a "." or ":", is "localhost" or has upper
    case; otherwise the image is on Docker Hub ("python" is docker.io/library/python). Tag and
    digest are dropped; the host is lower case, Docker Hub's aliases are docker.io."""
    name = image.strip().split("@", 1)[0]
    first, slash, rest = name.partition("/")
    if slash and (any(c in first for c in ".:") or first == "localhost" or first.lower() != first):
        host, path = first.lower(), rest
    else:
        host, path = DOCKER_HUB, name if slash else f"library/{name}"
    if host in _DOCKER_HUB_ALIASES:
        host = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    last = path.rsplit("/", 1)
    if ":" in last[-1]:
        path = "/".join([*last[:-1], last[-1].split(":", 1)[0]])
    return f"{host}/{path}"


@dataclass(frozen=True)
class ImageRegistries:
    """ALGORITHM_REGISTRIES: where algorithm images may come from, as registry hosts
    (`ghcr.io`, `registry.example.com:5000`) or host/namespace prefixes (`docker.io/library`,
    `ghcr.io/oceanprotocol`); "*" allows any. Empty: DEFAULT_ALGORITHM_REGISTRIES."""

    allowed: tuple[str, ...] = DEFAULT_ALGORITHM_REGISTRIES

    @classmethod
    def parse(cls, raw: str) -> "ImageRegistries":
        entries = [entry.strip() for entry in raw.replace(",", " ").split() if entry.strip()]
        if not entries:
            return cls()
        if ANY_REGISTRY in entries:
            return cls((ANY_REGISTRY,))
        normalized = []
        for entry in entries:
            host, slash, path = entry.rstrip("/").partition("/")
            host = DOCKER_HUB if host.lower() in _DOCKER_HUB_ALIASES else host.lower()
            value = f"{host}{slash}{path}"
            if not _REGISTRY_ENTRY.match(value):
                raise ConfigurationError("ALGORITHM_REGISTRIES must list registries as host[:port][/namespace...], "
                                         f"or *; {entry!r} is not one")
            normalized.append(value)
        return cls(tuple(normalized))

    def allows(self, image: str) -> bool:
        if ANY_REGISTRY in self.allowed:
            return True
        location = image_location(image)
        return any(location == entry or location.startswith(entry + "/") for entry in self.allowed)


@dataclass(frozen=True)
class Settings:
    """The provider's configuration; secrets are loaded lazily (see `provider_private_key`)."""

    chains: Mapping[int, str]
    region: str
    nonces_table: str
    jobs_table: str
    revoked_tokens_table: str
    assets_table: str
    orders_table: str
    counters_table: str
    bucket: str
    token_max_lifetime: int
    provider_url: str
    metadata_url: str | None
    stage: str
    rpc_timeout: float
    compute_backend: str
    runner_image: str
    batch_job_role_arn: str | None
    batch_execution_role_arn: str | None
    event_bus: str
    allow_private_networks: bool
    ipfs_gateway: str
    arweave_gateway: str
    s3_file_sources: S3FileSources = field(default_factory=S3FileSources)
    algorithm_registries: ImageRegistries = field(default_factory=ImageRegistries)
    # Ocean Node's free compute runs only on datasets these publishers or these dids put up
    # (lower case); empty: no dataset may be computed for free. A publisher is the creator of the
    # data NFT as the chain's ERC721Factory recorded it (NFTCreated), never its current owner,
    # which anyone can make anyone by a transfer; `nft_factories` names the factory per chain.
    free_compute_publishers: tuple[str, ...] = ()
    nft_factories: Mapping[int, str] = field(default_factory=dict)
    # Free starts taken across the provider per minute, and by one consumer per hour (0: no limit):
    # what keeps throwaway keys from holding the free tier (node.free).
    free_starts_per_minute: int = 30
    free_starts_per_consumer_per_hour: int = 10
    algorithm_log_group: str = "/aws/batch/job"  # CloudWatch group of the algorithm containers (awslogs)
    # How long a job record outlives its environment's storageExpiry (DynamoDB TTL, see models).
    job_record_retention: int = 30 * 86400
    audit_table: str = "ocean-c2d-audit"  # the publishers' audit log (models.AuditEntry)
    # The operator's registry logins ECS pulls algorithm images with: registry host -> ARN of a
    # Secrets Manager secret {"username", "password"} (REGISTRY_SECRETS; compute.dispatch); the
    # image digests read the same secrets (compute.image_digests)
    registry_secrets: Mapping[str, str] = field(default_factory=dict)
    # where a start keeps a consumer's registry login while its job exists (compute.registry_auth)
    registry_secret_prefix: str = "ocean-c2d/job-registry/"
    # dids and publisher addresses (lower case) whose datasets' results wait for their owner's
    # release (chalicelib.owner.release)
    release_required: tuple[str, ...] = ()
    _secrets: "SecretSource" = field(repr=False, compare=False, default=None)  # type: ignore[assignment]

    @property
    def chain_ids(self) -> list[int]:
        return sorted(self.chains)

    def provider_private_key(self) -> str:
        """The provider's signing key as 0x-hex; read from the secret store on first use."""
        return self._secrets.provider_key()

    def jwt_secret(self) -> str:
        return self._secrets.jwt_secret()

    def registry_credentials(self) -> str:
        """The operator's registry logins as JSON text ("" when none are configured): read from
        the secret store on first use, by the first start that asks a registry."""
        return self._secrets.optional("REGISTRY_CREDENTIALS", "REGISTRY_CREDENTIALS_SECRET")

    def registry_secret(self, host: str) -> str:
        """The secret text of the operator's REGISTRY_SECRETS entry for `host`, read on first use."""
        return self._secrets.named(self.registry_secrets[host])


class SecretSource:
    """Reads the two secrets from the environment (local) or AWS (deployed), once per container.

    In AWS the environment holds only the secret's *name* (`PROVIDER_KEY_SECRET`/`JWT_SECRET_NAME`),
    either a Secrets Manager id or an SSM SecureString parameter (`ssm:/path`), so the values never
    appear in the Lambda configuration.
    """

    def __init__(self, env: Mapping[str, str], fetch: Callable[[str], str] | None = None):
        self._env = env
        self._fetch = fetch or _fetch_aws_secret
        self._cache: dict[str, str] = {}

    def provider_key(self) -> str:
        key = self._read("PROVIDER_PRIVATE_KEY", "PROVIDER_KEY_SECRET")
        if not _HEX_KEY.match(key):
            raise ConfigurationError("PROVIDER_PRIVATE_KEY must be 32 bytes of hex (0x-prefixed or not)")
        return key if key.startswith("0x") else "0x" + key

    def jwt_secret(self) -> str:
        secret = self._read("JWT_SECRET", "JWT_SECRET_NAME")
        if len(secret) < 32:
            raise ConfigurationError("JWT_SECRET must be at least 32 characters")
        if secret.lower().removeprefix("0x") == self.provider_key().lower().removeprefix("0x"):
            raise ConfigurationError("JWT_SECRET must differ from the provider private key")
        return secret

    def named(self, secret_id: str) -> str:
        """A secret read by its id (an ARN a setting names), once per container."""
        key = "arn " + secret_id
        if key not in self._cache:
            self._cache[key] = self._fetch(secret_id).strip()
        return self._cache[key]

    def optional(self, plain_var: str, secret_name_var: str) -> str:
        """A secret that may be left unset: "" then."""
        if not self._env.get(plain_var, "").strip() and not self._env.get(secret_name_var, "").strip():
            return ""
        return self._read(plain_var, secret_name_var)

    def _read(self, plain_var: str, secret_name_var: str) -> str:
        if plain_var in self._cache:
            return self._cache[plain_var]
        value = self._env.get(plain_var, "").strip()
        if not value:
            name = self._env.get(secret_name_var, "").strip()
            if not name:
                raise ConfigurationError(f"{plain_var} (or {secret_name_var}) is not set")
            value = self._fetch(name).strip()
        self._cache[plain_var] = value
        return value


def _fetch_aws_secret(name: str) -> str:
    from chalicelib import aws

    if name.startswith("ssm:"):
        response = aws.client("ssm").get_parameter(Name=name[4:], WithDecryption=True)
        return response["Parameter"]["Value"]
    return aws.client("secretsmanager").get_secret_value(SecretId=name)["SecretString"]


def registry_secret_arns(raw: str) -> dict[str, str]:
    """REGISTRY_SECRETS: JSON {"<registry host>": "<Secrets Manager secret ARN>"} (Docker Hub as
    docker.io), each secret {"username": "...", "password": "..."} as ECS reads it."""
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict) or not all(
            isinstance(arn, str) and arn.startswith("arn:") and ":secretsmanager:" in arn and ":secret:" in arn
            for arn in parsed.values()):
        raise ConfigurationError('REGISTRY_SECRETS must be a JSON object {"<registry host>": "<secret ARN>"}')
    return {image_location(f"{host}/x/y").split("/", 1)[0]: arn for host, arn in parsed.items()}


def _parse_chains(raw: str) -> dict[int, str]:
    try:
        parsed = json.loads(raw)
        chains = {int(k): str(v) for k, v in parsed.items()}
    except (ValueError, AttributeError, TypeError):
        raise ConfigurationError('CHAINS must be a JSON object {"<chainId>": "<rpcUrl>"}') from None
    if not chains or not all(url.startswith(("http://", "https://")) for url in chains.values()):
        raise ConfigurationError("CHAINS must name at least one chain with an http(s) RPC URL")
    return chains


def _name_list(raw: str) -> tuple[str, ...]:
    """A setting listing addresses or dids: a JSON list, or comma/space separated."""
    text = raw.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except ValueError:
            raise ConfigurationError("FREE_COMPUTE_PUBLISHERS must be a JSON list or comma-separated") from None
        if not isinstance(items, list):
            raise ConfigurationError("FREE_COMPUTE_PUBLISHERS must be a JSON list or comma-separated")
    else:
        items = text.replace(",", " ").split()
    return tuple(str(item).strip().lower() for item in items if str(item).strip())


def chain_addresses(env: Mapping[str, str], name: str) -> dict[int, str]:
    """A setting mapping chain ids to contract addresses: JSON {"<chainId>": "0x..."}."""
    raw = env.get(name, "").strip()
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
        addresses = {int(chain): str(address) for chain, address in parsed.items()}
    except (ValueError, TypeError, AttributeError):
        raise ConfigurationError(f'{name} must be a JSON object {{"<chainId>": "0x<address>"}}') from None
    if not all(_ADDRESS.match(address) for address in addresses.values()):
        raise ConfigurationError(f"{name} must map chain ids to 0x-addresses")
    return addresses


def _positive_number(env: Mapping[str, str], name: str, default: str, kind: type = int) -> float:
    raw = env.get(name, default)
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigurationError(f"{name} must be positive")
    return value


def _non_negative_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip() or str(default)
    if not raw.isascii() or not raw.isdigit():
        raise ConfigurationError(f"{name} must be a whole number of seconds, got {raw!r}")
    return int(raw)


def _limit(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip() or str(default)
    if not raw.isascii() or not raw.isdigit():
        raise ConfigurationError(f"{name} must be a whole number (0: no limit), got {raw!r}")
    return int(raw)


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = env.get(name, "").strip() or default
    if value not in allowed:
        raise ConfigurationError(f"{name} must be one of {', '.join(allowed)}")
    return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from an environment mapping; raise ConfigurationError naming what is wrong."""
    env = os.environ if env is None else env
    prefix = env.get("RESOURCE_PREFIX", "ocean-c2d")
    bucket = env.get("RESULTS_BUCKET", "").strip()
    if not bucket:
        raise ConfigurationError("RESULTS_BUCKET is not set")
    metadata_url = env.get("METADATA_URL", "").strip().rstrip("/") or None
    free_publishers = _name_list(env.get("FREE_COMPUTE_PUBLISHERS", ""))
    factories = chain_addresses(env, "NFT_FACTORIES")
    if any(name.startswith("0x") for name in free_publishers) and not factories:
        raise ConfigurationError("FREE_COMPUTE_PUBLISHERS names publishers, but NFT_FACTORIES names no ERC721Factory "
                                 "to tell who created a data NFT")
    return Settings(
        chains=_parse_chains(env.get("CHAINS", "")),
        region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        nonces_table=env.get("NONCES_TABLE", f"{prefix}-nonces"),
        jobs_table=env.get("JOBS_TABLE", f"{prefix}-jobs"),
        revoked_tokens_table=env.get("REVOKED_TOKENS_TABLE", f"{prefix}-revoked-tokens"),
        assets_table=env.get("ASSETS_TABLE", f"{prefix}-assets"),
        orders_table=env.get("ORDERS_TABLE", f"{prefix}-orders"),
        counters_table=env.get("COUNTERS_TABLE", f"{prefix}-counters"),
        bucket=bucket,
        token_max_lifetime=int(_positive_number(env, "TOKEN_MAX_LIFETIME", "86400")),
        provider_url=env.get("PROVIDER_URL", "http://127.0.0.1:8030").rstrip("/"),
        metadata_url=metadata_url,
        stage=env.get("STAGE", "dev"),
        rpc_timeout=float(_positive_number(env, "RPC_TIMEOUT", str(budget.RPC_TIMEOUT_SECONDS), float)),
        compute_backend=_choice(env, "COMPUTE_BACKEND", ("batch", "local"), "batch"),
        runner_image=env.get("RUNNER_IMAGE", "").strip() or "ocean-c2d-runner:latest",
        batch_job_role_arn=env.get("BATCH_JOB_ROLE_ARN", "").strip() or None,
        batch_execution_role_arn=env.get("BATCH_EXECUTION_ROLE_ARN", "").strip() or None,
        event_bus=env.get("EVENT_BUS_NAME", "").strip() or "default",
        allow_private_networks=env.get("ALLOW_PRIVATE_NETWORKS", "").strip().lower() in ("1", "true", "yes", "on"),
        ipfs_gateway=(env.get("IPFS_GATEWAY", "").strip() or "https://ipfs.io").rstrip("/"),
        arweave_gateway=(env.get("ARWEAVE_GATEWAY", "").strip() or "https://arweave.net").rstrip("/"),
        s3_file_sources=S3FileSources.parse(env.get("S3_FILE_SOURCES", "")),
        algorithm_registries=ImageRegistries.parse(env.get("ALGORITHM_REGISTRIES", "")),
        free_compute_publishers=free_publishers,
        nft_factories=factories,
        free_starts_per_minute=_limit(env, "FREE_STARTS_PER_MINUTE", 30),
        free_starts_per_consumer_per_hour=_limit(env, "FREE_STARTS_PER_CONSUMER_PER_HOUR", 10),
        algorithm_log_group=env.get("ALGORITHM_LOG_GROUP", "").strip() or "/aws/batch/job",
        job_record_retention=_non_negative_int(env, "JOB_RECORD_RETENTION", 30 * 86400),
        audit_table=env.get("AUDIT_TABLE", f"{prefix}-audit"),
        registry_secrets=registry_secret_arns(env.get("REGISTRY_SECRETS", "")),
        registry_secret_prefix=f"{prefix}/job-registry/",
        release_required=tuple(item.lower() for item in env.get("RELEASE_REQUIRED", "").replace(",", " ").split()),
        _secrets=SecretSource(env),
    )


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The container's settings, built on first use."""
    return load_settings()
