"""What the admin routes do once the operator is proven (chalicelib.admin.auth): the overview
(environments, their load, drains, free tiers, the provider's gas), the job listing and stop,
drain and undrain, escrow earnings and claims per chain, the free tier's use per consumer."""
from __future__ import annotations

import time
from collections import defaultdict
from decimal import Decimal
from typing import Any

from pynamodb.exceptions import PynamoDBException

from chalicelib import services
from chalicelib.admin import listing
from chalicelib.compute import status as st
from chalicelib.compute.environments import Environment, environments
from chalicelib.errors import BusinessError, NotFound, ServiceUnavailable
from chalicelib.models import EnvironmentUsage, JobRecord
from chalicelib.observability.context import annotate

STOPPED_BY_OPERATOR = "Job stopped by the provider's operator"
RECENT_PAYMENTS = 100  # per chain and page
FREE_WINDOW_JOBS = 200  # newest jobs of an environment read for its free tier's use
UNAVAILABLE = "Job store is unavailable, try again later"


def _environment(environment_id: str) -> Environment:
    found = environments().get(environment_id)
    if found is None:
        raise NotFound("Unknown compute environment")
    return found


def _usage(keys: list[str]) -> dict[str, EnvironmentUsage]:
    try:
        return {item.environment: item for item in EnvironmentUsage.batch_get(keys)} if keys else {}
    except PynamoDBException as error:
        raise ServiceUnavailable(UNAVAILABLE) from error


def _active(environment_id: str) -> list[JobRecord]:
    """The environment's jobs that have not ended (the sparse active index: at most its slots)."""
    try:
        return [job for job in JobRecord.active.query(environment_id) if not st.is_terminal(int(job.status))]
    except PynamoDBException as error:
        raise ServiceUnavailable(UNAVAILABLE) from error


def environment_view(environment: Environment, usage: dict[str, EnvironmentUsage]) -> dict[str, Any]:
    counter = usage.get(environment.id)
    active = _active(environment.id)
    running = [job for job in active if st.rank(int(job.status)) >= st.rank(st.RUNNING)]
    view: dict[str, Any] = {
        "id": environment.id, "description": environment.description, "chainIds": list(environment.chain_ids),
        "maxJobs": environment.max_jobs, "currentJobs": max(0, int(counter.running)) if counter and counter.running else 0,
        "running": len(running), "queued": len(active) - len(running),
        "drained": bool(counter and counter.drained_at), "drainedAt": int(counter.drained_at) if counter and counter.drained_at else None,
        "nCPU": environment.n_cpu, "nGPU": environment.n_gpu, "maxJobDuration": environment.max_job_duration,
        "free": None,
    }
    tier = environment.free_tier
    if tier is not None:
        from chalicelib.node.free import free_key

        free = usage.get(free_key(environment))
        view["free"] = {"maxJobs": tier.max_jobs, "maxJobsPerConsumer": tier.max_jobs_per_consumer,
                        "maxJobDuration": tier.max_job_duration,
                        "inUse": max(0, int(free.running)) if free and free.running else 0}
    return view


def overview() -> dict[str, Any]:
    configured = list(environments().values())
    from chalicelib.node.free import free_key

    keys = [e.id for e in configured] + [free_key(e) for e in configured if e.free_tier]
    usage = _usage(keys)
    return {"environments": [environment_view(e, usage) for e in configured], "chains": gas(),
            "providerAddress": services.provider_address(), "now": int(time.time())}


def gas() -> list[dict[str, Any]]:
    """The provider's balance on every served chain (what pays for escrow locks and claims)."""
    from chalicelib.observability.health import gas_alert_balances
    from chalicelib.payments.setup import escrow_addresses

    chain_ids = services.settings().chain_ids
    escrow = escrow_addresses()
    alerts = gas_alert_balances(chain_ids)
    balances: dict[str, str | None] = {}
    if escrow:
        balances = services.payments().gas_balances([c for c in chain_ids if c in escrow])
    rows = []
    for chain in chain_ids:
        wei = balances.get(str(chain))
        rows.append({"chainId": chain, "escrow": escrow.get(chain), "gasBalanceWei": wei,
                     "gasBalance": str(Decimal(int(wei)) / Decimal(10**18)) if wei is not None else None,
                     "alertBelow": str(alerts[chain]),
                     "low": wei is not None and Decimal(int(wei)) / Decimal(10**18) < alerts[chain]})
    return rows


def jobs(params: Any) -> dict[str, Any]:
    configured = sorted(environments())
    if params.environment is not None and params.environment not in configured:
        raise NotFound("Unknown compute environment")
    found, following = listing.page(configured, environment=params.environment, status=params.status,
                                    consumer=services.checksum(params.consumer) if params.consumer else None,
                                    cursor=params.next, limit=params.limit or listing.PAGE)
    return {"jobs": [listing.row(job) for job in found], "next": following}


def stop(job_id: str) -> dict[str, Any]:
    """Stop any job, as its owner's stop does (Batch terminated, status 7, slot back, escrow
    settled for what ran), with the operator named as who stopped it."""
    try:
        job = JobRecord.get(job_id, consistent_read=True)
    except JobRecord.DoesNotExist:
        raise NotFound("Job not found") from None
    except PynamoDBException as error:
        raise ServiceUnavailable(UNAVAILABLE) from error
    annotate(jobId=job.job_id, environment=job.environment)
    if st.is_terminal(int(job.status)):
        raise BusinessError(f"Job has already ended ({job.status_text})")
    page = services.job_service().stop(job.owner, job.job_id, None, reason=STOPPED_BY_OPERATOR)
    return {"job": listing.row(page.jobs[0])}


def drain(environment_id: str, drained: bool) -> dict[str, Any]:
    """Drain: the start transaction refuses new jobs (compute.usage); running jobs go on and
    end as usual. Undrain: starts are accepted again."""
    environment = _environment(environment_id)
    annotate(environment=environment.id)
    item = EnvironmentUsage(environment.id)
    action = EnvironmentUsage.drained_at.set(int(time.time())) if drained else EnvironmentUsage.drained_at.remove()
    try:
        item.update(actions=[action])
    except PynamoDBException as error:
        raise ServiceUnavailable(UNAVAILABLE) from error
    return {"environment": environment_view(environment, _usage([environment.id]))}


def payments(chain_id: int | None, cursor: str | None) -> dict[str, Any]:
    """Per escrow chain: the newest payments (index `by-chain`), with what they locked, claimed
    and released, summed per token over that page."""
    from chalicelib.payments.models import EscrowPayment
    from chalicelib.payments.setup import escrow_addresses

    escrow = escrow_addresses()
    chains = [chain_id] if chain_id is not None else sorted(escrow)
    if chain_id is not None and chain_id not in escrow:
        raise NotFound("No escrow on this chain")
    if not escrow:
        return {"chains": []}
    services.payments()  # binds the payment tables
    answer = []
    for chain in chains:
        start = listing.decode_payment_cursor(cursor, chain) if cursor and chain_id is not None else None
        try:
            results = EscrowPayment.by_chain.query(chain, scan_index_forward=False, limit=RECENT_PAYMENTS,
                                                   page_size=RECENT_PAYMENTS, last_evaluated_key=start)
            items = list(results)
            last = results.last_evaluated_key
        except PynamoDBException as error:
            raise ServiceUnavailable("the payments store did not answer; try again") from error
        totals: dict[str, dict[str, Any]] = defaultdict(lambda: {"claimed": 0, "locked": 0, "claims": 0, "cancels": 0,
                                                                  "failed": 0})
        rows = []
        for payment in items:
            total = totals[payment.token]
            if payment.status == "claimed":
                total["claimed"] += int(payment.claimed or 0)
                total["claims"] += 1
            elif payment.status in ("locked", "locking", "claiming"):
                total["locked"] += int(payment.amount)
            elif payment.status in ("cancelled", "cancelling"):
                total["cancels"] += 1
            elif payment.status in ("settle_failed", "lock_failed"):
                total["failed"] += 1
            rows.append({"jobId": payment.job_id, "status": payment.status, "token": payment.token,
                         "payer": payment.payer, "amount": payment.amount, "claimed": payment.claimed,
                         "billedSeconds": int(payment.billed_seconds) if payment.billed_seconds is not None else None,
                         "reason": payment.reason, "createdAt": int(payment.created_at)})
        answer.append({"chainId": chain, "escrow": escrow[chain],
                       "totals": {token: {k: str(v) if k in ("claimed", "locked") else v for k, v in t.items()}
                                  for token, t in totals.items()},
                       "payments": rows,
                       "next": listing.encode_payment_cursor(last) if last and chain_id is not None else None})
    return {"chains": answer}


def free_tier() -> dict[str, Any]:
    """Per environment with a free tier: its limits and use now, and each consumer's free jobs
    running now and among the environment's newest FREE_WINDOW_JOBS jobs."""
    from chalicelib.node.free import free_key

    configured = [e for e in environments().values() if e.free_tier]
    usage = _usage([free_key(e) for e in configured])
    answer = []
    for environment in configured:
        consumers: dict[str, dict[str, int]] = defaultdict(lambda: {"running": 0, "recent": 0})
        for job in _active(environment.id):
            if any("#free" in key for key in job.usage_keys or ()):
                consumers[job.owner]["running"] += 1
        try:
            recent = list(JobRecord.by_environment.query(environment.id, scan_index_forward=False,
                                                         limit=FREE_WINDOW_JOBS, page_size=FREE_WINDOW_JOBS))
        except PynamoDBException as error:
            raise ServiceUnavailable(UNAVAILABLE) from error
        for job in recent:
            if any("#free" in key for key in job.usage_keys or ()):
                consumers[job.owner]["recent"] += 1
        tier = environment.free_tier
        counter = usage.get(free_key(environment))
        answer.append({"environment": environment.id, "maxJobs": tier.max_jobs,
                       "maxJobsPerConsumer": tier.max_jobs_per_consumer,
                       "inUse": max(0, int(counter.running)) if counter and counter.running else 0,
                       "window": len(recent),
                       "consumers": [{"consumer": who, **counts} for who, counts in sorted(consumers.items())]})
    return {"environments": answer}
