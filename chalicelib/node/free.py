"""Free compute (Ocean Node's `freeCompute`): a job on an environment's free tier, with no
payment and no order, within the tier's limits, and only on datasets the operator lets compute
for free (FREE_COMPUTE_PUBLISHERS: dids, or publishers: the creators of data NFTs as the chain's
factory recorded them, assets.creators; never an NFT's current owner, which anyone can make an
allowed publisher by transferring the NFT to it).

Ocean Node lets any dataset be computed for free unless its credentials forbid it; we do not:
a data owner's dataset is free here only if the operator says so. The consumer's own files
(`fileObject` inputs, as Ocean Node takes them) need no such consent. Everything else
(validation, trusted algorithms, credentials, the algorithm's pinned checksums, sealed
execution) is the paid job's.

The tier's limits are counters taken in the job's start transaction (compute.jobs `Slot`) and
given back by the write that ends it, so two concurrent starts cannot both take the last slot.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

from chalicelib.compute.environments import Environment, FreeTier
from chalicelib.compute.job_reservations import Slot
from chalicelib.compute.plan import ComputePlan
from chalicelib.compute.start_rate import Rate
from chalicelib.errors import BusinessError

if TYPE_CHECKING:
    from chalicelib.assets.creators import NftCreators
    from chalicelib.compute.access import AccessLists


def free_key(environment: Environment) -> str:
    return f"{environment.id}#free"


def consumer_key(environment: Environment, consumer: str) -> str:
    return f"{environment.id}#free#{consumer.lower()}"


def tier_of(environment: Environment, consumer: str, access: AccessLists) -> FreeTier:
    """The environment's free tier, if it has one whose `access` admits `consumer` (403 if not)."""
    tier = environment.free_tier
    if tier is None:
        raise BusinessError(f"Environment {environment.id} offers no free compute")
    access.require(tier.access, consumer, f"the free tier of compute environment {environment.id}")
    return tier


def job_seconds(tier: FreeTier, requested: int | None) -> int:
    """The job's time limit: what was asked, capped by the tier (Ocean Node's rule)."""
    if not requested or requested > tier.max_job_duration:
        return tier.max_job_duration
    return requested


def slots(environment: Environment, tier: FreeTier, consumer: str) -> list[Slot]:
    return [
        Slot(free_key(environment), tier.max_jobs,
             f"The free tier of {environment.id} is at capacity ({tier.max_jobs} jobs); try again later"),
        Slot(consumer_key(environment, consumer), tier.max_jobs_per_consumer,
             f"You already run {tier.max_jobs_per_consumer} free job(s) on {environment.id}; wait for one to end"),
    ]


def start_rates(consumer: str, per_minute: int, per_consumer_per_hour: int) -> list[Rate]:
    """The rates a free start is taken under (compute.start_rate): provider-wide per minute,
    whatever the number of keys, and per consumer per hour, so one key cannot hold the tier."""
    return [
        Rate("free", per_minute, 60,
             "Too many free jobs are starting on this provider (at most {limit} a minute); try again in {retry} s"),
        Rate(f"free#{consumer.lower()}", per_consumer_per_hour, 3600,
             "You started {limit} free jobs this hour, the most one consumer may; try again in {retry} s"),
    ]


def check_publishers(plan: ComputePlan, allowed: Iterable[str], creators: NftCreators) -> None:
    """Every published dataset must be an allowed did, or its data NFT created by an allowed
    publisher. A raw input (`fileObject`) is the consumer's own file: no data owner's consent is
    at stake, and the tier's limits and rates bound what it costs the operator."""
    names = {name.lower() for name in allowed}
    for dataset in plan.datasets:
        if dataset.is_raw or dataset.did.lower() in names:
            continue
        if not any(name.startswith("0x") for name in names):
            raise BusinessError({dataset.resource: "not_free_compute_dataset"})
        asset = dataset.asset
        creator = creators.creator(asset.chain_id, asset.nft_address, asset.metadata_block)
        if not creator or creator.lower() not in names:
            raise BusinessError({dataset.resource: "not_free_compute_dataset"})


__all__: Sequence[str] = ("check_publishers", "consumer_key", "free_key", "job_seconds", "slots", "start_rates", "tier_of")
