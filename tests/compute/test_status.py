"""The status machine (DESIGN §3.6): table, terminal set, monotonic and sticky moves."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st_

from chalicelib.compute import status as st

ALL = sorted(st.STATUS_TEXT)
RUNNING = [1, 10, 20, 30, 40, 50, 60]
FINAL = [7, 31, 32, 41, 62, 70, 75, 76]


def test_table_matches_the_design():
    assert st.STATUS_TEXT == {
        1: "Warming up", 7: "Job stopped", 8: "Job deleted successfully", 10: "Job started",
        20: "Configuring volumes", 30: "Provisioning success", 31: "Data provisioning failed",
        32: "Algorithm provisioning failed", 40: "Running algorithm", 41: "Algorithm failed",
        50: "Filtering results", 60: "Publishing results", 62: "Results upload failed",
        70: "Job completed", 75: "Awaiting release", 76: "Results refused by the data owner",
    }
    assert st.TERMINAL == {7, 8, 31, 32, 41, 62, 70, 75, 76}
    assert [st.is_terminal(code) for code in ALL] == [code in st.TERMINAL for code in ALL]


def test_running_stages_only_move_forward():
    for index, current in enumerate(RUNNING):
        assert [st.can_move(current, later) for later in RUNNING[index + 1:]] == [True] * (len(RUNNING) - index - 1)
        assert not any(st.can_move(current, earlier) for earlier in RUNNING[: index + 1])


@pytest.mark.parametrize("current", RUNNING)
def test_any_outcome_may_end_a_running_job(current):
    # 31 may follow 40: Batch reports RUNNING while the configure stage is still working.
    assert all(st.can_move(current, final) for final in FINAL + [8])


@pytest.mark.parametrize("current", FINAL)
def test_outcomes_are_sticky_but_deletion_follows_them(current):
    assert not any(st.can_move(current, other) for other in ALL if other != 8)
    assert st.can_move(current, 8)


def test_deleted_is_the_end():
    assert not any(st.can_move(8, other) for other in ALL)


def test_duplicates_change_nothing():
    assert all(st.next_status(code, code) == code for code in ALL)


def test_unknown_codes():
    assert not st.can_move(1, 99) and st.next_status(40, 99) == 40
    assert not st.can_move(1, True)  # a JSON `true` is not status 1
    with pytest.raises(ValueError):
        st.can_move(99, 70)
    with pytest.raises(ValueError):
        st.status_text(3)


def test_predecessors_for_conditional_writes():
    assert st.predecessors(7) == tuple(RUNNING)
    assert st.predecessors(8) == tuple(sorted(RUNNING + FINAL))
    assert st.predecessors(40) == (1, 10, 20, 30)
    assert st.predecessors(1) == ()


@given(st_.lists(st_.sampled_from(ALL + [0, 99]), max_size=30))
def test_any_sequence_is_monotonic_and_sticky(proposals):
    current = 1
    finished_at = None
    for proposed in proposals:
        after = st.next_status(current, proposed)
        assert st.rank(after) >= st.rank(current)
        if st.is_terminal(current):
            assert after in (current, 8)
        if finished_at is None and st.is_terminal(after):
            finished_at = after
        current = after
    assert st.apply(1, proposals) == current
    # The first outcome reached is the final one, unless the job was deleted afterwards.
    assert current in (finished_at, 8) or finished_at is None
