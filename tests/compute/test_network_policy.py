"""allowNetworkAccess (issue 10 #3, C8): the algorithm may use the network only when EVERY
dataset's compute service says `allowNetworkAccess: true`; absent, any other value, or an access
service keep it sealed. The plan carries the verdict to Dispatcher.submit(allow_network=...),
where it picks the algorithm's UID (4000 sealed, 4001 networked: tests/compute/test_dispatch.py)
and the lifecycle test shows the whole start path sending it to Batch."""
from __future__ import annotations

from typing import Any

import pytest
from test_validation_compute import (
    ALGO_FILES,
    RAW_META,
    make_algorithm,
    make_dataset,
    start_request,
    validator,
    with_files,
)

from chalicelib.compute.plan import Resolved

ALLOWED = {"allowRawAlgorithm": True, "allowNetworkAccess": True}


def _without_key(n: int) -> Any:
    dataset = make_dataset(n, compute={"allowRawAlgorithm": True})
    dataset.ddo["services"][0]["compute"].pop("allowNetworkAccess")
    return dataset


@pytest.mark.parametrize("name, extra, expected", [
    ("every dataset allows it", lambda: [make_dataset(2, compute=ALLOWED)], True),
    ("one dataset forbids it", lambda: [make_dataset(2, compute={**ALLOWED, "allowNetworkAccess": False})], False),
    ("one dataset says nothing", lambda: [_without_key(2)], False),
    ("one dataset says it as text", lambda: [make_dataset(2, compute={**ALLOWED, "allowNetworkAccess": "true"})], False),
    ("one dataset says 1", lambda: [make_dataset(2, compute={**ALLOWED, "allowNetworkAccess": 1})], False),
    ("an access service has no compute options", lambda: [make_dataset(2, service_type="access")], False),
    ("the only dataset allows it", lambda: [], True),
])
def test_the_strictest_dataset_wins(name, extra, expected):
    main = make_dataset(1, compute=ALLOWED)
    others = extra()
    plan = validator().validate_start(start_request(main, meta=RAW_META, additional=others), with_files(main, *others))
    assert plan.allow_network is expected, name


def test_the_main_dataset_alone_can_seal_the_job():
    main = _without_key(1)
    plan = validator().validate_start(start_request(main, meta=RAW_META), with_files(main))
    assert plan.allow_network is False
    assert [d.allow_network for d in plan.datasets] == [False]


def test_a_published_algorithm_does_not_change_the_verdict():
    """The algorithm's own DDO has no say: only the data owners decide."""
    main, algorithm = make_dataset(1, compute={"allowNetworkAccess": False}), make_algorithm()
    algorithm.ddo["services"][0]["compute"] = {"allowNetworkAccess": True}
    request = start_request(main, algorithm)
    plan = validator().validate_start(request, with_files(main), Resolved(algorithm, ALGO_FILES))
    assert plan.allow_network is False
