"""The write that ends a job gives its environment slot back in the same transaction."""
from __future__ import annotations

from typing import Any

import pytest

from chalicelib.compute.events import JobEvents
from chalicelib.compute.usage import UsageCounter
from chalicelib.models import EnvironmentUsage, JobRecord
from test_events import QUEUE, batch_event, load, make_job, runner_event


@pytest.fixture
def calls(aws):
    seen: list[str] = []
    events = JobRecord._get_connection().connection.client.meta.events

    def record(model: Any, params: dict, **_: Any) -> None:
        seen.append(model.name)

    events.register("provide-client-params.dynamodb", record)
    yield seen
    events.unregister("provide-client-params.dynamodb", record)


def writes(calls: list[str]) -> list[str]:
    return [name for name in calls if name in ("UpdateItem", "TransactWriteItems", "PutItem")]


def test_ending_event_frees_the_slot_in_one_transaction(calls):
    make_job("j", status=40)
    EnvironmentUsage(QUEUE, running=1).save()
    handler = JobEvents(queues={QUEUE}, release_slots=True)
    calls.clear()
    assert handler.handle(runner_event("j", 31, reason="input gone")).status == 31
    assert writes(calls) == ["TransactWriteItems"]
    assert UsageCounter().current([QUEUE]) == {QUEUE: 0} and load("j").status == 31

    calls.clear()
    for event in (runner_event("j", 31, reason="again"), batch_event("j", "FAILED", exits={"configure": 1})):
        handler.handle(event)
    assert writes(calls) == [], "a job that already ended frees nothing and writes nothing"
    assert UsageCounter().current([QUEUE]) == {QUEUE: 0}


def test_progress_events_stay_single_update_items(calls):
    make_job("j", status=1)
    handler = JobEvents(queues={QUEUE}, release_slots=True)
    calls.clear()
    handler.handle(batch_event("j", "RUNNING"))
    assert writes(calls) == ["UpdateItem"]
