"""Events the handler was not written for. tests/compute/test_events.py already drives real event
sequences in any order, duplicated, with unknown jobs and a fixed list of malformed events; this
adds generated corruption: realistic Batch and runner events with any part replaced by any JSON
value, removed or added. The handler must never raise, never report a store error, and never
move a job backwards or out of a terminal state."""
from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from chalicelib.compute import status as st
from test_events import batch_event, handler, load, make_job, runner_event, terminals  # noqa: F401 (fixtures)

JSON = hs.recursive(
    hs.none() | hs.booleans() | hs.integers(-2**70, 2**70) | hs.floats(allow_nan=True) | hs.text(max_size=40),
    lambda children: hs.lists(children, max_size=4) | hs.dictionaries(hs.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON document that can be replaced or removed."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, prefix + (index,))
    return found


def _corrupt(event: dict, data: hs.DataObject) -> dict:
    event = copy.deepcopy(event)
    for _ in range(data.draw(hs.integers(1, 4), label="corruptions")):
        paths = [path for path in _paths(event) if path]
        path = data.draw(hs.sampled_from(paths), label="where")
        parent = event
        for step in path[:-1]:
            parent = parent[step]
        how = data.draw(hs.sampled_from(["replace", "remove", "add"]), label="how")
        if how == "replace":
            parent[path[-1]] = data.draw(JSON, label="value")
        elif how == "remove":
            parent.pop(path[-1]) if isinstance(parent, dict) else parent.pop(path[-1])
        elif isinstance(parent, dict):
            parent[data.draw(hs.text(max_size=12), label="key")] = data.draw(JSON, label="value")
    return event


def _realistic(job_id: str) -> list[dict]:
    ok = {"configure": 0, "algorithm": 0, "publish": 0}
    return [batch_event(job_id, "RUNNING"), batch_event(job_id, "SUCCEEDED", exits=ok),
            batch_event(job_id, "FAILED", exits={**ok, "algorithm": 3}), batch_event(job_id, "FAILED", reason="c2d-stop: x"),
            runner_event(job_id, 30), runner_event(job_id, 31, reason="input 0: HTTP 404"), runner_event(job_id, 70)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=hs.data(), start=hs.sampled_from([1, 20, 40, 60, 70, 41, 7]))
def test_corrupted_events_never_crash_or_regress_a_job(handler, data, start):  # noqa: F811
    job_id = "j-" + str(data.draw(hs.integers(0, 10**9), label="job"))
    make_job(job_id, status=start)
    before = start
    for _ in range(data.draw(hs.integers(1, 4), label="events")):
        event = _corrupt(data.draw(hs.sampled_from(_realistic(job_id)), label="event"), data)
        outcome = handler.handle(event)
        assert outcome.action in ("ignored", "unchanged", "updated", "attached", "noted"), outcome
        after = int(load(job_id).status)
        assert st.rank(after) >= st.rank(before), (before, after, event)
        if st.is_terminal(before):
            assert after == before
        before = after
