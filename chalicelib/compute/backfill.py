"""One-off upgrade of job records written before issue 12: give each its `ownerDocument` key
(the by-owner-document index that documentId filters read) and its `expiresAt` (TTL), which
older records lack, so they neither vanish from filtered listings nor stay forever.

    python -m chalicelib.compute.backfill     # with the stage's environment (python -m infra env)

A scan of the jobs table, then one conditional update per record missing something: idempotent,
safe beside the running API (a record that got the attribute meanwhile is left as it is).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Mapping

from pynamodb.exceptions import UpdateError

from chalicelib.compute.environments import Environment
from chalicelib.models import JobRecord, owner_document


def expiry(job: JobRecord, environments: Mapping[str, Environment], retention: int) -> datetime:
    """What compute.jobs sets at creation; a record of an environment no longer configured
    keeps its data as long as the longest-lived environment would."""
    known = environments.get(job.environment)
    others = environments.values()
    duration = known.max_job_duration if known else max((e.max_job_duration for e in others), default=86400)
    storage = known.storage_expiry if known else max((e.storage_expiry for e in others), default=604800)
    return datetime.fromtimestamp(int(job.date_created) + duration + storage + retention, timezone.utc)


def backfill(environments: Mapping[str, Environment], retention: int) -> int:
    """Set what is missing on every job record; return how many records were updated."""
    updated = 0
    for job in JobRecord.scan():
        actions, condition = [], None
        if job.owner_document is None:
            actions.append(JobRecord.owner_document.set(owner_document(job.owner, job.document_id)))
            condition = JobRecord.owner_document.does_not_exist()
        if job.expires_at is None:
            actions.append(JobRecord.expires_at.set(expiry(job, environments, retention)))
            missing = JobRecord.expires_at.does_not_exist()
            condition = missing if condition is None else condition & missing
        if not actions:
            continue
        try:
            job.update(actions=actions, condition=condition)
            updated += 1
        except UpdateError as error:
            if getattr(error, "cause_response_code", None) != "ConditionalCheckFailedException":
                raise
    return updated


def main() -> None:
    from chalicelib import services
    from chalicelib.compute.environments import environments

    current = services.settings()
    print(f"updated {backfill(environments(), current.job_record_retention)} job records")


if __name__ == "__main__":
    main()
