"""The compute environments in Ocean Node's shape (an array), from the same configuration as
the v4 view, with live counts; and requested `resources` checked against them.

A job here always gets its environment's whole job size (nCPU, ramGB, diskGB, nGPU: what the
Batch job is submitted with), so each resource's `min` and `max` per job are that size, `total`
is the size times the environment's (or the free tier's) maxJobs, and `inUse` the size times
the running jobs. Requests below the size are raised to it, as Ocean Node fills a missing or
small request up to `min`; above it they are refused.

Fees are `fees{chainId: [{feeToken, prices: [{id, price}]}]}`, price per unit per minute (the
shape escrow pricing needs), decided by the core (`payments.pricing.environment_fees`).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from chalicelib.compute.environments import MIN_JOB_SECONDS, Environment, FreeTier, job_size
from chalicelib.payments.pricing import environment_fees

PLATFORM = {"architecture": "x86_64", "os": "linux"}


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
        "access": tier.access.view(),
    }


def node_view(environment: Environment, chain_ids: Iterable[int], provider_address: str, running: int,
              running_free: int) -> dict[str, Any]:
    """One environment as ocean.js 8's ComputeEnvironment reads it."""
    view: dict[str, Any] = {
        "id": environment.id,
        "description": environment.description,
        "consumerAddress": provider_address,
        "platform": dict(PLATFORM),
        "fees": {str(chain): [environment_fees(environment, chain)] for chain in chain_ids if chain in environment.chain_ids},
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
        "access": environment.access.view(),
    }
    if environment.free_tier is not None:
        view["free"] = free_view(environment, environment.free_tier, running_free)
    return view


def listing(configured: Mapping[str, Environment], chain_ids: Iterable[int], provider_address: str,
            counts: Mapping[str, int], free_key: Any) -> list[dict[str, Any]]:
    """Every environment serving one of `chain_ids`; `counts` by usage key, `free_key(env)` the
    key of an environment's free-tier counter."""
    chains = list(chain_ids)
    return [node_view(e, chains, provider_address, counts.get(e.id, 0), counts.get(free_key(e), 0))
            for e in configured.values() if any(c in e.chain_ids for c in chains)]
