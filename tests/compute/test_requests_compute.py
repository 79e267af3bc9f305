"""Request models of the compute routes, through chalicelib.http.validate (the 400 envelope).

Payloads are shaped as ocean.py (DataServiceProvider) and ocean.js (ProviderInstance) send them.
"""
from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.auth.signatures import recover_address
from chalicelib.compute.requests import (
    MAX_ADDITIONAL_DATASETS,
    MAX_JSON_BYTES,
    MAX_RAWCODE_CHARS,
    ComputeJobQuery,
    ComputeJobSignedQuery,
    ComputeResultQuery,
    ComputeStartRequest,
    InitializeComputeRequest,
)
from chalicelib.errors import ValidationError
from chalicelib.http import validate
from signing import CONSUMER_KEY, address, sign

CONSUMER = address(CONSUMER_KEY)
DID = "did:op:" + "a1" * 32
ALGO_DID = "did:op:" + "b2" * 32
TX = "0x" + "c3" * 32
ALGO_TX = "0x" + "d4" * 32
SIGNATURE = "0x" + "11" * 65
CONTAINER = {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11", "checksum": "sha256:" + "ab" * 32}


def errors_of(model: Any, body: dict[str, Any]) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        validate(model, body)
    envelope = caught.value.body()
    assert envelope["message"] == "Validation error" and envelope["success"] is False
    return envelope["errors"]


def ocean_py_start(**changes: Any) -> dict[str, Any]:
    """DataServiceProvider._prepare_compute_payload with a published algorithm."""
    body = {
        "dataset": {"documentId": DID, "serviceId": "0", "transferTxId": TX, "userdata": {"rows": 3}},
        "environment": "ocean-c2d-cpu",
        "algorithm": {"documentId": ALGO_DID, "serviceId": "1", "transferTxId": ALGO_TX,
                      "algocustomdata": {"epochs": 2}},
        "signature": SIGNATURE,
        "nonce": 1,
        "consumerAddress": CONSUMER,
        "additionalInputs": [],
    }
    body.update(changes)
    return body


def ocean_js_start(**changes: Any) -> dict[str, Any]:
    """ProviderInstance.computeStart: nonce as a string, additionalDatasets, an output object."""
    body = {
        "consumerAddress": CONSUMER, "signature": SIGNATURE, "nonce": "1700000000000",
        "environment": "ocean-c2d-cpu",
        "dataset": {"documentId": DID, "serviceId": "0", "transferTxId": TX},
        "algorithm": {"meta": {"rawcode": "print(1)", "container": CONTAINER}},
        "additionalDatasets": [{"documentId": ALGO_DID, "serviceId": "2", "transferTxId": ALGO_TX}],
        "output": {"publishOutput": True},
    }
    body.update(changes)
    return body


# ---------------------------------------------------------------- POST /compute


def test_ocean_py_start_payload():
    request = validate(ComputeStartRequest, ocean_py_start())
    assert request.nonce == "1" and request.signer() == CONSUMER
    assert request.message_prefix() == CONSUMER + DID
    assert request.algorithm.documentId == ALGO_DID and not request.algorithm.is_raw
    assert request.algorithm.algocustomdata == {"epochs": 2} and request.dataset.userdata == {"rows": 3}
    assert [d.documentId for d in request.all_datasets] == [DID]


def test_the_signed_message_is_what_ocean_py_signs():
    """ocean.py signs f"{consumer.address}{dataset.did}{nonce}"; the route recovers from prefix + nonce."""
    nonce = 42
    signature = sign(CONSUMER_KEY, f"{CONSUMER}{DID}{nonce}")
    request = validate(ComputeStartRequest, ocean_py_start(nonce=nonce, signature=signature))
    assert recover_address(request.message_prefix() + request.nonce, request.signature) == CONSUMER
    other = validate(ComputeStartRequest, ocean_py_start(nonce=nonce, signature=signature,
                                                        dataset={"documentId": ALGO_DID, "serviceId": "0", "transferTxId": TX}))
    assert recover_address(other.message_prefix() + other.nonce, other.signature) != CONSUMER


def test_ocean_py_raw_algorithm_payload():
    """AlgorithmMetadata.as_dictionary(): empty strings for what is not given."""
    meta = {"meta": {"url": "", "rawcode": "print(1)", "language": "", "version": "",
                     "container": {"entrypoint": "", "image": "", "tag": "", "checksum": ""}}}
    request = validate(ComputeStartRequest, ocean_py_start(algorithm=meta))
    assert request.algorithm.is_raw and request.algorithm.meta.rawcode == "print(1)"
    assert request.algorithm.meta.container.image == ""  # emptiness is a business rule with the original's code


def test_ocean_js_start_payload():
    request = validate(ComputeStartRequest, ocean_js_start())
    assert request.nonce == "1700000000000"
    assert request.algorithm.is_raw and request.algorithm.meta.container.checksum == CONTAINER["checksum"]
    assert [d.documentId for d in request.all_datasets] == [DID, ALGO_DID]
    assert request.additional_datasets[0].serviceId == "2"


@pytest.mark.parametrize("key", ["additionalDatasets", "additionalInputs"])
def test_both_keys_for_additional_datasets(key):
    extra = [{"documentId": ALGO_DID, "serviceId": "2", "transferTxId": ALGO_TX}]
    request = validate(ComputeStartRequest, {**ocean_py_start(additionalInputs=None), key: extra})
    assert [d.documentId for d in request.all_datasets] == [DID, ALGO_DID]


def test_the_same_list_under_both_keys_is_fine_two_lists_are_not():
    extra = [{"documentId": ALGO_DID, "serviceId": "2", "transferTxId": ALGO_TX}]
    request = validate(ComputeStartRequest, ocean_py_start(additionalInputs=extra, additionalDatasets=extra))
    assert len(request.all_datasets) == 2
    other = [{**extra[0], "serviceId": "3"}]
    assert list(errors_of(ComputeStartRequest, ocean_py_start(additionalInputs=other, additionalDatasets=extra))) == ["additionalInputs"]


def test_additional_datasets_are_bounded_and_validated_by_position():
    item = {"documentId": DID, "serviceId": "0", "transferTxId": TX}
    validate(ComputeStartRequest, ocean_js_start(additionalDatasets=[item] * MAX_ADDITIONAL_DATASETS))
    assert list(errors_of(ComputeStartRequest, ocean_js_start(additionalDatasets=[item] * (MAX_ADDITIONAL_DATASETS + 1)))) == [
        "additionalDatasets"]
    errors = errors_of(ComputeStartRequest, ocean_py_start(additionalInputs=[item, {"documentId": DID, "serviceId": "0"}]))
    assert errors == {"additionalInputs.1.transferTxId": ["required"]}
    assert "additionalDatasets" in errors_of(ComputeStartRequest, ocean_js_start(additionalDatasets={"documentId": DID}))


def test_missing_fields_are_named():
    errors = errors_of(ComputeStartRequest, {})
    assert set(errors) == {"nonce", "consumerAddress", "environment", "dataset", "algorithm"}
    assert all(messages == ["required"] for messages in errors.values())
    body = ocean_py_start(dataset={"documentId": DID})
    assert errors_of(ComputeStartRequest, body) == {"dataset.serviceId": ["required"], "dataset.transferTxId": ["required"]}


def test_algorithm_needs_a_document_id_or_meta():
    assert list(errors_of(ComputeStartRequest, ocean_py_start(algorithm={}))) == ["algorithm"]
    assert list(errors_of(ComputeStartRequest, ocean_py_start(algorithm={"serviceId": "1", "transferTxId": ALGO_TX}))) == ["algorithm"]
    assert "algorithm.meta.container" in errors_of(ComputeStartRequest, ocean_py_start(algorithm={"meta": {"rawcode": "x"}}))


def test_meta_may_be_a_json_text_as_the_original_accepts():
    request = validate(ComputeStartRequest, ocean_py_start(algorithm={"meta": json.dumps({"rawcode": "x", "container": CONTAINER})}))
    assert request.algorithm.meta.rawcode == "x"
    assert "algorithm.meta" in errors_of(ComputeStartRequest, ocean_py_start(algorithm={"meta": "{not json"}))


@pytest.mark.parametrize("field, value", [
    ("consumerAddress", "0x123"),
    ("consumerAddress", "not an address"),
    ("nonce", -1),
    ("nonce", "1.5"),
    ("nonce", "1" * 39),
    ("nonce", True),
    ("signature", "0x1234"),
    ("environment", ""),
    ("environment", "e" * 257),
])
def test_malformed_top_level_fields(field, value):
    assert field in errors_of(ComputeStartRequest, ocean_py_start(**{field: value}))


@pytest.mark.parametrize("nonce, text", [(7, "7"), ("0010", "0010"), ("1" * 38, "1" * 38)])
def test_nonce_keeps_the_signed_text(nonce, text):
    assert validate(ComputeStartRequest, ocean_py_start(nonce=nonce)).nonce == text


def test_signature_is_optional_for_the_auth_token_path():
    body = ocean_py_start()
    del body["signature"]
    assert validate(ComputeStartRequest, body).signature is None


@pytest.mark.parametrize("dataset_changes, field", [
    ({"documentId": "0x" + "a" * 64}, "dataset.documentId"),
    ({"documentId": "did:op:" + "a" * 300}, "dataset.documentId"),
    ({"transferTxId": "0x1234"}, "dataset.transferTxId"),
    ({"transferTxId": 12}, "dataset.transferTxId"),
    ({"serviceId": ""}, "dataset.serviceId"),
    ({"serviceId": "s" * 257}, "dataset.serviceId"),
    ({"serviceId": None}, "dataset.serviceId"),
    ({"userdata": [1, 2]}, "dataset.userdata"),
    ({"userdata": "not json"}, "dataset.userdata"),
    ({"userdata": {"blob": "x" * MAX_JSON_BYTES}}, "dataset.userdata"),
])
def test_malformed_dataset_fields(dataset_changes, field):
    dataset = {"documentId": DID, "serviceId": "0", "transferTxId": TX, **dataset_changes}
    assert field in errors_of(ComputeStartRequest, ocean_py_start(dataset=dataset))


def test_dataset_normalisations():
    dataset = {"documentId": DID, "serviceId": 0, "transferTxId": TX[2:].upper(), "userdata": json.dumps({"a": 1})}
    request = validate(ComputeStartRequest, ocean_py_start(dataset=dataset))
    assert request.dataset.serviceId == "0"
    assert request.dataset.transferTxId == TX
    assert request.dataset.userdata == {"a": 1}


@pytest.mark.parametrize("algorithm, field", [
    ({"documentId": ALGO_DID, "algocustomdata": {"x": "y" * MAX_JSON_BYTES}}, "algorithm.algocustomdata"),
    ({"documentId": ALGO_DID, "algocustomdata": "[1]"}, "algorithm.algocustomdata"),
    ({"documentId": ALGO_DID, "userdata": 5}, "algorithm.userdata"),
    ({"documentId": ALGO_DID, "transferTxId": "nope"}, "algorithm.transferTxId"),
    ({"meta": {"rawcode": "x" * (MAX_RAWCODE_CHARS + 1), "container": CONTAINER}}, "algorithm.meta.rawcode"),
    ({"meta": {"url": "u" * 2049, "container": CONTAINER}}, "algorithm.meta.url"),
    ({"meta": {"rawcode": "x", "container": {**CONTAINER, "image": "i" * 513}}}, "algorithm.meta.container.image"),
    ({"meta": {"rawcode": "x", "container": {**CONTAINER, "checksum": "c" * 129}}}, "algorithm.meta.container.checksum"),
])
def test_malformed_algorithm_fields(algorithm, field):
    assert field in errors_of(ComputeStartRequest, ocean_py_start(algorithm=algorithm))


def test_the_largest_accepted_userdata():
    filler = "x" * (MAX_JSON_BYTES - len('{"k":""}'))
    assert validate(ComputeStartRequest, ocean_py_start(dataset={
        "documentId": DID, "serviceId": "0", "transferTxId": TX, "userdata": {"k": filler}})).dataset.userdata == {"k": filler}


# ---------------------------------------------------------------- POST /initializeCompute


def ocean_py_initialize(**changes: Any) -> dict[str, Any]:
    """DataServiceProvider.initialize_compute; ocean.js sends the same keys."""
    body = {
        "datasets": [{"documentId": DID, "serviceId": "0", "userdata": {"rows": 1}}],
        "algorithm": {"documentId": ALGO_DID, "serviceId": "1"},
        "compute": {"env": "ocean-c2d-cpu", "validUntil": 1_900_000_000},
        "consumerAddress": CONSUMER,
    }
    body.update(changes)
    return body


def test_initialize_payloads():
    request = validate(InitializeComputeRequest, ocean_py_initialize())
    assert request.compute.validUntil == 1_900_000_000 and request.compute.env == "ocean-c2d-cpu"
    assert request.all_datasets[0].transferTxId is None and request.chainId is None
    reuse = validate(InitializeComputeRequest, ocean_py_initialize(
        datasets=[{"documentId": DID, "serviceId": "0", "transferTxId": TX}], compute={"env": "e", "validUntil": "1900000000"},
        chainId=8996))
    assert reuse.all_datasets[0].transferTxId == TX and reuse.compute.validUntil == 1_900_000_000 and reuse.chainId == 8996
    raw = validate(InitializeComputeRequest, ocean_py_initialize(algorithm={"meta": {"rawcode": "x", "container": CONTAINER}}))
    assert raw.algorithm.is_raw


@pytest.mark.parametrize("changes, field", [
    ({"datasets": []}, "datasets"),
    ({"datasets": [{"documentId": DID, "serviceId": "0"}] * (MAX_ADDITIONAL_DATASETS + 2)}, "datasets"),
    ({"datasets": [{"serviceId": "0"}]}, "datasets.0.documentId"),
    ({"compute": {"validUntil": 1}}, "compute.env"),
    ({"compute": {"env": "e", "validUntil": "soon"}}, "compute.validUntil"),
    ({"compute": {"env": "e", "validUntil": 1.5}}, "compute.validUntil"),
    ({"consumerAddress": None}, "consumerAddress"),
    ({"algorithm": {}}, "algorithm"),
    ({"chainId": "eth"}, "chainId"),
])
def test_initialize_malformed(changes, field):
    assert field in errors_of(InitializeComputeRequest, ocean_py_initialize(**changes))


# ---------------------------------------------------------------- GET/PUT/DELETE /compute


def test_unsigned_status_query_as_ocean_js_sends_it():
    query = validate(ComputeJobQuery, {"consumerAddress": CONSUMER, "documentId": DID})
    assert query.nonce is None and query.signature is None and query.proof_optional
    assert query.message_prefix() == CONSUMER + DID


def test_signed_job_query_as_ocean_py_sends_it():
    """_send_compute_request signs f"{consumer.address}{job_id}{did}" + nonce, sent in the query string."""
    signature = sign(CONSUMER_KEY, f"{CONSUMER}job-1{DID}5")
    query = validate(ComputeJobSignedQuery, {"consumerAddress": CONSUMER, "documentId": DID, "jobId": "job-1",
                                             "nonce": "5", "signature": signature})
    assert not query.proof_optional
    assert recover_address(query.message_prefix() + query.nonce, query.signature) == CONSUMER


def test_missing_job_fields_count_as_empty_in_the_prefix():
    assert validate(ComputeJobQuery, {"consumerAddress": CONSUMER, "jobId": "j"}).message_prefix() == CONSUMER + "j"
    assert validate(ComputeJobQuery, {"consumerAddress": CONSUMER, "jobId": ""}).message_prefix() == CONSUMER


def test_stop_and_delete_need_a_nonce():
    assert errors_of(ComputeJobSignedQuery, {"consumerAddress": CONSUMER, "jobId": "j", "signature": SIGNATURE}) == {
        "nonce": ["required"]}
    assert validate(ComputeJobSignedQuery, {"consumerAddress": CONSUMER, "jobId": "j", "nonce": 3}).nonce == "3"


@pytest.mark.parametrize("changes, field", [
    ({"consumerAddress": None}, "consumerAddress"),
    ({"jobId": "j" * 257}, "jobId"),
    ({"documentId": "d" * 257}, "documentId"),
    ({"nonce": "x"}, "nonce"),
    ({"signature": "0xzz"}, "signature"),
])
def test_job_query_malformed(changes, field):
    assert field in errors_of(ComputeJobQuery, {"consumerAddress": CONSUMER, **changes})


# ---------------------------------------------------------------- GET /computeResult


def test_result_query_signed_over_consumer_job_and_index():
    """ocean.py signs f"{consumer.address}{job_id}{str(index)}" + nonce; ocean.js the same."""
    signature = sign(CONSUMER_KEY, f"{CONSUMER}job-1{3}9")
    query = validate(ComputeResultQuery, {"consumerAddress": CONSUMER, "jobId": "job-1", "index": "3", "nonce": "9",
                                          "signature": signature})
    assert query.index == "3" and query.index_value == 3
    assert recover_address(query.message_prefix() + query.nonce, query.signature) == CONSUMER
    assert validate(ComputeResultQuery, {"consumerAddress": CONSUMER, "jobId": "j", "index": 0, "nonce": 1}).message_prefix() == (
        CONSUMER + "j0")


@pytest.mark.parametrize("changes, field", [
    ({"index": -1}, "index"),
    ({"index": "-1"}, "index"),
    ({"index": "1.0"}, "index"),
    ({"index": "1234567"}, "index"),
    ({"index": "٣"}, "index"),
    ({"index": None}, "index"),
    ({"jobId": ""}, "jobId"),
    ({"jobId": None}, "jobId"),
    ({"nonce": None}, "nonce"),
])
def test_result_query_malformed(changes, field):
    body = {"consumerAddress": CONSUMER, "jobId": "j", "index": "0", "nonce": "1", **changes}
    body = {k: v for k, v in body.items() if v is not None}
    assert field in errors_of(ComputeResultQuery, body)


# ---------------------------------------------------------------- /spec


@pytest.mark.parametrize("model", [ComputeStartRequest, InitializeComputeRequest, ComputeJobQuery,
                                   ComputeJobSignedQuery, ComputeResultQuery])
def test_models_have_a_json_schema_for_the_openapi_document(model):
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    assert schema["type"] == "object" and "consumerAddress" in schema["properties"]
