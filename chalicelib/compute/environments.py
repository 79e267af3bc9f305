"""Compute environments are configuration (DESIGN §4): what the provider offers, at what price,
on which Batch queue. Read once per container from COMPUTE_ENVIRONMENTS (inline JSON) or
COMPUTE_ENVIRONMENTS_FILE, defaulting to environments.json beside this module.

`networkJobQueue` (optional) names the Batch queue of an environment's network-allowed jobs. Batch
jobs on EC2 share their instance's network namespace, so a sealed algorithm could hand data over
an abstract Unix socket (or loopback) to a network-allowed algorithm on the same instance; iptables
never sees a Unix socket. Network-allowed jobs therefore run only on a compute environment of their
own: a queue that is never also a sealed queue of any environment. Without it, a job whose datasets
all allow network access runs sealed (compute.dispatch)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from chalicelib.auth.signatures import is_address, to_checksum_address
from chalicelib.errors import BusinessError, ConfigurationError, ValidationError

DEFAULT_FILE = Path(__file__).with_name("environments.json")
MIN_JOB_SECONDS = 60  # the shortest job a consumer pays for (v4 order time, escrow billing, Ocean Node's minJobDuration)


@dataclass(frozen=True)
class Access:
    """Who may start jobs: Ocean Node's `access {addresses, accessLists}`, per environment for
    paid jobs and per free tier for free ones. Open when both are empty; otherwise a consumer
    must be one of `addresses` (lower case) or hold a token of one of the AccessList contracts
    `lists` names as (chainId, address), checked on chain when a job starts (compute.access)."""

    addresses: tuple[str, ...] = ()
    lists: tuple[tuple[int, str], ...] = ()

    @property
    def is_open(self) -> bool:
        return not self.addresses and not self.lists

    def view(self) -> dict[str, Any]:
        """As Ocean Node shows it: `accessLists` an array of {chainId: [contracts]}, or null."""
        by_chain: dict[str, list[str]] = {}
        for chain_id, address in self.lists:
            by_chain.setdefault(str(chain_id), []).append(address)
        return {"addresses": [to_checksum_address(a) for a in self.addresses], "accessLists": [by_chain] if by_chain else None}


@dataclass(frozen=True)
class FreeTier:
    """Ocean Node's free compute on an environment ("freeCompute" in the configuration): jobs
    without payment, each limited to `max_job_duration` seconds, at most `max_jobs` of them at a
    time and `max_jobs_per_consumer` per consumer, for the consumers `access` admits (its own,
    apart from the environment's). A free job runs on the environment's own slots."""

    max_job_duration: int
    max_jobs: int
    max_jobs_per_consumer: int = 1
    access: Access = field(default_factory=Access)


@dataclass(frozen=True)
class Environment:
    id: str
    description: str
    chain_ids: tuple[int, ...]
    job_queue: str
    cpu_type: str
    gpu_type: str
    n_cpu: int
    n_gpu: int
    ram_gb: float
    disk_gb: float
    price_min: float
    max_jobs: int
    max_job_duration: int
    storage_expiry: int
    fee_tokens: Mapping[int, str] = field(default_factory=dict)
    free: bool = False
    free_tier: FreeTier | None = None
    resource_prices: Mapping[str, float] = field(default_factory=dict)  # per unit per minute, by resource id
    network_job_queue: str = ""  # the queue of network-allowed jobs; "" = this environment runs every job sealed
    access: Access = field(default_factory=Access)  # who may start paid jobs here

    @property
    def offers_network(self) -> bool:
        """Whether a job whose datasets all allow network access gets it here."""
        return bool(self.network_job_queue)

    def fee_token(self, chain_id: int) -> str:
        return self.fee_tokens.get(chain_id, "0x0000000000000000000000000000000000000000")

    def public(self, chain_id: int, provider_address: str, current_jobs: int) -> dict[str, Any]:
        """The environment as ocean.py and ocean.js read it (the spec's fields plus DESIGN §3.4's)."""
        return {
            "id": self.id,
            "desc": self.description,
            "cpuType": self.cpu_type,
            "nCPU": self.n_cpu,
            "gpuType": self.gpu_type,
            "nGPU": self.n_gpu,
            "ramGB": self.ram_gb,
            "diskGB": self.disk_gb,
            "priceMin": 0 if self.free else self.price_min,
            "maxJobs": self.max_jobs,
            "currentJobs": current_jobs,
            "consumerAddress": provider_address,
            "feeToken": self.fee_token(chain_id),
            "maxJobDuration": self.max_job_duration,
            "storageExpiry": self.storage_expiry,
            "lastSeen": 0,
            "free": self.free,
        }


def job_size(environment: Environment) -> dict[str, float]:
    """What one job gets, by Ocean Node's resource ids (ram and disk in GB): a job always gets its
    environment's whole size, which is what the Batch job is submitted with and what is priced."""
    size: dict[str, float] = {"cpu": environment.n_cpu, "ram": environment.ram_gb, "disk": environment.disk_gb}
    if environment.n_gpu:
        size["gpu"] = environment.n_gpu
    return size


def fill_resources(environment: Environment, requested: Sequence[Any] | None) -> list[dict[str, Any]]:
    """The resources a job will get: each of the environment's, a request raised to its size;
    an unknown resource, one asked twice, or more than the size is refused (400)."""
    size = job_size(environment)
    asked: dict[str, float] = {}
    for item in requested or ():
        if item.id not in size:
            raise ValidationError.field("resources", f"unknown resource {item.id!r}; this environment has {', '.join(size)}")
        if item.id in asked:
            raise ValidationError.field("resources", f"resource {item.id!r} requested twice")
        asked[item.id] = item.amount
    for resource, amount in asked.items():
        if amount > size[resource]:
            raise BusinessError(f"Not enough {resource} resources. Requested {amount:g}, but max is {size[resource]:g}")
    return [{"id": resource, "amount": amount} for resource, amount in size.items()]


def parse_environments(raw: list[Mapping[str, Any]]) -> dict[str, Environment]:
    environments: dict[str, Environment] = {}
    for index, item in enumerate(raw):
        try:
            environment = Environment(
                id=str(item["id"]),
                description=str(item.get("description", "")),
                chain_ids=tuple(int(c) for c in item["chainIds"]),
                job_queue=str(item["jobQueue"]),
                cpu_type=str(item.get("cpuType", "")),
                gpu_type=str(item.get("gpuType", "")),
                n_cpu=int(item["nCPU"]),
                n_gpu=int(item.get("nGPU", 0)),
                ram_gb=float(item["ramGB"]),
                disk_gb=float(item["diskGB"]),
                price_min=float(item.get("priceMin", 0)),
                max_jobs=int(item["maxJobs"]),
                max_job_duration=int(item["maxJobDuration"]),
                storage_expiry=int(item.get("storageExpiry", 604800)),
                fee_tokens={int(k): str(v) for k, v in item.get("feeToken", {}).items()},
                free=bool(item.get("free", False)),
                free_tier=_free_tier(item.get("freeCompute")),
                resource_prices={str(k): float(v) for k, v in (item.get("prices") or {}).items()},
                network_job_queue=_network_queue(item.get("networkJobQueue")),
                access=parse_access(item.get("access")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ConfigurationError(f"compute environment #{index} is malformed: {error!r}") from None
        if environment.id in environments:
            raise ConfigurationError(f"compute environment id {environment.id!r} is defined twice")
        environments[environment.id] = environment
    _check_queue_separation(environments.values())
    return environments


def _network_queue(raw: Any) -> str:
    if raw in (None, ""):
        return ""
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("networkJobQueue must be a queue name or ARN")
    return raw.strip()


def queue_name(queue: str) -> str:
    """A queue's name, whether given by name or ARN (.../job-queue/<name>)."""
    return queue.rsplit("/", 1)[-1]


def _check_queue_separation(configured: Iterable[Environment]) -> None:
    """No queue may carry both sealed and network-allowed jobs, in any two environments: the
    isolation of sealed jobs is that their instances never run a network-allowed one."""
    configured = list(configured)
    sealed = {queue_name(e.job_queue) for e in configured}
    for environment in configured:
        if environment.network_job_queue and queue_name(environment.network_job_queue) in sealed:
            raise ConfigurationError(f"compute environment {environment.id}: networkJobQueue "
                                     f"{environment.network_job_queue!r} is also a jobQueue: sealed and "
                                     "network-allowed jobs must never share a compute environment")


def job_queues(configured: Iterable[Environment]) -> set[str]:
    """Every queue the environments submit to, sealed and network-allowed."""
    return {queue for e in configured for queue in (e.job_queue, e.network_job_queue) if queue}


def _free_tier(raw: Any) -> FreeTier | None:
    if raw in (None, False):
        return None
    tier = FreeTier(
        max_job_duration=int(raw["maxJobDuration"]),
        max_jobs=int(raw["maxJobs"]),
        max_jobs_per_consumer=int(raw.get("maxJobsPerConsumer", 1)),
        access=parse_access(raw.get("access")),
    )
    if min(tier.max_job_duration, tier.max_jobs, tier.max_jobs_per_consumer) <= 0:
        raise ValueError("freeCompute limits must be positive")
    return tier


def parse_access(raw: Any) -> Access:
    """Ocean Node's `{"addresses": [...], "accessLists": [{"<chainId>": ["0x<AccessList>", ...]}] | null}`;
    a bare list of addresses (this provider's earlier free-tier form) is the addresses alone."""
    if raw in (None, [], {}):
        return Access()
    if isinstance(raw, list):
        raw = {"addresses": raw}
    if not isinstance(raw, dict) or set(raw) - {"addresses", "accessLists"}:
        raise ValueError("access must be {addresses, accessLists}")
    addresses = raw.get("addresses") or []
    lists = raw.get("accessLists") or []
    if not isinstance(addresses, list) or not all(is_address(a) for a in addresses):
        raise ValueError("access.addresses must be a list of 0x-addresses")
    if not isinstance(lists, list) or not all(isinstance(entry, dict) for entry in lists):
        raise ValueError("access.accessLists must be a list of {chainId: [AccessList addresses]}")
    contracts = []
    for entry in lists:
        for chain_id, listed in entry.items():
            if not isinstance(listed, list) or not all(is_address(a) for a in listed):
                raise ValueError("access.accessLists must map chain ids to lists of 0x-addresses")
            contracts.extend((int(chain_id), to_checksum_address(address)) for address in listed)
    return Access(tuple(dict.fromkeys(a.lower() for a in addresses)), tuple(dict.fromkeys(contracts)))


def load_environments(env: Mapping[str, str] | None = None) -> dict[str, Environment]:
    env = os.environ if env is None else env
    inline = env.get("COMPUTE_ENVIRONMENTS", "").strip()
    try:
        if inline:
            raw = json.loads(inline)
        else:
            raw = json.loads(Path(env.get("COMPUTE_ENVIRONMENTS_FILE") or DEFAULT_FILE).read_text())
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"COMPUTE_ENVIRONMENTS(_FILE) is unreadable: {type(error).__name__}") from None
    if not isinstance(raw, list):
        raise ConfigurationError("COMPUTE_ENVIRONMENTS must be a JSON list")
    return parse_environments(raw)


@lru_cache(maxsize=1)
def environments() -> dict[str, Environment]:
    return load_environments()


def listing(
    configured: Mapping[str, Environment],
    chain_ids: list[int],
    provider_address: str,
    running: Mapping[str, int],
    only_chain: int | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """{"<chainId>": [environment, ...]} for every served chain, as ocean.py and ocean.js read it."""
    chains = [c for c in chain_ids if only_chain is None or c == only_chain]
    return {
        str(chain): [e.public(chain, provider_address, running.get(e.id, 0)) for e in configured.values() if chain in e.chain_ids]
        for chain in chains
    }
