"""The projector's linger: a live log's events go to the writer a frame at a time.

Sent one by one, each event of a trickle woke the writer's two processes and cost a commit of
its own (~600 us of CPU an event beside one allocating client); now the first event of a frame
waits up to ``linger`` for the others. What lingers when it stops is read again next time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from netledger.journal.stream import Connection
from netledger.projector.runner import Projector
from tests.projector.stream_helpers import publish_event, rows
from tests.projector.test_projector_unit import alloc, net


async def _read(p: Projector, seq: int) -> None:
    """Until the reader holds ``seq`` (read, not necessarily written)."""
    for _ in range(500):
        if p._enqueued >= seq:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the reader never got seq {seq} (at {p._enqueued})")


async def test_a_trickle_waits_for_its_frame_and_is_read_again_after_a_stop(
    conn: Connection, tmp_path: Path
) -> None:
    db = tmp_path / "p.db"
    await publish_event(conn, net("1"))
    p = Projector(conn, db, linger=3600.0)
    await p.start()
    try:
        await _read(p, 1)
        for i in range(2, 6):  # a trickle: one event at a time
            await publish_event(conn, alloc(f"10.0.0.{i}", f"i{i}"), i)
        await _read(p, 5)
        # Read, lingering in the frame: nothing went to the writer yet.
        assert p.last_seq == 0
        assert len(p._chunk) == 5
    finally:
        await p.close()
    assert rows(db, "SELECT last_seq FROM projection_state") == [(0,)]
    # The checkpoint is where the log is read again from: nothing lost, nothing twice.
    again = Projector(conn, db, linger=0)
    await again.start()
    try:
        await again.wait_for(5, 30)
    finally:
        await again.close()
    assert rows(db, "SELECT count(*) FROM fixed_ips") == [(4,)]


async def test_the_frame_goes_once_the_linger_is_over(conn: Connection, tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    p = Projector(conn, db, linger=0.05)
    await p.start()
    try:
        await publish_event(conn, net("1"))
        for i in range(2, 6):
            await publish_event(conn, alloc(f"10.0.0.{i}", f"i{i}"), i)
        await p.wait_for(5, 30)
        assert rows(db, "SELECT count(*) FROM fixed_ips") == [(4,)]
    finally:
        await p.close()


def test_a_negative_linger_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="linger"):
        Projector(None, tmp_path / "p.db", linger=-1)  # type: ignore[arg-type]


def test_the_clis_default_is_the_runners() -> None:
    from netledger.projector.options import LINGER_MS
    from netledger.projector.runner import LINGER

    assert LINGER_MS == LINGER * 1000
