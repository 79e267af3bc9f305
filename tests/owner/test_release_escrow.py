"""An escrow claim is made when the compute ran, whatever the data owner decides (issue 22): a
paid Ocean Node job on a dataset whose publisher the operator lists in RELEASE_REQUIRED ends at
75, its lock is claimed then, and the refusal that follows changes nothing of the payment."""
from __future__ import annotations

import json
import time

import pytest

from escrow_fixtures import payment_tables  # noqa: F401  (fixture)
from lifecycle_helpers import stubbed_provider
from owner_helpers import signed as v4_signed
from test_events import batch_event, runner_event
from test_node_escrow import PER_MINUTE, _funded_quote, _payment, _start
from test_node_protocol import JOB_QUEUE_ARN, _clients, deliver, free_environments

from escrow_helpers import funds


@pytest.fixture
def paid(aws, chain, client, monkeypatch, payment_tables):  # noqa: F811
    monkeypatch.setenv("ESCROW_CONTRACTS", json.dumps({str(chain.chain_id): chain.contracts.Escrow}))
    env = {"RELEASE_REQUIRED": chain.publisher.address,
           "NFT_FACTORIES": json.dumps({str(chain.chain_id): chain.contracts.ERC721Factory})}
    with stubbed_provider(chain, monkeypatch, free_environments(chain), allow_raw=True, env=env) as (batch, published):
        monkeypatch.setattr("chalicelib.aws.client", _clients(batch.client))
        yield chain, batch, published


def test_a_held_job_is_claimed_when_it_ends_and_a_refusal_does_not_undo_it(client, paid):
    chain, batch, published = paid
    before, quote = _funded_quote(client, chain, published)
    batch.expect_new_definition()
    batch.expect_submit("batch-held")
    (status, answer), _ = _start(client, chain, published, quote)
    assert status == 200, answer
    job_id = answer[0]["jobId"]
    deliver(client, batch_event(job_id, "RUNNING", batch_job_id="batch-held", queue=JOB_QUEUE_ARN))
    deliver(client, runner_event(job_id, 70))
    deliver(client, batch_event(job_id, "SUCCEEDED", batch_job_id="batch-held", queue=JOB_QUEUE_ARN,
                                exits={"configure": 0, "algorithm": 0, "publish": 0}))
    job = _payment(client, chain, job_id)
    assert job["status"] == 75 and job["release"]["required"] == [published.dataset.did]
    claimed = job["payment"]
    assert claimed["status"] == "claimed" and claimed["claimed"] == str(PER_MINUTE)
    assert funds(chain) == (before[0] - PER_MINUTE, before[1])

    from chalicelib.models import JobRecord

    # the events carry the suites' fixed T0 (2023): the request would have expired long ago
    JobRecord.get(job_id).update(actions=[JobRecord.date_finished.set(int(time.time()))])
    did = published.dataset.did
    body = v4_signed(chain.publisher, did, job_id, "refuse", documentId=did, jobId=job_id, decision="refuse")
    response = client.http.post("/api/services/computeRelease", body=json.dumps(body).encode(),
                                headers={"Content-Type": "application/json"})
    assert response.status_code == 200 and json.loads(response.body)[0]["status"] == 76
    after = _payment(client, chain, job_id)
    assert after["payment"] == claimed and funds(chain) == (before[0] - PER_MINUTE, before[1])
