"""One write per job status change. When the change ends a running job, the environment's slot
(currentJobs) is given back in the same DynamoDB transaction, so the counter always equals the
number of jobs that started and have not ended: it cannot leak if a Lambda dies between two
writes, and it cannot be given back twice, because the job's own condition guards both."""
from __future__ import annotations

from typing import Sequence

from pynamodb.exceptions import TransactWriteError, UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from chalicelib.models import EnvironmentUsage, JobRecord


class ConditionFailed(Exception):
    """The job changed since it was read: re-read and decide again."""


def write(job: JobRecord, actions: Sequence[Action], condition: Condition, ends_job: bool) -> None:
    """Apply `actions` to `job` if `condition` holds; with `ends_job`, also free its slot.

    An ending write also takes the job out of the index of active jobs (models.ActiveJobs).
    A transaction returns no attributes, so after an ending write the in-memory `job` is stale:
    callers that show it refresh it (the event handler does not need to)."""
    if not ends_job:
        try:
            job.update(actions=list(actions), condition=condition)
        except UpdateError as error:
            if getattr(error, "cause_response_code", None) == "ConditionalCheckFailedException":
                raise ConditionFailed() from None
            raise
        return
    try:
        with TransactWrite(connection=type(job)._get_connection().connection) as transaction:
            transaction.update(job, actions=[*actions, type(job).active_environment.remove()], condition=condition)
            transaction.update(EnvironmentUsage(job.environment), actions=[EnvironmentUsage.running.add(-1)])
            for key in job.usage_keys or ():
                transaction.update(EnvironmentUsage(key), actions=[EnvironmentUsage.running.add(-1)])
    except TransactWriteError as error:
        if any(getattr(reason, "code", None) == "ConditionalCheckFailed" for reason in error.cancellation_reasons or []):
            raise ConditionFailed() from None
        raise
