"""Metrics of a job's life, per environment, recorded by the writes that move it (the event
handlers' and the stop/delete of JobService): QueueWaitSeconds when it first runs (creation to
its containers starting), JobsEnded by status when it ends, AlgorithmSeconds for a job that ran
(its billed time: runningAt to dateFinished)."""
from __future__ import annotations

import time
from typing import Any

from chalicelib.compute import status as st
from chalicelib.observability.context import annotate, record
from chalicelib.observability.requests import known_environment


_UNSET: Any = object()


def moved(job: Any, before: int, after: int, *, started_at: float | None = None,
          finished_at: float | None = None, running_before: Any = _UNSET) -> None:
    """`before` -> `after` written for `job`; `running_before`: its runningAt before the write
    (default: the record's, for writes that never set it)."""
    now = time.time()
    environment = known_environment(getattr(job, "environment", None))
    annotate(jobId=job.job_id, environment=getattr(job, "environment", None), jobStatus=after)
    if running_before is _UNSET:
        running_before = getattr(job, "running_at", None)
    runs = st.rank(st.RUNNING) <= st.rank(after) <= st.rank(st.PUBLISHING)
    if runs and not running_before and st.rank(before) < st.rank(st.RUNNING):
        started = started_at or now
        record("QueueWaitSeconds", max(0.0, float(started) - float(job.date_created)), "Seconds", environment=environment)
    if st.is_terminal(after) and not st.is_terminal(before):
        record("JobsEnded", environment=environment, status=str(after))
        began = running_before or started_at
        if began and after not in (st.DATA_FAILED, st.ALGORITHM_PROVISIONING_FAILED):
            end = finished_at or getattr(job, "date_finished", None) or now
            record("AlgorithmSeconds", max(0.0, float(end) - float(began)), "Seconds", environment=environment)
