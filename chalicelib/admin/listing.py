"""The operator's job listing: every job, newest first, filtered by environment, status or
consumer, in pages of at most `limit` jobs, each page at most one DynamoDB query per source
(never a scan):

| filter | source (index, partition) |
|---|---|
| consumer | `by-owner` (the consumer) |
| status `active` or a running code | `active-by-update` (each environment): only jobs not ended |
| anything else | `by-environment` (each environment), a status filter as a FilterExpression |

Without an environment, each configured environment is one source and their pages are merged
by the index's sort key; the cursor (`next`) holds where each source stopped. A query reads at
most `limit` items, so a page with a filter can hold fewer jobs than `limit` and still have a
`next`: that is the price of a bounded read.
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Iterable

from pynamodb.exceptions import PynamoDBException

from chalicelib.compute import status as st
from chalicelib.errors import ServiceUnavailable, ValidationError
from chalicelib.models import JobRecord

PAGE = 50
FAILED = (st.DATA_FAILED, st.ALGORITHM_PROVISIONING_FAILED, st.ALGORITHM_FAILED, st.PUBLISH_FAILED)
TERMINAL = tuple(sorted(st.TERMINAL))


@dataclass(frozen=True)
class Source:
    """One query: an index, its partition, and its sort key (DynamoDB names)."""

    index: str
    hash_attribute: str
    hash_value: str
    range_attribute: str


def sources(environments: Iterable[str], status: str | None, consumer: str | None) -> list[Source]:
    if consumer:
        return [Source("by-owner", "owner", consumer, "dateCreated")]
    active = status == "active" or (status is not None and status.isdigit() and not st.is_terminal(int(status)))
    if active:
        return [Source("active-by-update", "activeEnvironment", env, "updatedAt") for env in environments]
    return [Source("by-environment", "environment", env, "dateCreated") for env in environments]


def status_condition(status: str | None) -> Any:
    if status is None or status == "active":
        return None
    if status == "failed":
        return JobRecord.status.is_in(*FAILED)
    if status == "ended":
        return JobRecord.status.is_in(*TERMINAL)
    return JobRecord.status == int(status)


def page(environments: list[str], *, environment: str | None = None, status: str | None = None,
         consumer: str | None = None, cursor: str | None = None, limit: int = PAGE,
         model: type[JobRecord] = JobRecord) -> tuple[list[JobRecord], str | None]:
    """One page of jobs and the cursor of the next (None: no more)."""
    chosen = [environment] if environment else environments
    queried = sources(chosen, status, consumer)
    positions = decode(cursor, queried)
    condition = status_condition(status)
    if consumer and environment:
        condition = (model.environment == environment) if condition is None else condition & (model.environment == environment)
    fetched: list[tuple[Source, dict[str, Any]]] = []
    ends: dict[Source, Any] = {}
    connection = model._get_connection()
    for source in queried:
        start = positions.get(source, "start")
        if start is None:
            continue  # this source is done
        try:
            answer = connection.query(source.hash_value, filter_condition=condition, index_name=source.index,
                                      exclusive_start_key=None if start == "start" else start,
                                      scan_index_forward=False, limit=limit)
        except PynamoDBException as error:
            raise ServiceUnavailable("Job store is unavailable, try again later") from error
        fetched += [(source, item) for item in answer.get("Items", [])]
        ends[source] = answer.get("LastEvaluatedKey")
    fetched.sort(key=lambda pair: _sort_value(pair[0], pair[1]), reverse=True)
    taken = fetched[:limit]
    following: dict[Source, Any] = {}
    for source in queried:
        start = positions.get(source, "start")
        if start is None or source not in ends:
            following[source] = None
            continue
        mine = [item for owner, item in taken if owner == source]
        all_mine = [item for owner, item in fetched if owner == source]
        if len(mine) == len(all_mine):  # everything it read is shown: go on where its query stopped
            following[source] = ends[source]
        else:
            following[source] = _key(source, mine[-1]) if mine else start
    jobs = [model.from_raw_data(item) for _, item in taken]
    more = any(value is not None for value in following.values())
    return jobs, encode(following) if more else None


def _sort_value(source: Source, item: dict[str, Any]) -> tuple[int, str]:
    return int(item.get(source.range_attribute, {}).get("N", "0")), item.get("jobId", {}).get("S", "")


def _key(source: Source, item: dict[str, Any]) -> dict[str, Any]:
    return {name: item[name] for name in ("jobId", source.hash_attribute, source.range_attribute)}


def encode(positions: dict[Source, Any]) -> str:
    raw = json.dumps([[source.hash_value, position] for source, position in positions.items()], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(cursor: str | None, queried: list[Source]) -> dict[Source, Any]:
    """Where each source stopped; a 400 on `next` for anything this listing did not give."""
    if not cursor:
        return {}
    refused = ValidationError.field("next", "not a cursor of this listing (give the same filters as its first page)")
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        by_partition = {source.hash_value: source for source in queried}
        positions: dict[Source, Any] = {}
        for partition, position in value:
            source = by_partition[partition]
            if position is not None and position != "start":
                expected = {"jobId", source.hash_attribute, source.range_attribute}
                if set(position) != expected or position[source.hash_attribute] != {"S": source.hash_value}:
                    raise ValueError
                if not all(isinstance(v, dict) and len(v) == 1 and isinstance(next(iter(v.values())), str)
                           and len(next(iter(v.values()))) <= 256 for v in position.values()):
                    raise ValueError
            positions[source] = position
        if len(positions) != len(value):
            raise ValueError
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeDecodeError):
        raise refused from None
    return positions


def row(job: JobRecord) -> dict[str, Any]:
    """What the console shows of a job (the operator sees every field a consumer is shown, and
    who the consumer is, never the inputs manifest)."""
    details = job.termination_details.as_dict() if job.termination_details else {}
    return {
        "jobId": job.job_id, "owner": job.owner, "environment": job.environment, "chainId": int(job.chain_id),
        "status": int(job.status), "statusText": job.status_text, "documentId": job.document_id,
        "algoDID": job.algo_did, "agreementId": job.agreement_id, "dateCreated": int(job.date_created),
        "dateFinished": int(job.date_finished) if job.date_finished else None,
        "runningAt": int(job.running_at) if job.running_at else None,
        "updatedAt": int(job.updated_at) if job.updated_at else None,
        "free": any("#free" in key for key in job.usage_keys or ()),
        "reason": details.get("reason"), "exitCode": details.get("exitCode"),
    }


def encode_payment_cursor(key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_payment_cursor(cursor: str, chain_id: int) -> dict[str, Any]:
    """The by-chain index's ExclusiveStartKey, checked to be one of this chain's."""
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if set(key) != {"jobId", "chainId", "createdAt"} or key["chainId"] != {"N": str(chain_id)}:
            raise ValueError
        if not isinstance(key["jobId"].get("S"), str) or not isinstance(key["createdAt"].get("N"), str):
            raise ValueError
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error, UnicodeDecodeError):
        raise ValidationError.field("next", "not a cursor of this listing") from None
    return key
