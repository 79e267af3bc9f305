"""The claim or cancel of a job's escrow lock when the job ends: what every write that ends a job
calls (`services.settle_escrow`, the terminal hook of the event handlers, stop and delete) and the
reconciler calls for a lock whose hook was lost.

Billed time is the job's run time, runningAt -> dateFinished (from the job's containers starting,
so configure's and publish's seconds are included), which `EscrowPayments.claim` clamps to
[minJobDuration, maxJobDuration]. A job whose algorithm never ran (31/32, or never reached 40) is
cancelled: the consumer pays for what ran, and nothing for a job that could not run.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from chalicelib.compute import status as st
from chalicelib.models import JobRecord
from chalicelib.observability.context import record
from chalicelib.observability.requests import known_environment

if TYPE_CHECKING:
    from chalicelib.payments.service import EscrowPayments

log = logging.getLogger(__name__)

NEVER_RAN = (st.DATA_FAILED, st.ALGORITHM_PROVISIONING_FAILED)


def run_seconds(job: JobRecord) -> float | None:
    """The job's billed run time before clamping: runningAt -> dateFinished; None when its
    algorithm never ran (configure failed, or the job never reached 40)."""
    if int(job.status) in NEVER_RAN or not job.running_at:
        return None
    end = job.date_finished or job.updated_at or job.running_at
    return max(1.0, float(end) - float(job.running_at))


def settle_job(payments: "EscrowPayments", job: JobRecord) -> None:
    """The terminal write's hook: claim what the job ran, or cancel (a job without escrow
    payment: one read, nothing else)."""
    settled = payments.settle(job.job_id, run_seconds(job))
    if settled is not None:
        log.info("job %s: escrow %s (claimed %s of %s)", job.job_id, settled.status, settled.claimed, settled.amount)
        kind = {"claiming": "EscrowClaims", "claimed": "EscrowClaims", "cancelling": "EscrowCancels",
                "cancelled": "EscrowCancels"}.get(settled.status)
        if kind:
            record(kind, environment=known_environment(job.environment))
