"""The compute environments in Ocean Node's shape (an array), from the same configuration as
the v4 view, with live counts; and requested `resources` checked against them.

A job here always gets its environment's whole job size (nCPU, ramGB, diskGB, nGPU: what the
Batch job is submitted with), so each resource's `min` and `max` per job are that size, `total`
is the size times the environment's (or the free tier's) maxJobs, and `inUse` the size times
the running jobs. Requests below the size are raised to it, as Ocean Node fills a missing or
small request up to `min`; above it they are refused.

Fees are `fees{chainId: [{feeToken, prices: [{id, price}]}]}`, price per unit per minute (the
shape escrow pricing needs): the configuration's `prices` per resource, or the environment's
priceMin spread over its CPUs.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from chalicelib.compute.environments import Environment, FreeTier
from chalicelib.errors import BusinessError, ValidationError

MIN_JOB_SECONDS = 60  # as compute.workflow's shortest paid job
PLATFORM = {"architecture": "x86_64", "os": "linux"}


def job_size(environment: Environment) -> dict[str, float]:
    """What one job gets, by Ocean Node's resource ids (ram and disk in GB)."""
    size: dict[str, float] = {"cpu": environment.n_cpu, "ram": environment.ram_gb, "disk": environment.disk_gb}
    if environment.n_gpu:
        size["gpu"] = environment.n_gpu
    return size


def prices(environment: Environment) -> list[dict[str, Any]]:
    if environment.free:
        return [{"id": resource, "price": 0} for resource in job_size(environment)]
    if environment.resource_prices:
        return [{"id": resource, "price": price} for resource, price in environment.resource_prices.items()]
    per_cpu = environment.price_min / max(1, environment.n_cpu)
    return [{"id": "cpu", "price": per_cpu}, *({"id": r, "price": 0} for r in job_size(environment) if r != "cpu")]


def resources(environment: Environment, max_jobs: int, running: int) -> list[dict[str, Any]]:
    listed = []
    for resource, amount in job_size(environment).items():
        entry: dict[str, Any] = {"id": resource, "total": amount * max_jobs, "min": amount, "max": amount,
                                 "inUse": amount * running}
        if resource == "cpu" and environment.cpu_type:
            entry["description"] = environment.cpu_type
        if resource == "gpu":
            entry.update({"type": "gpu", "description": environment.gpu_type})
        listed.append(entry)
    return listed


def free_view(environment: Environment, tier: FreeTier, running_free: int) -> dict[str, Any]:
    return {
        "maxJobDuration": tier.max_job_duration,
        "minJobDuration": 0,
        "maxJobs": tier.max_jobs,
        "maxJobsPerConsumer": tier.max_jobs_per_consumer,
        "storageExpiry": environment.storage_expiry,
        "resources": resources(environment, tier.max_jobs, running_free),
        "access": {"addresses": list(tier.access), "accessLists": None},
    }


def node_view(environment: Environment, chain_ids: Iterable[int], provider_address: str, running: int,
              running_free: int) -> dict[str, Any]:
    """One environment as ocean.js 8's ComputeEnvironment reads it."""
    view: dict[str, Any] = {
        "id": environment.id,
        "description": environment.description,
        "consumerAddress": provider_address,
        "platform": dict(PLATFORM),
        "fees": {str(chain): [{"feeToken": environment.fee_token(chain), "prices": prices(environment)}]
                 for chain in chain_ids if chain in environment.chain_ids},
        "resources": resources(environment, environment.max_jobs, running),
        "maxJobDuration": environment.max_job_duration,
        "minJobDuration": MIN_JOB_SECONDS,
        "storageExpiry": environment.storage_expiry,
        "maxJobs": environment.max_jobs,
        "runningJobs": running,
        "runningfreeJobs": running_free,
        "queuedJobs": 0,
        "queuedFreeJobs": 0,
        "queMaxWaitTime": 0,
        "queMaxWaitTimeFree": 0,
        "runMaxWaitTime": 0,
        "runMaxWaitTimeFree": 0,
        "access": {"addresses": [], "accessLists": None},
    }
    if environment.free_tier is not None:
        view["free"] = free_view(environment, environment.free_tier, running_free)
    return view


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


def listing(configured: Mapping[str, Environment], chain_ids: Iterable[int], provider_address: str,
            counts: Mapping[str, int], free_key: Any) -> list[dict[str, Any]]:
    """Every environment serving one of `chain_ids`; `counts` by usage key, `free_key(env)` the
    key of an environment's free-tier counter."""
    chains = list(chain_ids)
    return [node_view(e, chains, provider_address, counts.get(e.id, 0), counts.get(free_key(e), 0))
            for e in configured.values() if any(c in e.chain_ids for c in chains)]
