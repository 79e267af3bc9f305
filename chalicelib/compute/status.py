"""The job status machine of DESIGN §3.6, as pure functions.

Status codes are not ordered by progress (7 "stopped" is a final state, 31 "data provisioning
failed" can end a job that Batch already reported as RUNNING = 40), so every comparison goes
through a progress *rank* instead of the raw code:

- the running stages 1 → 10 → 20 → 30 → 40 → 50 → 60 rank by how far the job got;
- every terminal outcome (7, 31, 32, 41, 62, 70) shares one rank above all running stages, so any
  of them may end a running job, and none of them may replace another: the first outcome sticks;
- 8 "deleted" ranks above everything: the owner may delete a job in any state, running or
  finished, and nothing happens to a deleted job afterwards.

75 "Awaiting release" is the end of a job that would be 70 while its results await their data
owner's release (chalicelib.owner.release): a terminal outcome like the others, which only the
owner's decision, a conditional write of its own, moves on (to 70, or 76 "Results refused by the
data owner"); no event can.

A move is allowed only to a strictly higher rank. That single rule makes status updates monotonic
(never backwards), terminal states sticky, and duplicates harmless (same rank: no move), whatever
order events arrive in.
"""
from __future__ import annotations

from typing import Iterable

STATUS_TEXT: dict[int, str] = {
    1: "Warming up",
    7: "Job stopped",
    8: "Job deleted successfully",
    10: "Job started",
    20: "Configuring volumes",
    30: "Provisioning success",
    31: "Data provisioning failed",
    32: "Algorithm provisioning failed",
    40: "Running algorithm",
    41: "Algorithm failed",
    50: "Filtering results",
    60: "Publishing results",
    62: "Results upload failed",
    70: "Job completed",
    75: "Awaiting release",
    76: "Results refused by the data owner",
}

WARMING_UP, STOPPED, DELETED = 1, 7, 8
STARTED, CONFIGURING, PROVISIONED = 10, 20, 30
DATA_FAILED, ALGORITHM_PROVISIONING_FAILED = 31, 32
RUNNING, ALGORITHM_FAILED, FILTERING = 40, 41, 50
PUBLISHING, PUBLISH_FAILED, COMPLETED = 60, 62, 70
AWAITING_RELEASE, RESULTS_REFUSED = 75, 76  # results held for the data owner (chalicelib.owner.release)

TERMINAL: frozenset[int] = frozenset({7, 8, 31, 32, 41, 62, 70, 75, 76})
RUNNING_STAGES: tuple[int, ...] = (1, 10, 20, 30, 40, 50, 60)
FAILURES: frozenset[int] = frozenset({31, 32, 41, 62})

_TERMINAL_RANK = 100
_DELETED_RANK = 200
_RANK: dict[int, int] = {
    **{code: index + 1 for index, code in enumerate(RUNNING_STAGES)},
    **{code: _TERMINAL_RANK for code in TERMINAL - {DELETED}},
    DELETED: _DELETED_RANK,
}


def is_known(code: object) -> bool:
    return isinstance(code, int) and not isinstance(code, bool) and code in _RANK


def rank(code: int) -> int:
    """How far a status is along the job's life; ValueError for a code outside the table."""
    if not is_known(code):
        raise ValueError(f"unknown job status {code!r}")
    return _RANK[code]


def status_text(code: int) -> str:
    rank(code)
    return STATUS_TEXT[code]


def is_terminal(code: int) -> bool:
    return rank(code) >= _TERMINAL_RANK


def can_move(current: int, proposed: int) -> bool:
    """Whether a job at `current` may move to `proposed` (strictly higher rank).

    An unknown proposed code is refused rather than raised: it comes from an event, and a bad
    event must never break the handler. An unknown current code is a corrupt record: raise."""
    if not is_known(proposed):
        return False
    return rank(proposed) > rank(current)


def next_status(current: int, proposed: int) -> int:
    """The status after proposing `proposed` to a job at `current`: one of the two."""
    return proposed if can_move(current, proposed) else current


def predecessors(proposed: int) -> tuple[int, ...]:
    """Every status from which `proposed` is reachable, for a DynamoDB `status IN (...)` condition
    (the job service's stop/delete writes use it so they never regress a concurrent update)."""
    target = rank(proposed)
    return tuple(sorted(code for code, value in _RANK.items() if value < target))


def apply(current: int, proposals: Iterable[int]) -> int:
    """Fold a sequence of proposals (what a job ends at after these events, in this order)."""
    for proposed in proposals:
        current = next_status(current, proposed)
    return current
