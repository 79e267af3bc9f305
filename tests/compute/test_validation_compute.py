"""The compute validation rules, each accepted and refused with the original Provider's code.

DDOs are real v4.1 dicts from devstack.publish.build_ddo (what the dev chain publishes); assets
are chalicelib.assets' Asset; requests go through the route's own models and `validate`.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from chalicelib.assets.ddo import Asset
from chalicelib.compute.environments import parse_environments
from chalicelib.compute.requests import ComputeStartRequest, InitializeComputeRequest
from chalicelib.compute.algorithm_rules import container_section_checksum, content_checksum, joined_files_checksum
from chalicelib.compute.input_rules import same_endpoint
from chalicelib.compute.plan import Resolved
from chalicelib.compute.validation import ComputeValidator
from chalicelib.errors import BusinessError, ServiceUnavailable
from chalicelib.http import error_response, validate
from devstack.publish import build_ddo

CHAIN = 8996
PROVIDER_URL = "https://provider.example.com"
PROVIDER = "0x" + "9" * 40
CONSUMER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"  # checksummed: credentials compare without case
PUBLISHER = "0xAbCdEf0123456789aBcDeF0123456789AbCdEf01"
NOW = 1_700_000_000

ENVIRONMENTS = parse_environments([
    {"id": "cpu", "chainIds": [CHAIN], "jobQueue": "q", "nCPU": 2, "ramGB": 4, "diskGB": 10,
     "maxJobs": 5, "maxJobDuration": 3600},
    {"id": "mainnet-only", "chainIds": [1], "jobQueue": "q1", "nCPU": 2, "ramGB": 4, "diskGB": 10,
     "maxJobs": 5, "maxJobDuration": 3600},
])

ALGO_FILES = ({"type": "url", "url": "https://files.example.com/algo.py", "method": "GET"},
              {"type": "url", "url": "https://files.example.com/lib.py", "method": "GET"})
CONTENTS = {"https://files.example.com/algo.py": b"print('hello')\n", "https://files.example.com/lib.py": b"X = 1\n",
            "https://files.example.com/raw.py": b"print('raw')\n"}
DATA_FILES = ({"type": "url", "url": "https://files.example.com/data.csv", "method": "GET"},)
CONTAINER = {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11-slim",
             "checksum": "sha256:" + "ab" * 32}

# The files checksum of ALGO_FILES as a publisher computes it for publisherTrustedAlgorithms
# (ocean.js/ocean.py ask the provider's fileinfo with checksum=true per file and concatenate).
ALGO_FILES_CHECKSUM = hashlib.sha256(CONTENTS[ALGO_FILES[0]["url"]]).hexdigest() + hashlib.sha256(
    CONTENTS[ALGO_FILES[1]["url"]]).hexdigest()
ALGO_CONTAINER_CHECKSUM = hashlib.sha256(b"python $ALGO" + b"sha256:" + b"ab" * 32).hexdigest()


class Hasher:
    """The file hasher dependency: sha256 of each file's bytes (here from memory, not HTTP).
    `calls` counts fresh downloads (start), `cached_calls` initializeCompute's cached asks."""

    def __init__(self, contents: dict[str, bytes] = CONTENTS, fail: bool = False):
        self.contents, self.fail, self.calls, self.cached_calls = contents, fail, 0, 0

    def digests(self, files: Any) -> list[str]:
        self.calls += 1
        if self.fail:
            raise OSError("download failed")
        return [content_checksum(self.contents[f["url"]]) for f in files]

    def cached_digests(self, files: Any) -> list[str]:
        self.cached_calls += 1
        return self.digests(files)


def _address(n: int) -> str:
    return "0x" + f"{n:040x}"


def make_dataset(n: int = 1, *, service_type: str = "compute", compute: dict | None = None,
                 chain_id: int = CHAIN, endpoint: str = PROVIDER_URL, state: int = 0, **extra: Any) -> Asset:
    ddo = build_ddo(
        nft_address=_address(0x1000 + n), chain_id=chain_id, datatoken=_address(0x2000 + n),
        encrypted_files="0x" + "ee" * 40, provider_url=endpoint, name=f"dataset {n}",
        service_id=f"svc-{n}", service_type=service_type, compute=compute,
    )
    ddo.update(extra.pop("ddo_extra", {}))
    ddo["services"][0].update(extra)
    return Asset(did=ddo["id"], chain_id=chain_id, nft_address=ddo["nftAddress"], ddo=ddo, state=state)


def make_algorithm(n: int = 1, *, container: dict | None = None, owner: str | None = PUBLISHER,
                   asset_type: str = "algorithm", service_type: str = "access", chain_id: int = CHAIN,
                   **extra: Any) -> Asset:
    ddo = build_ddo(
        nft_address=_address(0x3000 + n), chain_id=chain_id, datatoken=_address(0x4000 + n),
        encrypted_files="0x" + "ee" * 40, provider_url=PROVIDER_URL, name=f"algo {n}",
        asset_type=asset_type,
        algorithm={"language": "python", "version": "0.1", "container": container if container is not None else CONTAINER},
        service_id=f"algo-svc-{n}", service_type=service_type,
    )
    if owner:
        ddo["nft"] = {"address": ddo["nftAddress"], "owner": owner, "state": 0}
    ddo.update(extra.pop("ddo_extra", {}))
    ddo["services"][0].update(extra)
    return Asset(did=ddo["id"], chain_id=chain_id, nft_address=ddo["nftAddress"], ddo=ddo)


def tx(n: int) -> str:
    return "0x" + f"{n:064x}"


def start_request(dataset: Asset, algorithm: Asset | None = None, *, additional: list[Asset] = (),
                  environment: str = "cpu", meta: dict | None = None, **algo_fields: Any) -> ComputeStartRequest:
    algo: dict[str, Any] = {}
    if algorithm is not None:
        algo = {"documentId": algorithm.did, "serviceId": algorithm.ddo["services"][0]["id"], "transferTxId": tx(99)}
    if meta is not None:
        algo["meta"] = meta
    algo.update(algo_fields)
    body = {
        "consumerAddress": CONSUMER, "nonce": 1, "signature": "0x" + "11" * 65, "environment": environment,
        "dataset": {"documentId": dataset.did, "serviceId": dataset.ddo["services"][0]["id"], "transferTxId": tx(1)},
        "algorithm": algo,
        "additionalInputs": [
            {"documentId": a.did, "serviceId": a.ddo["services"][0]["id"], "transferTxId": tx(10 + i)}
            for i, a in enumerate(additional)
        ],
    }
    return validate(ComputeStartRequest, body)  # type: ignore[return-value]


RAW_META = {"rawcode": "print(1)", "container": CONTAINER}


def validator(**kwargs: Any) -> ComputeValidator:
    kwargs.setdefault("files_checksum", Hasher())
    return ComputeValidator(PROVIDER, ENVIRONMENTS, clock=lambda: NOW, **kwargs)


def refused(call: Any) -> Any:
    with pytest.raises(BusinessError) as caught:
        call()
    return caught.value.error


def with_files(*assets: Asset, files: Any = DATA_FILES) -> list[Resolved]:
    return [Resolved(a, files) for a in assets]


# ---------------------------------------------------------------- accepted


def test_raw_algorithm_on_a_dataset_that_allows_it_gives_a_plan():
    dataset = make_dataset(compute={"allowRawAlgorithm": True})
    plan = validator().validate_start(start_request(dataset, meta=RAW_META), with_files(dataset))
    assert plan.environment.id == "cpu" and plan.chain_id == CHAIN and plan.provider_address == PROVIDER
    assert plan.algorithm.is_raw and plan.algorithm.did == "" and plan.algorithm.rawcode == "print(1)"
    assert plan.algorithm.container == CONTAINER
    assert [o.resource for o in plan.orders()] == ["dataset"]
    order = plan.orders()[0]
    assert (order.did, order.service_id, order.service_index, order.datatoken, order.transfer_tx_id) == (
        dataset.did, "svc-1", 0, dataset.ddo["services"][0]["datatokenAddress"], tx(1))
    assert plan.datasets[0].manifest() == {"did": dataset.did, "serviceId": "svc-1", "files": list(DATA_FILES), "userdata": {}}
    assert plan.algorithm.manifest() == {"did": "", "rawcode": "print(1)", "files": [], "container": CONTAINER,
                                         "algocustomdata": {}, "userdata": {}}


def test_raw_algorithm_by_url_becomes_a_url_file():
    dataset = make_dataset(compute={"allowRawAlgorithm": True})
    meta = {"url": "https://files.example.com/raw.py", "container": CONTAINER}
    plan = validator().validate_start(start_request(dataset, meta=meta), with_files(dataset))
    assert plan.algorithm.manifest()["files"] == [{"type": "url", "url": "https://files.example.com/raw.py", "method": "GET"}]
    assert plan.algorithm.checksums == (hashlib.sha256(b"print('raw')\n").hexdigest(),)  # pinned at start too


def test_published_algorithm_on_a_dataset_without_trust_lists_is_accepted_as_the_original_does():
    dataset, algorithm = make_dataset(), make_algorithm()
    hasher = Hasher()
    request = start_request(dataset, algorithm, algocustomdata={"epochs": 3}, userdata={"k": "v"})
    plan = validator(files_checksum=hasher).validate_start(request, with_files(dataset), Resolved(algorithm, ALGO_FILES))
    assert [o.resource for o in plan.orders()] == ["dataset", "algorithm"]
    algo = plan.algorithm
    assert not algo.is_raw and algo.did == algorithm.did and algo.order is not None
    assert (algo.order.service_id, algo.order.service_index, algo.order.transfer_tx_id, algo.order.service_type) == (
        "algo-svc-1", 0, tx(99), "access")
    assert algo.manifest() == {"did": algorithm.did, "rawcode": "", "files": list(ALGO_FILES), "container": CONTAINER,
                               "algocustomdata": {"epochs": 3}, "userdata": {"k": "v"}}
    # nothing pinned a files checksum, but the start pins what it runs: one download (C7)
    assert algo.checksums == tuple(hashlib.sha256(CONTENTS[f["url"]]).hexdigest() for f in ALGO_FILES)
    assert hasher.calls == 1


def test_trusted_algorithm_with_matching_checksums_is_accepted_and_files_are_hashed_once():
    algorithm = make_algorithm()
    trust = {"publisherTrustedAlgorithms": [
        {"did": algorithm.did, "filesChecksum": ALGO_FILES_CHECKSUM.upper(), "containerSectionChecksum": ALGO_CONTAINER_CHECKSUM}]}
    first, second = make_dataset(1, compute=trust), make_dataset(2, compute=trust)
    hasher = Hasher()
    plan = validator(files_checksum=hasher).validate_start(
        start_request(first, algorithm, additional=[second]), with_files(first, second), Resolved(algorithm, ALGO_FILES))
    assert [d.resource for d in plan.datasets] == ["dataset", "datasets[1]"]
    assert hasher.calls == 1  # the trusted checks and the manifest's checksums share one download
    assert "".join(plan.algorithm.checksums) == ALGO_FILES_CHECKSUM


def test_checksum_helpers_follow_the_original_formulas():
    assert container_section_checksum(CONTAINER) == ALGO_CONTAINER_CHECKSUM
    assert joined_files_checksum(["AB", "cd"]) == "abcd"
    assert content_checksum(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_wildcard_entries_written_for_ocean_node_trust_any_algorithm_without_downloading():
    algorithm = make_algorithm()
    dataset = make_dataset(compute={
        "publisherTrustedAlgorithmPublishers": ["*"],
        "publisherTrustedAlgorithms": [{"did": "*", "filesChecksum": "*", "containerSectionChecksum": "*"}]})
    hasher = Hasher()
    validator(files_checksum=hasher).validate_start(
        start_request(dataset, algorithm), with_files(dataset), Resolved(algorithm, ALGO_FILES))
    assert hasher.calls == 1  # only the start's pin of what will run, not for the trust check
    validator(files_checksum=hasher).validate_initialize(
        initialize_request(dataset, algorithm), with_files(dataset), Resolved(algorithm, ALGO_FILES))
    assert (hasher.calls, hasher.cached_calls) == (1, 0)


def initialize_request(dataset: Asset, algorithm: Asset) -> InitializeComputeRequest:
    return validate(InitializeComputeRequest, {  # type: ignore[return-value]
        "datasets": [{"documentId": dataset.did, "serviceId": dataset.ddo["services"][0]["id"]}],
        "algorithm": {"documentId": algorithm.did, "serviceId": algorithm.ddo["services"][0]["id"]},
        "compute": {"env": "cpu", "validUntil": NOW + 600}, "consumerAddress": CONSUMER})


def test_initialize_hashes_only_for_a_pinned_checksum_and_through_the_cache():
    """Issue 12: the unsigned initializeCompute never downloads unless an entry pins a
    filesChecksum, and then asks the hasher's bounded cache, never a fresh download."""
    algorithm = make_algorithm()
    hasher = Hasher()
    validator(files_checksum=hasher).validate_initialize(
        initialize_request(make_dataset(), algorithm), with_files(make_dataset()), Resolved(algorithm, ALGO_FILES))
    assert (hasher.calls, hasher.cached_calls) == (0, 0)
    pinned = make_dataset(compute={"publisherTrustedAlgorithms": [{"did": algorithm.did, "filesChecksum": ALGO_FILES_CHECKSUM}]})
    plan = validator(files_checksum=hasher).validate_initialize(
        initialize_request(pinned, algorithm), with_files(pinned), Resolved(algorithm, ALGO_FILES))
    assert hasher.cached_calls == 1 and plan.algorithm.checksums == ()


# ---------------------------------------------------------------- s3 file places


PUBLISHER_B = "0x" + "b" * 40
S3_OF_A = {"type": "s3", "bucket": "publisher-a-data", "objectKey": "private/customers.csv"}


def s3_places(raw: dict) -> Any:
    from chalicelib.config import S3FileSources

    return S3FileSources.parse(json.dumps(raw))


def test_s3_files_only_from_places_the_operator_gave_their_publisher():
    """Issue 10 #5: publisher B points a dataset at publisher A's object: refused at start and
    at initializeCompute; A itself may use it."""
    places = s3_places({"arn:aws:s3:::publisher-a-data/private/": [PUBLISHER],
                        "arn:aws:s3:::shared-data": ["*"]})
    algorithm = make_algorithm()
    theirs = make_dataset(ddo_extra={"nft": {"owner": PUBLISHER_B, "state": 0}})
    ours = make_dataset(2, ddo_extra={"nft": {"owner": PUBLISHER, "state": 0}})
    check = validator(s3_sources=places)
    assert refused(lambda: check.validate_start(
        start_request(theirs, algorithm), [Resolved(theirs, (S3_OF_A,))], Resolved(algorithm, ALGO_FILES))) == {
        "dataset": "s3_source_not_allowed"}
    assert refused(lambda: check.validate_initialize(
        initialize_request(theirs, algorithm), [Resolved(theirs, (S3_OF_A,))], Resolved(algorithm, ALGO_FILES))) == {
        "dataset": "s3_source_not_allowed"}
    check.validate_start(start_request(ours, algorithm), [Resolved(ours, (S3_OF_A,))], Resolved(algorithm, ALGO_FILES))
    shared = {"type": "s3", "bucket": "shared-data", "objectKey": "any/key"}
    check.validate_start(start_request(theirs, algorithm), [Resolved(theirs, (shared,))], Resolved(algorithm, ALGO_FILES))
    for spec in ({**S3_OF_A, "objectKey": "public/x"}, {**S3_OF_A, "objectKey": "private/../public/x"},
                 {**S3_OF_A, "bucket": "publisher-a-data-2"}, {"type": "s3", "bucket": 7, "objectKey": "k"}):
        assert refused(lambda: check.validate_start(
            start_request(ours, algorithm), [Resolved(ours, (spec,))], Resolved(algorithm, ALGO_FILES))) == {
            "dataset": "s3_source_not_allowed"}, spec


def test_s3_algorithm_files_follow_the_same_rule_and_no_setting_means_no_s3():
    places = s3_places({"arn:aws:s3:::publisher-a-data/private/*": [PUBLISHER]})
    dataset = make_dataset()
    stolen = make_algorithm(owner=PUBLISHER_B)
    assert refused(lambda: validator(s3_sources=places).validate_start(
        start_request(dataset, stolen), with_files(dataset), Resolved(stolen, (S3_OF_A,)))) == {
        "algorithm": "s3_source_not_allowed"}
    assert refused(lambda: validator().validate_start(
        start_request(dataset, make_algorithm()), with_files(dataset), Resolved(make_algorithm(), (S3_OF_A,)))) == {
        "algorithm": "s3_source_not_allowed"}


@pytest.mark.parametrize("raw", ['[]', '{"bucket": ["*"]}', '{"arn:aws:s3:::b": "0xab"}',
                                 '{"arn:aws:s3:::bkt": ["not-an-address"]}', 'not json'])
def test_s3_file_sources_setting_is_checked(raw):
    from chalicelib.config import S3FileSources
    from chalicelib.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="S3_FILE_SOURCES"):
        S3FileSources.parse(raw)


def test_trusted_publisher_is_the_algorithm_nft_owner_compared_without_case():
    algorithm = make_algorithm(owner=PUBLISHER)
    dataset = make_dataset(compute={"publisherTrustedAlgorithmPublishers": [PUBLISHER.lower()]})
    validator().validate_start(start_request(dataset, algorithm), with_files(dataset), Resolved(algorithm, ALGO_FILES))


def test_an_access_service_may_be_an_additional_input_and_skips_algorithm_rules():
    main = make_dataset(1, compute={"allowRawAlgorithm": True})
    extra = make_dataset(2, service_type="access")
    plan = validator().validate_start(start_request(main, meta=RAW_META, additional=[extra]), with_files(main, extra))
    assert [(d.resource, d.service_type) for d in plan.datasets] == [("dataset", "compute"), ("datasets[1]", "access")]


def test_document_id_decides_whatever_meta_rides_along():
    """Ocean's CLI sends the DDO's algorithm section as `meta` beside the documentId: the
    published algorithm is what runs (its container, files and trust), as in Ocean Node."""
    dataset, algorithm = make_dataset(compute={"allowRawAlgorithm": True}), make_algorithm()
    request = start_request(dataset, algorithm, meta={"container": {"image": "evil", "entrypoint": "sh"}})
    assert request.algorithm.meta is None and not request.algorithm.is_raw
    plan = validator().validate_start(request, with_files(dataset), Resolved(algorithm, ALGO_FILES))
    assert not plan.algorithm.is_raw and plan.algorithm.did == algorithm.did
    assert plan.algorithm.container["image"] != "evil"
    unknown = start_request(dataset, meta=RAW_META, documentId="did:op:" + "0" * 64)
    with pytest.raises(BusinessError) as refused:
        validator().validate_start(unknown, with_files(dataset), Resolved(None))
    assert refused.value.error == {"algorithm.documentId": "did_not_found"}


def test_initialize_accepts_unordered_inputs_and_keeps_valid_until():
    dataset, algorithm = make_dataset(), make_algorithm()
    request = validate(InitializeComputeRequest, {
        "datasets": [{"documentId": dataset.did, "serviceId": "svc-1"}],
        "algorithm": {"documentId": algorithm.did, "serviceId": "algo-svc-1"},
        "compute": {"env": "cpu", "validUntil": NOW + 600}, "consumerAddress": CONSUMER})
    plan = validator().validate_initialize(request, with_files(dataset), Resolved(algorithm, ALGO_FILES))
    assert plan.valid_until == NOW + 600
    assert [(o.resource, o.transfer_tx_id) for o in plan.orders()] == [("dataset", None), ("algorithm", None)]


def test_service_endpoint_is_checked_only_when_a_provider_url_is_configured():
    dataset = make_dataset(compute={"allowRawAlgorithm": True}, endpoint="HTTPS://Provider.Example.com:443/")
    validator(provider_url=PROVIDER_URL).validate_start(start_request(dataset, meta=RAW_META), with_files(dataset))
    elsewhere = make_dataset(compute={"allowRawAlgorithm": True}, endpoint="https://other.example.com")
    validator().validate_start(start_request(elsewhere, meta=RAW_META), with_files(elsewhere))
    assert refused(lambda: validator(provider_url=PROVIDER_URL).validate_start(
        start_request(elsewhere, meta=RAW_META), with_files(elsewhere))) == {
        "dataset.serviceId": "compute_services_not_in_same_provider"}


@pytest.mark.parametrize("a, b, same", [
    ("https://p.example.com", "https://p.example.com/", True),
    ("http://P.example.com:80/api", "http://p.example.com/api/", True),
    ("https://p.example.com:8443", "https://p.example.com", False),
    ("https://p.example.com/api", "https://p.example.com", False),
    ("http://p.example.com", "https://p.example.com", False),
    ("https://p.example.com:notaport", "https://p.example.com", False),
])
def test_same_endpoint(a: str, b: str, same: bool):
    assert same_endpoint(a, b) is same


# ---------------------------------------------------------------- environment


def test_unknown_environment_is_the_original_plain_message():
    dataset = make_dataset(compute={"allowRawAlgorithm": True})
    error = refused(lambda: validator().validate_start(start_request(dataset, meta=RAW_META, environment="gpu"), with_files(dataset)))
    assert error == "Compute environment does not exist"


def test_environment_must_serve_the_chain_of_every_input():
    dataset = make_dataset(compute={"allowRawAlgorithm": True})
    request = start_request(dataset, meta=RAW_META, environment="mainnet-only")
    assert refused(lambda: validator().validate_start(request, with_files(dataset))) == {"environment": "chain_not_supported"}
    algorithm = make_algorithm(chain_id=1)
    request = start_request(make_dataset(), algorithm)
    assert refused(lambda: validator().validate_start(request, with_files(make_dataset()), Resolved(algorithm, ALGO_FILES))) == {
        "environment": "chain_not_supported"}


def test_initialize_refuses_a_valid_until_that_is_not_in_the_future():
    dataset = make_dataset(compute={"allowRawAlgorithm": True})
    request = validate(InitializeComputeRequest, {
        "datasets": [{"documentId": dataset.did, "serviceId": "svc-1"}], "algorithm": {"meta": RAW_META},
        "compute": {"env": "cpu", "validUntil": str(NOW)}, "consumerAddress": CONSUMER})
    assert refused(lambda: validator().validate_initialize(request, with_files(dataset))) == "The validUntil value is not correct."


# ---------------------------------------------------------------- raw algorithms


@pytest.mark.parametrize("compute", [{"allowRawAlgorithm": False}, None, {"allowRawAlgorithm": "true"}])
def test_raw_algorithm_needs_allow_raw_algorithm(compute):
    dataset = make_dataset(compute=compute)
    if compute is None:
        dataset.ddo["services"][0].pop("compute")
    assert refused(lambda: validator().validate_start(start_request(dataset, meta=RAW_META), with_files(dataset))) == {
        "dataset": "no_raw_algo_allowed"}


def test_raw_algorithm_must_be_allowed_by_every_compute_input():
    main, extra = make_dataset(1, compute={"allowRawAlgorithm": True}), make_dataset(2)
    assert refused(lambda: validator().validate_start(
        start_request(main, meta=RAW_META, additional=[extra]), with_files(main, extra))) == {"datasets[1]": "no_raw_algo_allowed"}


@pytest.mark.parametrize("meta, error", [
    ({"rawcode": "", "url": "", "container": CONTAINER}, {"algorithm": "meta_oneof_url_rawcode_remote"}),
    ({"rawcode": "x", "container": {**CONTAINER, "entrypoint": ""}}, {"algorithm.container": "missing_entrypoint_image_checksum"}),
    ({"rawcode": "x", "container": {**CONTAINER, "image": ""}}, {"algorithm.container": "missing_entrypoint_image_checksum"}),
    ({"rawcode": "x", "container": {**CONTAINER, "checksum": "md5:abc"}}, {"algorithm.container": "checksum_prefix"}),
])
def test_raw_algorithm_meta_rules(meta, error):
    dataset = make_dataset(compute={"allowRawAlgorithm": True})
    assert refused(lambda: validator().validate_start(start_request(dataset, meta=meta), with_files(dataset))) == error


# ---------------------------------------------------------------- the algorithm asset


def _start(dataset: Asset, algorithm: Asset | None, algo_files: Any = ALGO_FILES, found: Asset | None = None, **kwargs: Any):
    request = start_request(dataset, algorithm, **kwargs)
    resolved = Resolved(found if found is not None else algorithm, algo_files)
    return lambda: validator().validate_start(request, with_files(dataset), resolved)


def test_algorithm_did_that_does_not_resolve():
    algorithm = make_algorithm()
    request = start_request(make_dataset(), algorithm)
    assert refused(lambda: validator().validate_start(request, with_files(make_dataset()), Resolved(None))) == {
        "algorithm.documentId": "did_not_found"}
    assert refused(lambda: validator().validate_start(request, with_files(make_dataset()))) == {
        "algorithm.documentId": "did_not_found"}


def test_algorithm_must_be_an_algorithm_asset():
    not_algo = make_algorithm(asset_type="dataset")
    assert refused(_start(make_dataset(), not_algo)) == {"algorithm": "not_algo"}
    dataset = make_dataset()
    request = validate(InitializeComputeRequest, {
        "datasets": [{"documentId": dataset.did, "serviceId": "svc-1"}],
        "algorithm": {"documentId": not_algo.did, "serviceId": "algo-svc-1"},
        "compute": {"env": "cpu", "validUntil": NOW + 60}, "consumerAddress": CONSUMER})
    assert refused(lambda: validator().validate_initialize(request, with_files(dataset), Resolved(not_algo, ALGO_FILES))) == (
        "DID is not a valid algorithm")


def test_algorithm_service_rules():
    algorithm = make_algorithm()
    assert refused(_start(make_dataset(), algorithm, serviceId=None)) == {"algorithm.serviceId": "missing"}
    assert refused(_start(make_dataset(), algorithm, serviceId="nope")) == {"algorithm.serviceId": "not_found"}
    odd = make_algorithm(service_type="wrong")
    assert refused(_start(make_dataset(), odd)) == {"algorithm.serviceId": "service_not_access_compute"}
    make_algorithm(service_type="compute")  # a compute service is fine too
    compute_algo = make_algorithm(2, service_type="compute")
    validator().validate_start(start_request(make_dataset(), compute_algo), with_files(make_dataset()), Resolved(compute_algo, ALGO_FILES))


def test_algorithm_files_this_provider_cannot_decrypt():
    algorithm = make_algorithm()
    assert refused(_start(make_dataset(), algorithm, algo_files=None)) == {"algorithm": "file_unavailable"}
    assert refused(_start(make_dataset(), algorithm, algo_files=[])) == {"algorithm": "file_unavailable"}


def test_start_needs_the_algorithm_order():
    algorithm = make_algorithm()
    assert refused(_start(make_dataset(), algorithm, transferTxId=None)) == {"algorithm.transferTxId": "missing"}


def test_a_container_without_checksum_is_accepted():
    """Unlike the original Provider (Ocean Node takes one too): every start pins the image to the
    digest its tag resolves to (compute.image_digests), so the checksum is the publisher's promise
    to check, not what keeps the image fixed (tests/owner/test_image_pinning.py)."""
    dataset = make_dataset(compute={"allowRawAlgorithm": True})
    plan = validator().validate_start(start_request(dataset, meta={"rawcode": "x", "container": {**CONTAINER, "checksum": ""}}),
                                      with_files(dataset))
    assert plan.algorithm.container["checksum"] == ""
    algorithm = make_algorithm(container={**CONTAINER, "checksum": ""})
    assert _start(make_dataset(), algorithm)().algorithm.did == algorithm.did


@pytest.mark.parametrize("container, code", [
    ({"image": "python", "tag": "3"}, "missing_entrypoint_image_checksum"),
    ({**CONTAINER, "entrypoint": ""}, "missing_entrypoint_image_checksum"),
    ({**CONTAINER, "checksum": "ab" * 32}, "checksum_prefix"),
])
def test_published_algorithm_container_must_be_complete(container, code):
    algorithm = make_algorithm(container=container)
    assert refused(_start(make_dataset(), algorithm)) == {"algorithm.container": code}


def test_algorithm_credentials_and_state():
    denied = make_algorithm(ddo_extra={"credentials": {"deny": [{"type": "address", "values": [CONSUMER.upper().replace("0X", "0x")]}]}})
    assert refused(_start(make_dataset(), denied)) == {
        "algorithm.credentials": f"Error: Access to asset {denied.did} was denied with code: 4."}
    no_metadata = make_algorithm(ddo_extra={"metadata": {}})
    assert refused(_start(make_dataset(), no_metadata)) == {"algorithm": "not_algo"}
    revoked = make_algorithm()
    revoked.ddo["nft"]["state"] = 3
    assert refused(_start(make_dataset(), revoked)) == {"algorithm.credentials": "Asset is not consumable."}


# ---------------------------------------------------------------- the datasets


def test_dataset_did_that_does_not_resolve_is_named_by_position():
    main, extra = make_dataset(1, compute={"allowRawAlgorithm": True}), make_dataset(2)
    request = start_request(main, meta=RAW_META, additional=[extra])
    assert refused(lambda: validator().validate_start(request, [Resolved(None), Resolved(extra, DATA_FILES)])) == {
        "dataset.documentId": "did_not_found"}
    assert refused(lambda: validator().validate_start(request, [Resolved(main, DATA_FILES), Resolved(None)])) == {
        "datasets[1].documentId": "did_not_found"}


def test_dataset_service_must_exist_and_main_one_be_compute():
    dataset = make_dataset(compute={"allowRawAlgorithm": True})
    request = validate(ComputeStartRequest, {**start_request(dataset, meta=RAW_META).model_dump(),
                                             "dataset": {"documentId": dataset.did, "serviceId": "other", "transferTxId": tx(1)}})
    assert refused(lambda: validator().validate_start(request, with_files(dataset))) == {"dataset.serviceId": "not_found"}
    access = make_dataset(service_type="access")
    assert refused(lambda: validator().validate_start(start_request(access, meta=RAW_META), with_files(access))) == {
        "dataset.serviceId": "main_service_compute"}
    main, odd = make_dataset(1, compute={"allowRawAlgorithm": True}), make_dataset(2, service_type="wrong")
    assert refused(lambda: validator().validate_start(start_request(main, meta=RAW_META, additional=[odd]), with_files(main, odd))) == {
        "datasets[1].serviceId": "service_not_access_compute"}


@pytest.mark.parametrize("files", [None, []])
def test_dataset_files_this_provider_cannot_decrypt(files):
    dataset = make_dataset(compute={"allowRawAlgorithm": True})
    assert refused(lambda: validator().validate_start(start_request(dataset, meta=RAW_META), [Resolved(dataset, files)])) == {
        "dataset.serviceId": "compute_services_not_in_same_provider"}


@pytest.mark.parametrize("state, ok", [(0, True), (5, True), (1, False), (2, False), (3, False), (4, False)])
def test_dataset_nft_state(state, ok):
    dataset = make_dataset(compute={"allowRawAlgorithm": True}, state=state)
    call = lambda: validator().validate_start(start_request(dataset, meta=RAW_META), with_files(dataset))  # noqa: E731
    if ok:
        call()
    else:
        assert refused(call) == {"dataset": "Asset is not consumable."}


@pytest.mark.parametrize("credentials, code", [
    ({"allow": [{"type": "address", "values": [CONSUMER]}]}, 0),
    ({"allow": [{"type": "address", "values": [PUBLISHER]}]}, 3),
    ({"deny": [{"type": "address", "values": [CONSUMER]}]}, 4),
    ({"deny": [{"type": "address", "values": [PUBLISHER]}]}, 0),
    (json.dumps({"allow": [{"type": "address", "values": [PUBLISHER]}]}), 3),
    ({"allow": [{"type": "address"}]}, 3),  # malformed: nobody gets in
    ({"allow": [{"type": "other", "values": ["x"]}]}, 0),
])
def test_dataset_address_credentials(credentials, code):
    dataset = make_dataset(compute={"allowRawAlgorithm": True}, ddo_extra={"credentials": credentials})
    call = lambda: validator().validate_start(start_request(dataset, meta=RAW_META), with_files(dataset))  # noqa: E731
    if code == 0:
        call()
    else:
        assert refused(call) == {"dataset": f"Error: Access to asset {dataset.did} was denied with code: {code}."}


# ---------------------------------------------------------------- trusted algorithms


def _trusting(compute: dict, algorithm: Asset | None = None, hasher: Hasher | None = None, **validator_args: Any):
    algorithm = algorithm or make_algorithm()
    dataset = make_dataset(compute=compute)
    args = {"files_checksum": hasher or Hasher(), **validator_args}
    return lambda: validator(**args).validate_start(
        start_request(dataset, algorithm), with_files(dataset), Resolved(algorithm, ALGO_FILES))


def test_algorithm_publisher_not_trusted():
    assert refused(_trusting({"publisherTrustedAlgorithmPublishers": [CONSUMER]})) == {"dataset": "not_trusted_algo_publisher"}
    unknown_owner = make_algorithm(owner=None)
    assert refused(_trusting({"publisherTrustedAlgorithmPublishers": [PUBLISHER]}, unknown_owner)) == {
        "dataset": "not_trusted_algo_publisher"}


def test_algorithm_not_in_trusted_algorithms():
    other = make_algorithm(7)
    compute = {"publisherTrustedAlgorithms": [{"did": other.did, "filesChecksum": "", "containerSectionChecksum": ""}]}
    assert refused(_trusting(compute)) == {"dataset": "not_trusted_algo"}


def test_both_lists_must_accept_the_algorithm_as_in_the_original():
    other = make_algorithm(7)
    compute = {"publisherTrustedAlgorithmPublishers": [PUBLISHER],
               "publisherTrustedAlgorithms": [{"did": other.did}]}
    assert refused(_trusting(compute)) == {"dataset": "not_trusted_algo"}


def test_trusted_algorithm_entry_without_did():
    assert refused(_trusting({"publisherTrustedAlgorithms": [{"filesChecksum": "x"}]})) == {
        "dataset": "no_publisherTrustedAlgorithms"}


def test_trusted_algorithm_checksum_mismatches():
    algorithm = make_algorithm()
    files_wrong = {"publisherTrustedAlgorithms": [
        {"did": algorithm.did, "filesChecksum": "00" * 64, "containerSectionChecksum": ALGO_CONTAINER_CHECKSUM}]}
    assert refused(_trusting(files_wrong, algorithm)) == {"dataset": "algorithm_file_checksum_mismatch"}
    container_wrong = {"publisherTrustedAlgorithms": [
        {"did": algorithm.did, "filesChecksum": ALGO_FILES_CHECKSUM, "containerSectionChecksum": "00" * 32}]}
    assert refused(_trusting(container_wrong, algorithm)) == {"dataset": "algorithm_container_checksum_mismatch"}
    # the container checksum is the algorithm DDO's: another entrypoint is another checksum
    moved = make_algorithm(container={**CONTAINER, "entrypoint": "python3 $ALGO"})
    pinned = {"publisherTrustedAlgorithms": [{"did": moved.did, "containerSectionChecksum": ALGO_CONTAINER_CHECKSUM}]}
    assert refused(_trusting(pinned, moved)) == {"dataset": "algorithm_container_checksum_mismatch"}


def test_changed_algorithm_files_no_longer_match():
    algorithm = make_algorithm()
    compute = {"publisherTrustedAlgorithms": [{"did": algorithm.did, "filesChecksum": ALGO_FILES_CHECKSUM}]}
    tampered = Hasher({**CONTENTS, "https://files.example.com/lib.py": b"import os; os.system('curl evil')\n"})
    assert refused(_trusting(compute, algorithm, tampered)) == {"dataset": "algorithm_file_checksum_mismatch"}
    _trusting(compute, algorithm, Hasher())()


def test_files_checksum_that_cannot_be_computed_is_file_unavailable():
    algorithm = make_algorithm()
    compute = {"publisherTrustedAlgorithms": [{"did": algorithm.did, "filesChecksum": ALGO_FILES_CHECKSUM}]}
    assert refused(_trusting(compute, algorithm, Hasher(fail=True))) == {"algorithm": "file_unavailable"}
    dataset = make_dataset(compute=compute)
    no_hasher = ComputeValidator(PROVIDER, ENVIRONMENTS, clock=lambda: NOW)
    assert refused(lambda: no_hasher.validate_start(
        start_request(dataset, algorithm), with_files(dataset), Resolved(algorithm, ALGO_FILES))) == {"algorithm": "file_unavailable"}


def test_a_hasher_that_reports_its_own_error_is_not_masked():
    algorithm = make_algorithm()
    dataset = make_dataset(compute={"publisherTrustedAlgorithms": [{"did": algorithm.did, "filesChecksum": ALGO_FILES_CHECKSUM}]})

    class Unavailable(Hasher):
        def digests(self, files: Any) -> list[str]:
            raise ServiceUnavailable("file store is down")

    with pytest.raises(ServiceUnavailable):
        validator(files_checksum=Unavailable()).validate_start(
            start_request(dataset, algorithm), with_files(dataset), Resolved(algorithm, ALGO_FILES))


def test_any_matching_entry_accepts_exact_ones_first():
    algorithm = make_algorithm()
    compute = {"publisherTrustedAlgorithms": [
        {"did": algorithm.did, "filesChecksum": "00" * 64},
        {"did": algorithm.did, "filesChecksum": ALGO_FILES_CHECKSUM}]}
    _trusting(compute, algorithm)()
    wildcard_then_bad = {"publisherTrustedAlgorithms": [
        {"did": "*", "containerSectionChecksum": "*", "filesChecksum": "*", "serviceId": "another"},
        {"did": algorithm.did, "containerSectionChecksum": "11" * 32}]}
    assert refused(_trusting(wildcard_then_bad, algorithm)) == {"dataset": "algorithm_container_checksum_mismatch"}


def test_entry_service_id_extension():
    algorithm = make_algorithm()
    _trusting({"publisherTrustedAlgorithms": [{"did": algorithm.did, "serviceId": "algo-svc-1"}]}, algorithm)()
    assert refused(_trusting({"publisherTrustedAlgorithms": [{"did": algorithm.did, "serviceId": "x"}]}, algorithm)) == {
        "dataset": "not_trusted_algo"}


def test_empty_trust_lists_can_be_closed_by_configuration():
    assert refused(_trusting({}, open_when_unrestricted=False)) == {"dataset": "not_trusted_algo"}


def test_every_compute_input_must_trust_the_algorithm():
    algorithm = make_algorithm()
    main = make_dataset(1)
    extra = make_dataset(2, compute={"publisherTrustedAlgorithms": [{"did": "did:op:" + "1" * 64}]})
    assert refused(lambda: validator().validate_start(
        start_request(main, algorithm, additional=[extra]), with_files(main, extra), Resolved(algorithm, ALGO_FILES))) == {
        "datasets[1]": "not_trusted_algo"}


# ---------------------------------------------------------------- orders and userdata


def test_one_order_cannot_pay_for_two_inputs():
    main, extra = make_dataset(1, compute={"allowRawAlgorithm": True}), make_dataset(2, compute={"allowRawAlgorithm": True})
    body = start_request(main, meta=RAW_META, additional=[extra]).model_dump()
    body["additionalInputs"][0]["transferTxId"] = tx(1)
    request = validate(ComputeStartRequest, body)
    assert refused(lambda: validator().validate_start(request, with_files(main, extra))) == {"datasets[1].transferTxId": "duplicate"}
    algorithm = make_algorithm()
    request = start_request(make_dataset(), algorithm, transferTxId=tx(1))
    assert refused(lambda: validator().validate_start(request, with_files(make_dataset()), Resolved(algorithm, ALGO_FILES))) == {
        "algorithm.transferTxId": "duplicate"}


PARAMETERS = [
    {"name": "rows", "type": "number", "label": "Rows", "required": True, "default": "10", "description": ""},
    {"name": "mode", "type": "select", "label": "Mode", "required": False, "default": "fast", "description": "",
     "options": [{"fast": "Fast"}, {"slow": "Slow"}]},
    {"name": "verbose", "type": "boolean", "label": "Verbose", "required": False, "default": False, "description": ""},
    {"name": "title", "type": "text", "label": "Title", "required": False, "default": "", "description": ""},
]


@pytest.mark.parametrize("userdata, outcome", [
    ({"rows": 5}, {"rows": 5, "mode": "fast", "verbose": False, "title": ""}),
    ({"rows": "5", "mode": "slow", "verbose": "true", "title": "t"}, {"rows": "5", "mode": "slow", "verbose": "true", "title": "t"}),
    ({}, {"dataset.userdata.rows": "missing"}),
    ({"rows": "many"}, {"dataset.userdata.rows": "invalid"}),
    ({"rows": True}, {"dataset.userdata.rows": "invalid"}),
    ({"rows": 1, "mode": "medium"}, {"dataset.userdata.mode": "invalid"}),
    ({"rows": 1, "verbose": "yes"}, {"dataset.userdata.verbose": "invalid"}),
    ({"rows": 1, "title": 3}, {"dataset.userdata.title": "invalid"}),
])
def test_dataset_userdata_against_consumer_parameters(userdata, outcome):
    dataset = make_dataset(compute={"allowRawAlgorithm": True}, consumerParameters=PARAMETERS)
    body = start_request(dataset, meta=RAW_META).model_dump()
    body["dataset"]["userdata"] = userdata
    call = lambda: validator().validate_start(validate(ComputeStartRequest, body), with_files(dataset))  # noqa: E731
    if "rows" in outcome:
        assert dict(call().datasets[0].userdata) == outcome
    else:
        assert refused(call) == outcome


def test_algorithm_userdata_against_its_consumer_parameters():
    algorithm = make_algorithm(consumerParameters=[PARAMETERS[0]])
    assert refused(_start(make_dataset(), algorithm)) == {"algorithm.userdata.rows": "missing"}
    plan = _start(make_dataset(), algorithm, userdata={"rows": 2})()
    assert dict(plan.algorithm.userdata) == {"rows": 2}
    in_metadata = make_algorithm(2)
    in_metadata.ddo["metadata"]["algorithm"]["consumerParameters"] = [PARAMETERS[1]]
    assert dict(_start(make_dataset(), in_metadata)().algorithm.userdata) == {"mode": "fast"}


# ---------------------------------------------------------------- the HTTP envelope


def test_a_refusal_is_the_original_400_envelope():
    dataset = make_dataset()
    error = refused(lambda: validator().validate_start(start_request(dataset, meta=RAW_META), with_files(dataset)))
    response = error_response(BusinessError(error))
    assert response.status_code == 400
    assert json.loads(response.body) == {"error": {"dataset": "no_raw_algo_allowed"}}


def test_resolved_inputs_must_align_with_the_request():
    dataset = make_dataset(compute={"allowRawAlgorithm": True})
    with pytest.raises(ValueError):
        validator().validate_start(start_request(dataset, meta=RAW_META), [])


def test_s3_file_sources_is_read_from_the_environment():
    import os

    from chalicelib.config import load_settings

    raw = json.dumps({"arn:aws:s3:::publisher-a-data/private": [PUBLISHER]})
    places = load_settings({**os.environ, "S3_FILE_SOURCES": raw}).s3_file_sources
    assert places.allows(PUBLISHER.upper().replace("0X", "0x"), "publisher-a-data", "private/x.csv")
    assert places.allows(PUBLISHER, "publisher-a-data", "private")
    assert not places.allows(PUBLISHER, "publisher-a-data", "private-not/x.csv")
    assert not places.allows(PUBLISHER_B, "publisher-a-data", "private/x.csv")
    assert load_settings({k: v for k, v in os.environ.items() if k != "S3_FILE_SOURCES"}).s3_file_sources.places == ()


# ---------------------------------------------------------------- image registries


def test_an_image_from_a_registry_not_allowed_is_refused_by_ddo_and_raw():
    """ALGORITHM_REGISTRIES is checked with the container fields, for a published algorithm and
    a raw one alike; an operator who lists the registry allows it."""
    from chalicelib.config import ImageRegistries

    private = {**CONTAINER, "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/tools"}
    refusal = {"algorithm.container": "image_registry_not_allowed"}
    assert refused(_start(make_dataset(), make_algorithm(container=private))) == refusal
    raw_dataset = make_dataset(compute={"allowRawAlgorithm": True})
    raw = start_request(raw_dataset, meta={**RAW_META, "container": private})
    assert refused(lambda: validator().validate_start(raw, with_files(raw_dataset))) == refusal
    allowed = validator(registries=ImageRegistries.parse("123456789012.dkr.ecr.us-east-1.amazonaws.com/tools"))
    assert allowed.validate_start(raw, with_files(raw_dataset)).algorithm.container == private
    assert refused(lambda: allowed.validate_start(start_request(raw_dataset, meta=RAW_META), with_files(raw_dataset))) == refusal
