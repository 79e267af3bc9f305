"""The publisher's audit log of a dataset (issue 22): every job that used it, newest first,
paged as status is (at most 50 jobs and 1 MB a page, `Next-Page`), with each job's receipt.

**The index.** A start writes one `models.AuditEntry` per input in the transaction that creates
the job record (compute.job_starts), so a job exists exactly when its datasets' logs list it; the
entry's partition is (the owner of the input's data NFT when the job started, the dataset), its
sort key the job's creation time and id. A page is one Query of that partition (newest first, at
most 50) and one BatchGetItem of those jobs' records, whatever the number of jobs; nothing scans
(bench/audit.py).

**After a transfer.** The log answers the dataset's data NFT owner now (ownerOf, read from the
chain at each call), anyone else 401; and it shows the jobs started while that address owned
the NFT: the new owner sees the history from the transfer on, the previous owner nothing any
more. Chosen because the owner at the start is the one whose rules admitted the job (trusted
algorithms, raw code, release) and who was paid for it; a buyer of the NFT did not agree to the
earlier runs and must not read what earlier consumers computed, and the seller no longer speaks
for the data. Keying the partition by that owner also keeps a page one Query for either of them.

An entry whose job record is gone (its TTL passed first) is left out of the page.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Optional

from pynamodb.exceptions import PynamoDBException

from chalicelib.compute.job_status import page_cursor
from chalicelib.compute.paging import MAX_ANSWER_BYTES, PAGE_JOBS, Cursor
from chalicelib.errors import ServiceUnavailable
from chalicelib.models import AuditEntry, JobRecord, audit_position, publisher_document
from chalicelib.owner import release
from chalicelib.owner.access import input_publishers
from chalicelib.receipts.document import release_view, times

UNAVAILABLE = "The audit log is unavailable, try again later"


class AuditLog:
    def __init__(self, entries: type[AuditEntry] = AuditEntry, jobs: type[JobRecord] = JobRecord) -> None:
        self._entries = entries
        self._jobs = jobs

    # -- written by a start (in its transaction) ----------------------------------------------

    def entries(self, job: JobRecord) -> list[AuditEntry]:
        """The job's entries, one per input whose publisher the start knew; they expire with it."""
        expires = job.expires_at if isinstance(job.expires_at, datetime) else None
        return [self._entries(publisher_document(publisher, did), audit_position(int(job.date_created), job.job_id),
                              job_id=job.job_id, document_id=did, consumer=job.owner,
                              date_created=int(job.date_created), expires_at=expires)
                for did, publisher in input_publishers(job).items()]

    # -- read by the publisher ----------------------------------------------------------------

    def page(self, publisher: str, did: str, after: Optional[Cursor] = None,
             limit: int = PAGE_JOBS) -> tuple[list[JobRecord], Optional[Cursor]]:
        """The newest `limit` jobs of `publisher`'s partition of `did` older than `after`, and
        where the log continues (None: no more)."""
        key = publisher_document(publisher, did)
        start = ({"publisherDocument": {"S": key}, "position": {"S": audit_position(after.date_created, after.job_id)}}
                 if after else None)
        try:
            query = self._entries.query(key, scan_index_forward=False, limit=limit, page_size=limit,
                                        last_evaluated_key=start)
            found = list(query)
            more = query.last_evaluated_key is not None
            records = {job.job_id: job for job in self._jobs.batch_get([entry.job_id for entry in found])} if found else {}
        except PynamoDBException as error:
            raise ServiceUnavailable(UNAVAILABLE) from error
        jobs = [records[entry.job_id] for entry in found if entry.job_id in records]
        last = found[-1] if found else None
        return jobs, (Cursor(int(last.date_created), last.job_id) if more and last else None)


def audit_item(job: JobRecord, did: str, receipt: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """One job of the log: who ran what on the dataset, when, how it ended, what came out, and
    its signed receipt (None until the job ends: the times then come from the record)."""
    made = job.provenance if isinstance(job.provenance, Mapping) else {}
    algorithm = made.get("algorithm") or {}
    outputs = [item for item in job.results or [] if isinstance(item, Mapping) and item.get("type", "output") == "output"]
    inner = receipt["receipt"] if receipt else None
    held = release.view(job, release.storage_expiry(job)) if job.release and not inner else None
    return {
        "jobId": job.job_id,
        "documentId": did,
        "consumer": job.owner,
        "algorithm": {"did": algorithm.get("did") or job.algo_did or None, "rawcodeSha256": algorithm.get("rawcodeSha256")},
        "imageDigest": (made.get("image") or {}).get("digest") or None,
        "times": inner["times"] if inner else times(job),
        "status": int(job.status),
        "statusText": job.status_text,
        "outputs": {"count": len(outputs), "bytes": sum(int(item.get("filesize", 0)) for item in outputs)},
        "release": inner["release"] if inner else release_view(job.release, held),
        "receipt": receipt,
    }


def bounded(items: list[dict[str, Any]], jobs: Sequence[JobRecord],
            more: Optional[Cursor]) -> tuple[list[dict[str, Any]], Optional[Cursor]]:
    """The items within MAX_ANSWER_BYTES of JSON; cut early, the log continues after the last kept."""
    size, kept = 2, []
    for position, item in enumerate(items):
        size += len(json.dumps(item)) + 2
        if kept and size > MAX_ANSWER_BYTES:
            return kept, page_cursor(jobs[position - 1])
        kept.append(item)
    return kept, more

