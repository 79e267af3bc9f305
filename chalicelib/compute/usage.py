"""currentJobs per environment: a counter changed only inside the transactions that start a job
(conditionally: it never exceeds maxJobs) and that end one (compute.transitions), so reading it
is one BatchGetItem instead of a scan of the jobs table."""
from __future__ import annotations

from typing import Iterable

from pynamodb.exceptions import PynamoDBException
from pynamodb.expressions.update import Action
from pynamodb.expressions.condition import Condition

from chalicelib.errors import ServiceUnavailable
from chalicelib.models import EnvironmentUsage


class UsageCounter:
    def __init__(self, model: type[EnvironmentUsage] = EnvironmentUsage):
        self._model = model

    def current(self, environment_ids: Iterable[str]) -> dict[str, int]:
        ids = list(environment_ids)
        counts = {environment_id: 0 for environment_id in ids}
        try:
            for record in self._model.batch_get(ids):
                counts[record.environment] = max(0, int(record.running))
        except PynamoDBException as error:
            raise ServiceUnavailable("Job store is unavailable, try again later") from error
        return counts

    def reserve(self, max_jobs: int) -> tuple[list[Action], Condition]:
        """The update and condition that take one slot, for use inside the start transaction;
        an environment the operator drains (drainedAt set) gives none."""
        running = self._model.running
        return [running.add(1)], (running.does_not_exist() | (running < max_jobs)) & self._model.drained_at.does_not_exist()

    def drained(self, environment_id: str) -> bool:
        """Whether the operator drains the environment (read after a refused start, to say why)."""
        try:
            return self._model.get(environment_id, consistent_read=True).drained_at is not None
        except self._model.DoesNotExist:
            return False
        except PynamoDBException as error:
            raise ServiceUnavailable("Job store is unavailable, try again later") from error
