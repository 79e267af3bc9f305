"""Job listings are bounded (issue 12): newest first, one page of at most PAGE_JOBS jobs and
MAX_ANSWER_BYTES of JSON, a Next-Page cursor to the older ones, download URLs only when one job
is asked for, and a documentId filter that reads only the caller's jobs on that dataset."""
from __future__ import annotations

import base64
import contextlib
import json
import time
import urllib.parse
from typing import Any, Iterator

import pytest
from eth_account import Account

from chalicelib.compute.paging import MAX_ANSWER_BYTES, NEXT_HEADER, PAGE_JOBS
from signing import sign

DATASET = "did:op:" + "ab" * 32
OTHER_DATASET = "did:op:" + "cd" * 32
OWNER = Account.from_key("0x" + "11" * 32)
OTHER = Account.from_key("0x" + "22" * 32)


def _save_jobs(owner: str, count: int, document_id: str = DATASET, start: int = 1_700_000_000, results: int = 1,
               prefix: str = "job") -> list[str]:
    from chalicelib.models import JobRecord, owner_document

    ids = []
    with JobRecord.batch_write() as batch:
        for number in range(count):
            job_id = f"{prefix}{owner[2:8].lower()}{number:06d}"
            ids.append(job_id)
            outputs = [{"filename": f"out-{index:05d}.txt", "filesize": 1, "type": "output",
                        "key": f"jobs/{job_id}/outputs/out-{index:05d}.txt"} for index in range(results)]
            batch.save(JobRecord(job_id, owner=owner, document_id=document_id, date_created=start + number,
                                 date_finished=start + number + 1, status=70, status_text="Job completed",
                                 environment="ocean-c2d-cpu", chain_id=8996, results=outputs,
                                 owner_document=owner_document(owner, document_id)))
    return ids


def _query(account: Any, job_id: str = "", document_id: str = "", signed: bool = True, **extra: str) -> str:
    params: dict[str, Any] = {"consumerAddress": account.address, **extra}
    if signed:
        nonce = time.time_ns()
        params.update(nonce=nonce, signature=sign("0x" + bytes(account.key).hex(),
                                                  account.address + job_id + document_id + str(nonce)))
    if job_id:
        params["jobId"] = job_id
    if document_id:
        params["documentId"] = document_id
    return "/api/services/compute?" + urllib.parse.urlencode(params)


def _all_pages(client: Any, account: Any, **kwargs: Any) -> list[list[dict]]:
    pages, cursor = [], None
    while True:
        extra = {"next": cursor} if cursor else {}
        response = client.http.get(_query(account, **kwargs, **extra))
        assert response.status_code == 200, response.body
        assert len(response.body) <= MAX_ANSWER_BYTES
        pages.append(json.loads(response.body))
        cursor = response.headers.get(NEXT_HEADER)
        if not cursor:
            return pages


@contextlib.contextmanager
def dynamodb_calls() -> Iterator[list[tuple[str, dict, dict]]]:
    """Every DynamoDB call with its parameters and answer (whatever client makes it)."""
    from botocore.client import BaseClient

    calls: list[tuple[str, dict, dict]] = []
    original = BaseClient._make_api_call

    def recorded(self: Any, operation: str, params: Any) -> Any:
        answer = original(self, operation, params)
        if self.meta.service_model.service_name == "dynamodb":
            calls.append((operation, params, answer))
        return answer

    BaseClient._make_api_call = recorded
    try:
        yield calls
    finally:
        BaseClient._make_api_call = original


def test_newest_first_one_page_at_a_time_until_every_job_was_listed(client):
    ids = _save_jobs(OWNER.address, PAGE_JOBS * 2 + 7)
    _save_jobs(OTHER.address, 5)
    pages = _all_pages(client, OWNER)
    assert [len(page) for page in pages] == [PAGE_JOBS, PAGE_JOBS, 7]
    listed = [job["jobId"] for page in pages for job in page]
    assert listed == list(reversed(ids)), "newest first, each job exactly once, only the caller's"
    assert all(job["resultsUrls"] == [] and job["algorithmLogUrl"] is None for page in pages for job in page)
    assert pages[0][0]["results"][0]["filename"] == "out-00000.txt", "results are listed, only URLs are left out"


def test_the_unsigned_view_is_paged_too(client):
    _save_jobs(OWNER.address, PAGE_JOBS + 1)
    pages = _all_pages(client, OWNER, signed=False)
    assert [len(page) for page in pages] == [PAGE_JOBS, 1]


def test_one_job_asked_for_gets_its_urls(client):
    (job_id,) = _save_jobs(OWNER.address, 1, results=3)
    (job,) = json.loads(client.http.get(_query(OWNER, job_id)).body)
    assert len(job["resultsUrls"]) == 3 and all(url.startswith("https://") for url in job["resultsUrls"])


def test_a_page_never_passes_one_megabyte(client):
    # ~2,000 outputs per job: a few jobs fill a megabyte long before a page of PAGE_JOBS does
    ids = _save_jobs(OWNER.address, 12, results=2000)
    pages = _all_pages(client, OWNER)
    assert len(pages) > 1 and all(len(json.dumps(page)) <= MAX_ANSWER_BYTES for page in pages)
    assert [job["jobId"] for page in pages for job in page] == list(reversed(ids))


def test_one_job_with_thousands_of_outputs_stays_under_a_megabyte_with_urls(client):
    (job_id,) = _save_jobs(OWNER.address, 1, results=2000)
    response = client.http.get(_query(OWNER, job_id))
    (job,) = json.loads(response.body)
    assert len(response.body) <= MAX_ANSWER_BYTES
    assert len(job["results"]) == 2000 and 0 < len(job["resultsUrls"]) < 2000, "the rest through computeResult"


@pytest.mark.parametrize("cursor", ["not-a-cursor", "W10", base64.urlsafe_b64encode(b'[1,"a b"]').decode(),
                                    base64.urlsafe_b64encode(b'[true,"abc"]').decode(), "x" * 500, "Wz\u00e9"])
def test_a_cursor_the_provider_did_not_give_is_a_400(client, cursor):
    response = client.http.get(_query(OWNER, next=cursor))
    assert response.status_code == 400 and "next" in json.loads(response.body)["errors"]


def test_a_cursor_moves_only_within_the_callers_own_jobs(client):
    _save_jobs(OTHER.address, 3)
    _save_jobs(OWNER.address, PAGE_JOBS + 1)
    first = client.http.get(_query(OTHER))
    assert first.headers.get(NEXT_HEADER) is None
    owners_cursor = client.http.get(_query(OWNER)).headers[NEXT_HEADER]
    # another owner's cursor is just a position in time: it lists the caller's own older jobs
    listed = json.loads(client.http.get(_query(OTHER, next=owners_cursor)).body)
    assert listed and {job["owner"] for job in listed} == {OTHER.address}


def test_document_filter_reads_only_the_callers_jobs_on_that_dataset(client):
    mine = _save_jobs(OWNER.address, 3)
    _save_jobs(OWNER.address, 4, document_id=OTHER_DATASET, prefix="elsewhere")
    _save_jobs(OTHER.address, 40)  # another owner's jobs of the same dataset
    with dynamodb_calls() as calls:
        jobs = json.loads(client.http.get(_query(OWNER, document_id=DATASET)).body)
    assert [job["jobId"] for job in jobs] == list(reversed(mine))
    queries = [(params, answer) for operation, params, answer in calls if operation in ("Query", "Scan")]
    assert len(queries) == 1
    params, answer = queries[0]
    assert params["IndexName"] == "by-owner-document" and answer["ScannedCount"] == 3, "nothing else was read"
    unsigned = json.loads(client.http.get(_query(OWNER, document_id=DATASET, signed=False)).body)
    assert [job["jobId"] for job in unsigned] == list(reversed(mine))


def test_delete_without_a_job_id_acts_on_one_page(client):
    _save_jobs(OWNER.address, PAGE_JOBS + 2)
    nonce = time.time_ns()
    query = urllib.parse.urlencode({"consumerAddress": OWNER.address, "nonce": nonce,
                                    "signature": sign("0x" + bytes(OWNER.key).hex(), OWNER.address + str(nonce))})
    response = client.http.delete("/api/services/compute?" + query)
    assert response.status_code == 200 and len(json.loads(response.body)) == PAGE_JOBS
    assert response.headers.get(NEXT_HEADER)
    statuses = [job["status"] for page in _all_pages(client, OWNER) for job in page]
    assert statuses.count(8) == PAGE_JOBS and statuses[-2:] == [70, 70], "the newest page went, the rest waits"


def test_records_from_before_the_index_are_backfilled(client):
    """Records written before by-owner-document existed lack its key and their expiry."""
    from chalicelib.compute.backfill import backfill
    from chalicelib.compute.environments import environments
    from chalicelib.models import JobRecord

    ids = _save_jobs(OWNER.address, 3)
    for job in JobRecord.scan():
        job.update(actions=[JobRecord.owner_document.remove(), JobRecord.expires_at.remove()])
    assert json.loads(client.http.get(_query(OWNER, document_id=DATASET)).body) == []
    configured = environments()
    assert backfill(configured, 100) == 3 and backfill(configured, 100) == 0, "idempotent"
    jobs = json.loads(client.http.get(_query(OWNER, document_id=DATASET)).body)
    assert [job["jobId"] for job in jobs] == list(reversed(ids))
    record = JobRecord.get(ids[0])
    environment = configured["ocean-c2d-cpu"]
    assert int(record.expires_at.timestamp()) == (int(record.date_created) + environment.max_job_duration
                                                  + environment.storage_expiry + 100)
