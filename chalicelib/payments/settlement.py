"""The claim or cancel of a job's escrow lock when the job ends: what every write that ends a job
calls (`services.settle_escrow`, the terminal hook of the event handlers, stop and delete) and the
reconciler calls for a lock whose hook was lost.

Billed time is the algorithm's own running time, never Batch's RUNNING (issue 18, point 3: an
ecsProperties job reaches RUNNING only when publish starts), as recorded by what the image
cannot touch, in this order (`run_seconds`):

1. the algorithm container's StartedAt -> FinishedAt as the ECS agent recorded them (Docker's
   own times), which publish, root in its own container, reads from the task metadata endpoint
   and reports in its signed 60 (the record's `algorithmRun`);
2. else from configure's signed 30/40 (`algorithmStartedAt`: the algorithm container starts as
   configure exits) to publish's start (its signed 60, or Batch's RUNNING), or, if publish never ran (the algorithm's image
   ignored our command and the reconciler stopped it at its deadline, or the job was stopped),
   to the job's end; never more than the job's limit (`maxSeconds`);
3. else (jobs started before these times were kept) runningAt -> dateFinished.

`EscrowPayments.claim` then clamps it to [minJobDuration, maxJobDuration]. A job whose algorithm
never ran (31/32: configure failed, so the algorithm container never started; or its image could
not start; or it never got that far) is cancelled: the consumer pays for what ran, and nothing
for a job that could not run.
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
    """The algorithm's billed running time before clamping (see the module docstring); None
    when it never ran."""
    if int(job.status) in NEVER_RAN:
        return None
    run = job.algorithm_run
    if isinstance(run, dict) and run.get("startedAt") is not None and run.get("finishedAt") is not None:
        return max(1.0, float(run["finishedAt"]) - float(run["startedAt"]))
    if job.algorithm_started_at:
        end = job.publish_started_at or job.date_finished or job.updated_at or job.algorithm_started_at
        seconds = float(end) - float(job.algorithm_started_at)
        return max(1.0, min(seconds, float(job.max_seconds)) if job.max_seconds else seconds)
    if not job.running_at:
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
