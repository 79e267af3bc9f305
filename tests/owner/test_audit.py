"""The publisher's audit log (issue 22): GET computeAudit, signed by the dataset's data NFT owner,
lists every job that used the dataset, newest first, paged as status is (Next-Page), each with its
signed receipt; anyone else gets 401; after the NFT is transferred, its new owner sees the jobs
started from then on and the previous owner nothing."""
from __future__ import annotations

import time
from typing import Any

import pytest

from devstack.contracts import contract, send
from lifecycle_helpers import TEST_IMAGE, environments_json, initialize, order_both, post_start, start_body, stubbed_provider
from owner_helpers import finish, get, node_signed, receipt_of, signed

OUTPUTS = {"result.csv": b"answer,42\n", "summary.json": b'{"rows": 3}\n'}


@pytest.fixture
def provider(aws, chain, client, monkeypatch):
    with stubbed_provider(chain, monkeypatch, environments_json(chain)) as (batch, published):
        yield chain, batch, published


def start(client, provider, account) -> str:
    chain, batch, published = provider
    quote = initialize(client, published, account.address)
    dataset_tx, algorithm_tx = order_both(chain, published, quote, account)
    if not batch.registered:  # the dispatcher keeps the job definition it registered
        batch.expect_new_definition()
    batch.expect_submit(f"batch-{len(batch.submitted) + 1}")
    status, body = post_start(client, start_body(published, account, time.time_ns(), dataset_tx, algorithm_tx))
    assert status == 200, body
    return body[0]["jobId"]


def audit(client, account, did: str, next_page: str | None = None, node: bool = False):
    params: dict[str, Any] = {"documentId": did, **({"next": next_page} if next_page else {})}
    if node:
        return get(client, "/node/api/services/computeAudit", node_signed(account, "getComputeAudit", **params))
    return get(client, "/api/services/computeAudit", signed(account, did, **params))


def test_the_publisher_sees_every_job_on_the_dataset_newest_first(client, provider):
    from chalicelib.receipts.__main__ import verify

    chain, _, published = provider
    did = published.dataset.did
    first = start(client, provider, chain.consumer)
    finish(client, first, OUTPUTS)
    time.sleep(1.1)  # positions are creation seconds, then job ids
    second = start(client, provider, chain.other)

    status, items, headers = audit(client, chain.publisher, did)
    assert status == 200, items
    assert [item["jobId"] for item in items] == [second, first] and "Next-Page" not in headers
    running, done = items
    assert done["consumer"] == chain.consumer.address and running["consumer"] == chain.other.address
    assert done["documentId"] == did
    assert done["algorithm"] == {"did": published.algorithm.did, "rawcodeSha256": None}
    assert done["imageDigest"] == TEST_IMAGE.digest
    assert (done["status"], done["statusText"]) == (70, "Job completed")
    assert done["outputs"] == {"count": 2, "bytes": sum(len(body) for body in OUTPUTS.values())}
    assert done["release"] == {"required": False}
    # the receipt the consumer gets, and it verifies
    assert done["receipt"] == receipt_of(client, chain.consumer, first)[1] and verify(done["receipt"], []) == []
    assert done["times"] == done["receipt"]["receipt"]["times"]
    # a job still running has no receipt yet, its times so far
    assert running["receipt"] is None and running["status"] == 1 and running["outputs"] == {"count": 0, "bytes": 0}
    assert running["times"]["created"] > 0 and running["times"]["finished"] is None
    # the same log at /node (address + nonce + getComputeAudit)
    assert audit(client, chain.publisher, did, node=True)[:2] == (200, items)


def test_anyone_but_the_nft_owner_is_refused(client, provider):
    chain, _, published = provider
    did = published.dataset.did
    start(client, provider, chain.consumer)
    refused = {"error": "Only the dataset's data NFT owner may read its audit log and decide on its jobs"}
    for account in (chain.consumer, chain.other):
        assert audit(client, account, did)[:2] == (401, refused)
        assert audit(client, account, did, node=True)[0] == 401
    # a DID this provider cannot resolve is the 4xx every route gives it, not a 500
    assert audit(client, chain.publisher, "did:op:" + "0" * 64)[0] in (400, 404)


def test_pages_of_at_most_50_continue_at_next_page(client, provider):
    """55 jobs of the dataset (written as starts write them: the record and its audit entry) and
    jobs of another dataset: 50, then 5, never another dataset's."""
    from chalicelib.models import AuditEntry, JobRecord
    from chalicelib.owner.audit import AuditLog

    chain, _, published = provider
    did = published.dataset.did
    now = int(time.time()) - 1000
    log = AuditLog()
    with JobRecord.batch_write() as jobs, AuditEntry.batch_write() as entries:
        for number in range(60):
            target = did if number < 55 else "did:op:" + "ef" * 32
            record = JobRecord(f"paged{number:04d}", owner=chain.consumer.address, document_id=target,
                               date_created=now + number, status=10, status_text="Job started",
                               environment="ocean-c2d-cpu", chain_id=chain.chain_id, input_dids=[target],
                               provenance={"inputs": [{"did": target, "publisher": chain.publisher.address.lower()}]})
            jobs.save(record)
            for entry in log.entries(record):
                entries.save(entry)
    status, page, headers = audit(client, chain.publisher, did)
    assert status == 200 and len(page) == 50
    assert [item["jobId"] for item in page] == [f"paged{number:04d}" for number in range(54, 4, -1)]
    status, rest, headers = audit(client, chain.publisher, did, headers["Next-Page"])
    assert status == 200 and "Next-Page" not in headers
    assert [item["jobId"] for item in rest] == [f"paged{number:04d}" for number in range(4, -1, -1)]
    assert audit(client, chain.publisher, did, "not-a-cursor")[0] == 400


def test_a_transferred_nft_shows_its_new_owner_the_jobs_from_then_on(client, provider):
    from chalicelib import services

    chain, _, published = provider
    did = published.dataset.did
    before = start(client, provider, chain.consumer)
    finish(client, before, OUTPUTS)
    assert [item["jobId"] for item in audit(client, chain.publisher, did)[1]] == [before]

    nft = contract(chain.w3, "ERC721Template", published.dataset.nftAddress)
    send(chain.w3, chain.publisher, nft.functions.transferFrom(chain.publisher.address, chain.other.address, 1))
    services.asset_resolver().register(chain.chain_id, published.dataset.nftAddress)  # the cache reads the new owner
    assert audit(client, chain.publisher, did)[0] == 401, "the seller no longer speaks for the data"
    assert audit(client, chain.other, did)[:2] == (200, []), "the buyer did not agree to the earlier runs"

    after = start(client, provider, chain.other)  # (each account holds one datatoken of each asset)
    assert [item["jobId"] for item in audit(client, chain.other, did)[1]] == [after]
    # the receipt stays with those whose rules admitted each job
    assert receipt_of(client, chain.publisher, before)[0] == 200
