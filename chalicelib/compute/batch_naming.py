"""How this provider's Batch jobs are named, tagged and stopped: what the dispatcher writes and
what the event handlers and the reconciler recognise a job by (events carry the name, the tags
and TerminateJob's reason, never our record), and the algorithm container's log stream. Job ids
are limited to what the runner accepts, since they end up in names, tags, S3 keys and
environment variables.
"""
from __future__ import annotations

import re

CONFIGURE, ALGORITHM, PUBLISH = "configure", "algorithm", "publish"
DEFINITION_PREFIX = "c2d-algo-"
JOB_NAME_PREFIX = "c2d-"
JOB_ID_TAG = "c2d:jobId"
ENVIRONMENT_TAG = "c2d:environment"
# TerminateJob's reason becomes the job's statusReason; the prefix tells the event handler that
# the owner stopped the job (status 7) rather than it failing, or that the provider stopped it at
# its deadline (41, out of time: compute.deadlines).
STOP_REASON_PREFIX = "c2d-stop: "
DEADLINE_REASON_PREFIX = "c2d-deadline: "
LOG_STREAM_PREFIX = "c2d"  # the algorithm container's awslogs-stream-prefix
JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # what the runner accepts


def job_name(job_id: str) -> str:
    """Batch job names allow [A-Za-z0-9_-]; the exact id travels in the c2d:jobId tag."""
    return (JOB_NAME_PREFIX + re.sub(r"[^A-Za-z0-9_-]", "_", job_id))[:128]


def stop_reason(reason: str) -> str:
    return (STOP_REASON_PREFIX + (reason or "Job stopped"))[:255]


def is_stop_reason(status_reason: object) -> bool:
    return isinstance(status_reason, str) and status_reason.startswith(STOP_REASON_PREFIX)


def deadline_reason(reason: str) -> str:
    return (DEADLINE_REASON_PREFIX + reason)[:255]


def is_deadline_reason(status_reason: object) -> bool:
    return isinstance(status_reason, str) and status_reason.startswith(DEADLINE_REASON_PREFIX)


_TASK_ARN = re.compile(r"^arn:aws[a-z-]*:ecs:[a-z0-9-]+:\d{12}:task/(?:[A-Za-z0-9_-]{1,255}/)?([A-Za-z0-9]{1,64})$")


def algorithm_log_stream(task_arn: object) -> str | None:
    """The algorithm container's CloudWatch stream, `<prefix>/<container name>/<ECS task id>`
    (the awslogs driver's naming with awslogs-stream-prefix), from the task's ARN
    (`arn:...:task/<cluster>/<task id>`, or the older `task/<task id>`); None for anything else."""
    found = _TASK_ARN.match(task_arn) if isinstance(task_arn, str) else None
    return f"{LOG_STREAM_PREFIX}/{ALGORITHM}/{found.group(1)}" if found else None
