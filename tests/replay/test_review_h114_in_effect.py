"""Review h114: which revert markers still stand (replay/revert_reads.py ``in_effect``): one
whose compensations a later revert undid, every one, no longer does — unless that later revert
stands only in part itself, when what it re-did is not told apart and the earlier one must
still refuse (never compensated twice). Pure: markers as ``reverted_seqs`` and their
compensations (the messages right before each marker)."""

from __future__ import annotations

from netledger.events.revert_compensate import StoredEvent
from netledger.events.revert_events import REVERT_SUBJECT, ChangeReverted
from netledger.replay.revert_reads import in_effect


def marker(seq: int, undid: list[int], compensations: int) -> StoredEvent:
    ev = ChangeReverted(
        reverted_command_id=None,
        after_seq=0,
        upto_seq=seq - compensations - 1,
        scope=None,
        reverted_seqs=undid,
        compensations=compensations,
    )
    return StoredEvent(seq, REVERT_SUBJECT, ev, f"revert-seq-{seq}")


def test_a_marker_whose_compensations_were_all_undone_no_longer_stands() -> None:
    m1 = marker(10, [5], 1)  # undid #5 with #9
    m2 = marker(20, [9], 1)  # undid #9 with #19: #5 is live again
    assert [m.seq for m in in_effect([m1, m2])] == [20]


def test_undone_and_undone_again_stands_again() -> None:
    m1 = marker(10, [5], 1)
    m2 = marker(20, [9], 1)
    m3 = marker(30, [19], 1)  # undid m2's compensation: m1 stands again
    assert [m.seq for m in in_effect([m1, m2, m3])] == [10, 30]


def test_a_marker_undone_in_part_still_stands() -> None:
    m1 = marker(10, [4, 5], 2)  # #8, #9
    m2 = marker(20, [9], 1)
    assert [m.seq for m in in_effect([m1, m2])] == [10, 20]


def test_a_later_revert_standing_only_in_part_does_not_undo_an_earlier_one() -> None:
    """m2 undid both of m1's compensations (#8, #9) with #18, #19; m3 undid #18 since (which of
    m1's events it re-did again is not recorded): m1 must still stand, else #5 (or #4) would
    be taken for live and compensated a second time."""
    m1 = marker(10, [4, 5], 2)
    m2 = marker(20, [8, 9], 2)
    m3 = marker(30, [18], 1)
    assert [m.seq for m in in_effect([m1, m2, m3])] == [10, 20, 30]


def test_an_old_marker_with_no_count_of_compensations_stands() -> None:
    m1 = marker(10, [5], 0)
    m2 = marker(20, [9], 1)
    assert [m.seq for m in in_effect([m1, m2])] == [10, 20]
