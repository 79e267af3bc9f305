"""ocean.py's v4 requests at `<api>/node` (chalicelib.node.ocean_py): ocean.py appends the v4 paths
to an asset's serviceEndpoint, so with `<api>/node` its whole compute flow arrives under /node, told
apart from Ocean Node's requests by what it carries and answered as at the root. Ocean Node's own
requests on the same paths keep their protocol. Real orders on anvil, moto, Batch behind the
Stubber; the requests are the ones ocean.py 3.1.2 builds (tests/compat/test_compat_ocean_py.py runs
ocean.py itself against make run)."""
from __future__ import annotations

import json
import time
import urllib.parse

import pytest

from lifecycle_helpers import consumer_key, order_both
from signing import sign
from test_node_protocol import node, signed  # noqa: F401 - `node` is a fixture

NODE = "/node/api/services"


def _post(client, path: str, body: dict):
    response = client.http.post(NODE + path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    return response.status_code, json.loads(response.body) if response.body else None


def _call(client, method: str, path: str, **params):
    response = getattr(client.http, method)(NODE + path + "?" + urllib.parse.urlencode(params))
    return response


def _v4_signed(account, prefix: str) -> dict:
    """ocean.py's signature: `prefix + nonce` (prefix: address + job/did fields)."""
    nonce = str(time.time_ns())
    return {"nonce": nonce, "signature": sign(consumer_key(account), prefix + nonce)}


def test_ocean_py_s_whole_v4_flow_at_node(client, node):
    chain, batch, published = node
    consumer = chain.consumer.address
    dataset = {"documentId": published.dataset.did, "serviceId": published.dataset.serviceId}
    algorithm = {"documentId": published.algorithm.did, "serviceId": published.algorithm.serviceId}

    environments = json.loads(_call(client, "get", "/computeEnvironments", chainId=chain.chain_id).body)
    assert list(environments) == [str(chain.chain_id)] and environments[str(chain.chain_id)][0]["id"] == "ocean-c2d-cpu"
    assert isinstance(json.loads(_call(client, "get", "/computeEnvironments").body), list), "Ocean Node's answer"

    status, quote = _post(client, "/initializeCompute", {
        "datasets": [dataset], "algorithm": algorithm, "consumerAddress": consumer,
        "compute": {"env": "ocean-c2d-cpu", "validUntil": int(time.time()) + 900}})
    assert status == 200 and int(quote["datasets"][0]["providerFee"]["providerFeeAmount"]) > 0, quote
    dataset_tx, algorithm_tx = order_both(chain, published, quote)

    batch.expect_new_definition()
    batch.expect_submit("batch-v4")
    status, started = _post(client, "/compute", {
        "consumerAddress": consumer, "environment": "ocean-c2d-cpu", "additionalInputs": [],
        **_v4_signed(chain.consumer, consumer + published.dataset.did),
        "dataset": {**dataset, "transferTxId": dataset_tx}, "algorithm": {**algorithm, "transferTxId": algorithm_tx}})
    assert status == 200, started
    job_id = started[0]["jobId"]

    query = dict(consumerAddress=consumer, documentId=published.dataset.did, jobId=job_id)
    response = _call(client, "get", "/compute", **query, **_v4_signed(chain.consumer, consumer + job_id + published.dataset.did))
    assert response.status_code == 200 and json.loads(response.body)[0]["jobId"] == job_id

    from chalicelib import aws, services
    from test_node_protocol import finish

    finish(client, job_id, "batch-v4")
    response = _call(client, "get", "/computeResult", consumerAddress=consumer, jobId=job_id, index=0,
                     **_v4_signed(chain.consumer, consumer + job_id + "0"))
    assert response.status_code == 302, response.body

    response = _call(client, "put", "/compute", **query, **_v4_signed(chain.consumer, consumer + job_id + published.dataset.did))
    assert response.status_code == 200 and json.loads(response.body)[0]["status"] == 70, "an ended job stays ended"
    response = _call(client, "delete", "/compute", **query, **_v4_signed(chain.consumer, consumer + job_id + published.dataset.did))
    assert response.status_code == 200 and json.loads(response.body)[0]["status"] == 8, response.body
    assert not aws.client("s3").list_objects_v2(Bucket=services.settings().bucket, Prefix=f"jobs/{job_id}/outputs/").get("Contents")

    nonce = str(time.time_ns())
    response = _call(client, "get", "/createAuthToken", address=consumer, nonce=nonce, expiration=int(time.time()) + 600,
                     signature=sign(consumer_key(chain.consumer), consumer + nonce))
    assert response.status_code == 200 and json.loads(response.body)["token"].count(".") == 2


def test_ocean_node_s_requests_on_the_shared_paths_keep_their_protocol(client, node):
    """A Node-signed result request is Ocean Node's; a v4 signature over Ocean Node's fields is v4's."""
    chain, batch, published = node
    consumer = chain.consumer.address
    from test_node_protocol import free_job, finish

    job_id = free_job(client, node)["jobId"]
    finish(client, job_id)
    response = _call(client, "get", "/computeResult", jobId=job_id, index=0, **signed(chain.consumer, "getComputeResult"))
    assert response.status_code == 302
    forged = {"consumerAddress": consumer, "jobId": job_id, "index": 0, "nonce": str(time.time_ns()),
              "signature": sign(consumer_key(chain.other), consumer + job_id + "0" + "1")}
    response = _call(client, "get", "/computeResult", **forged)
    assert response.status_code == 400 and "signature" in response.body.decode(), "neither protocol's signer"
    # Ocean Node's status (no documentId) stays unsigned and reduced
    status = json.loads(_call(client, "get", "/compute", consumerAddress=consumer, jobId=job_id).body)
    assert status[0]["jobId"] == job_id and status[0]["resultsUrls"] == []
    # an Ocean Node start without datasets is not taken for ocean.py's without its signature
    status, answer = _post(client, "/compute", {**signed(chain.consumer, "startCompute"), "environment": "ocean-c2d-cpu",
                                                "dataset": {"documentId": published.dataset.did}, "algorithm": {}})
    assert status == 400


def test_the_alternatives_are_not_in_the_spec_twice(client):
    spec = json.loads(client.http.get("/spec").body)
    assert set(spec["paths"]["/node/api/services/compute"]) == {"post", "get", "put", "delete"}
    assert spec["paths"]["/node/api/services/compute"]["post"]["operationId"] == "node_computeStart"
    ids = [op["operationId"] for item in spec["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("raw", [{}, {"consumerAddress": 5, "signature": None}, {"consumerAddress": "x", "jobId": "j",
                                 "index": "0", "nonce": "1", "signature": "0x" + "00" * 65},
                                 {"consumerAddress": ["x"], "jobId": {}, "index": None, "nonce": [], "signature": 7}])
def test_the_result_dispatch_never_raises_on_raw_input(raw):
    from chalicelib.compute.requests import ComputeResultQuery
    from chalicelib.node.ocean_py import accepts

    assert accepts("computeResult", ComputeResultQuery)(raw) is False
