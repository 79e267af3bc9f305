"""The algorithm's time limit, enforced from outside its task (issue 18, point 3).

Inside the algorithm container, the script that is its PID 1 (compute.algorithm_script) stops
the algorithm at its maxJobDuration. But an image's ENTRYPOINT runs before our command and can
ignore it, and nothing else in the task bounds it: a multi-container job stays STARTING until
publish starts (a task's known status is the lowest of its containers'), so Batch's attempt
timeout, which counts from RUNNING, bounds publish only. So the reconciler, every minute, asks
this module which jobs' algorithms outlived their deadline and terminates their Batch jobs with
a reason the event handler reads as "ran out of time" (41).

A job's deadline, while its algorithm may still run (no `publish_started_at`: Batch's RUNNING
and publish's 60 both mean the algorithm container exited, since publish depends on it):

- from configure's signed 30/40 (`algorithm_started_at`: the algorithm container starts as
  configure exits): that time + the job's limit + DEADLINE_MARGIN_SECONDS;
- if that event was lost, from when Batch first said STARTING (`starting_at`, configure's start):
  that time + configure's allowance (STAGE_MARGIN_SECONDS) + the limit + the margin;
- neither known (still RUNNABLE, or every event lost until the reconciler's DescribeJobs notes
  STARTING): no deadline yet.

DEADLINE_MARGIN_SECONDS covers the algorithm image's pull, which the ECS agent starts only once
configure succeeded (IMAGE_PULL_ALLOWANCE_SECONDS: an honest algorithm of a large image must not
be cut short before its own limit, which its script counts from its container's start), the
script's own stop (SIGTERM, 10 s, SIGKILL), the minute between reconciler runs and the ECS
agent's stop of the containers (its stopTimeout, 30 s by default). Billing never counts past the
limit (payments.settlement), so what a hostile image gains is at most the margin's compute, unbilled.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import PynamoDBException

from chalicelib.compute import status as st
from chalicelib.compute.algorithm_script import KILL_GRACE_SECONDS
from chalicelib.compute.batch_naming import deadline_reason
from chalicelib.compute.job_placement import MIN_ATTEMPT_SECONDS, STAGE_MARGIN_SECONDS
from chalicelib.models import JobRecord

log = logging.getLogger(__name__)

RECONCILE_PERIOD_SECONDS = 60  # app.py's schedule of the reconciler
AGENT_STOP_SECONDS = 30  # the ECS agent's default stopTimeout between SIGTERM and SIGKILL
IMAGE_PULL_ALLOWANCE_SECONDS = 600  # the algorithm's image pulled after configure exits
STOP_MARGIN_SECONDS = KILL_GRACE_SECONDS + 5 + RECONCILE_PERIOD_SECONDS + AGENT_STOP_SECONDS + 15  # 120
DEADLINE_MARGIN_SECONDS = IMAGE_PULL_ALLOWANCE_SECONDS + STOP_MARGIN_SECONDS  # 720
OUT_OF_TIME = "the algorithm outlived maxJobDuration"


def job_limit(job: JobRecord, environment_limit: int | None) -> int:
    """The algorithm's time: the record's (set at start), else its environment's maxJobDuration."""
    if job.max_seconds:
        return int(job.max_seconds)
    return max(MIN_ATTEMPT_SECONDS, int(environment_limit or 0))


def algorithm_deadline(job: JobRecord, environment_limit: int | None) -> int | None:
    """When the job's Batch job must be stopped if its algorithm still runs; None when its
    algorithm cannot be running any more, or its start is not known yet."""
    status = int(job.status)
    if (st.is_terminal(status) or not job.batch_job_id or job.publish_started_at
            or st.rank(status) >= st.rank(st.PUBLISHING)):
        return None
    limit = job_limit(job, environment_limit)
    if job.algorithm_started_at:
        return int(job.algorithm_started_at) + limit + DEADLINE_MARGIN_SECONDS
    if job.starting_at:
        return int(job.starting_at) + STAGE_MARGIN_SECONDS + limit + DEADLINE_MARGIN_SECONDS
    return None


@dataclass
class Enforced:
    """What one pass did: the jobs whose Batch jobs were terminated, and failures."""

    terminated: list[str] = field(default_factory=list)
    errors: int = 0


class Deadlines:
    """Terminates the Batch job of every job whose algorithm outlived its deadline."""

    def __init__(self, batch: Any, limits: Mapping[str, int], jobs: type[JobRecord] = JobRecord,
                 clock: Callable[[], float] = time.time) -> None:
        """`limits`: environment id -> its maxJobDuration (for records made before they kept
        their own limit); `batch`: a boto3 Batch client."""
        self._batch = batch
        self._limits = dict(limits)
        self._jobs = jobs
        self._clock = clock

    def enforce(self) -> Enforced:
        done = Enforced()
        now = int(self._clock())
        for job in self._active():
            deadline = algorithm_deadline(job, self._limits.get(job.environment))
            if deadline is None or now < deadline:
                continue
            try:
                self._batch.terminate_job(jobId=job.batch_job_id, reason=deadline_reason(OUT_OF_TIME))
            except (BotoCoreError, ClientError) as error:
                code = error.response.get("Error", {}).get("Code") if isinstance(error, ClientError) else type(error).__name__
                log.error("job %s: could not stop it at its deadline (%s)", job.job_id, code)
                done.errors += 1
                continue
            log.warning("job %s: its algorithm outlived its deadline (%s s past); Batch job %s terminated",
                        job.job_id, now - deadline, job.batch_job_id)
            done.terminated.append(job.job_id)
        return done

    def _active(self) -> Iterable[JobRecord]:
        """Every job that has not ended, from the sparse index of active jobs (no scan)."""
        for environment in sorted(self._limits):
            try:
                yield from self._jobs.active.query(environment)
            except PynamoDBException as error:
                log.error("deadlines: active jobs of %s unreadable (%s)", environment, type(error).__name__)
