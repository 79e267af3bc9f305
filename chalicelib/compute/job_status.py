"""What a consumer is told about its jobs: the status object of DESIGN §3.6 (both protocols show
it; Ocean Node's status without URLs), and pages of them that fit one answer (compute.paging).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from chalicelib.compute import status as st
from chalicelib.compute.event_signals import OOM_REASON
from chalicelib.compute.paging import MAX_ANSWER_BYTES, Cursor
from chalicelib.models import JobRecord
from chalicelib.owner import release
from chalicelib.results import JobObjects

# What status_object reads of a record (DynamoDB names), for listings.
STATUS_ATTRIBUTES = ["jobId", "owner", "documentId", "dateCreated", "dateFinished", "status", "statusText", "results",
                     "inputDIDs", "algoDID", "agreementId", "environment", "terminationDetails", "metadata",
                     "release"]


@dataclass(frozen=True)
class JobPage:
    """Some of the owner's jobs, newest first; `next` continues with older ones (None: no more)."""

    jobs: list[JobRecord]
    next: Cursor | None = None


def page_cursor(job: JobRecord) -> Cursor:
    return Cursor(int(job.date_created), job.job_id)


def termination_details(stored: dict[str, Any]) -> dict[str, Any]:
    """Ocean Node's `{OOMKilled, exitCode}` and our `reason`: records written before OOMKilled
    was kept say it from their reason (compute.event_planning keeps the error class)."""
    reason = stored.get("reason") or ""
    oom = stored.get("OOMKilled")
    return {"OOMKilled": bool(oom) if oom is not None else reason.startswith(OOM_REASON),
            "exitCode": stored.get("exitCode"), "reason": reason}


def status_object(job: JobRecord, objects: JobObjects | None, url_bytes: int = MAX_ANSWER_BYTES) -> dict[str, Any]:
    """The status object of DESIGN §3.6; presigned URLs only for an authenticated owner, and
    only while they fit in `url_bytes` (a job with thousands of outputs: the rest through
    computeResult by index, which `results` lists in full)."""
    results = [
        {"filename": item.get("filename", ""), "filesize": item.get("filesize", 0), "type": item.get("type", "output"),
         "index": int(item.get("index", position))}
        for position, item in enumerate(job.results or [])
    ]
    body: dict[str, Any] = {
        "owner": job.owner,
        "documentId": job.document_id,
        "did": job.document_id,
        "jobId": job.job_id,
        "dateCreated": str(int(job.date_created)),
        "dateFinished": str(int(job.date_finished)) if job.date_finished else None,
        "status": int(job.status),
        "statusText": job.status_text,
        "algorithmLogUrl": None,
        "resultsUrls": [],
        "resultsDid": "",
        "results": results,
        "inputDID": list(job.input_dids or []),
        "algoDID": job.algo_did,
        "agreementId": job.agreement_id,
        "environment": job.environment,
    }
    if job.metadata:
        body["metadata"] = job.metadata
    if job.termination_details:
        body["terminationDetails"] = termination_details(job.termination_details.as_dict())
    held = release.view(job, release.storage_expiry(job)) if job.release else None
    if held is not None:
        body["release"] = held  # results held for the data owner: no URL until released
    if objects is not None and int(job.status) != st.DELETED and (held is None or held["state"] == release.RELEASED):
        room = url_bytes - len(json.dumps(body))
        for position, item in enumerate(job.results or []):
            url = objects.presigned_download(item["key"], item.get("filename", "result"), item.get("versionId"))
            room -= len(url) + 4
            if room < 0:
                break
            if item.get("type") == "algorithmLog":
                body["algorithmLogUrl"] = url
            elif item.get("type", "output") == "output":
                body["resultsUrls"].append(url)
    return body


def status_page(page: JobPage, objects: JobObjects | None) -> tuple[list[dict[str, Any]], Cursor | None]:
    """The page's status objects within MAX_ANSWER_BYTES of JSON, and where the answer
    continues: a page whose jobs carry long results lists ends early, at the last job that fits.
    Presigned URLs only with `objects` (an authenticated owner)."""
    answer: list[dict[str, Any]] = []
    size = 2
    for position, job in enumerate(page.jobs):
        body = status_object(job, objects, MAX_ANSWER_BYTES - size)
        size += len(json.dumps(body)) + 2
        if answer and size > MAX_ANSWER_BYTES:
            return answer, page_cursor(page.jobs[position - 1])
        answer.append(body)
    return answer, page.next
