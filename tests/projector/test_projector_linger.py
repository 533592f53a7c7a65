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


async def test_caught_up_it_leaves_the_socket_alone_while_its_frame_lingers(
    conn: Connection, nats_url: str, tmp_path: Path
) -> None:
    """On a connection of its own, a caught-up reader whose frame lingers stops reading the
    socket until the frame goes: a trickle's events wait in the kernel and are read together
    (the reader woke once an event). Nothing is lost or read twice across a pause."""
    from netledger.journal.stream import connect

    db = tmp_path / "p.db"
    own = await connect(nats_url, name="own")
    try:
        p = Projector(own, db, linger=3600.0, owns_connection=True)
        await p.start()
        try:
            assert p._fast, "the fast path is what may pause its socket"
            await publish_event(conn, net("1"))
            await _read(p, 1)
            assert p._read_paused is not None  # caught up, its frame lingering
            assert p.read_holds == 1
            for i in range(2, 6):
                await publish_event(conn, alloc(f"10.0.0.{i}", f"i{i}"), i)
            await asyncio.sleep(0.3)
            assert p._enqueued == 1, "the socket is not read while the frame lingers"
            p._send()  # what the linger's end does
            await p.wait_for(1, 30)
            await _read(p, 5)
            assert p._read_paused is not None and p.read_holds == 2  # and lingers again
            p._send()
            await p.wait_for(5, 30)
        finally:
            await p.close()
        assert p._read_paused is None
    finally:
        await own.close()
    assert rows(db, "SELECT count(*) FROM fixed_ips") == [(4,)]
    assert rows(db, "SELECT last_seq FROM projection_state") == [(5,)]


async def test_catching_up_it_never_pauses_its_socket(
    conn: Connection, nats_url: str, tmp_path: Path
) -> None:
    """Messages still pending on the consumer are read as fast as they come: only a reader at
    the log's end leaves its socket alone."""
    from netledger.journal.stream import connect

    await publish_event(conn, net("1"))
    for i in range(2, 40):
        await publish_event(conn, alloc(f"10.0.0.{i}", f"i{i}"), i)
    own = await connect(nats_url, name="own")
    try:
        p = Projector(own, tmp_path / "p.db", linger=3600.0, owns_connection=True)
        await p.start()
        try:
            await _read(p, 39)
            assert p.read_holds == 1  # once, at the end
        finally:
            await p.close()
    finally:
        await own.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_socket_pauses_and_resumes_on_either_event_loop(loop: str) -> None:
    """uvloop's transports are no ``asyncio.ReadTransport`` subclasses: the pause must not
    depend on that (it would silently never pause under uvloop)."""
    from types import SimpleNamespace

    from netledger.journal import fastread

    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        nc = SimpleNamespace(_transport=SimpleNamespace(_io_writer=writer))
        paused = fastread.pause_reading(nc)
        assert paused is writer.transport and not writer.transport.is_reading()
        assert fastread.pause_reading(nc) is None, "not reading: not ours to resume"
        fastread.resume_reading(paused)
        assert writer.transport.is_reading()
        writer.close()
        server.close()
        fastread.resume_reading(paused)  # gone meanwhile: nothing

    if loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


async def test_a_bounded_run_that_reaches_its_end_while_holding_after_a_reconnect_finishes(
    conn: Connection, tmp_path: Path
) -> None:
    """After a reconnect the reader holds what it reads until the log is seen to hold the message
    read before it (a store restored from an old copy). A bounded run (replay, audit) that read
    up to its last sequence meanwhile stopped reading — and its check of the log ran only while
    reading: the hold was never released, and the run waited for its end forever (a reviewer's
    finding, by reading)."""
    from tests.projector.test_projector_unit import alloc, net

    await publish_event(conn, net("1"))
    for i in range(2, 4):
        await publish_event(conn, alloc(f"10.0.0.{i}", f"i{i}"), i)
    p = Projector(conn, tmp_path / "p.db", to_seq=6, linger=0)
    p.watch_interval = 0.05
    await p.start()
    try:
        await _read(p, 3)
        await p.wait_for(3, 30)
        # A reconnect, as the connection reports one: its hooks, then its listeners.
        for hook in list(conn.reconnect_hooks):
            hook()
        assert p._held
        for i in range(4, 7):
            await publish_event(conn, alloc(f"10.0.0.{i}", f"i{i}"), i)
        await _read(p, 6)  # the end reached: it reads no more
        await asyncio.sleep(10 * p.watch_interval)  # the log's check had several turns
        assert p.last_seq == 3, "held"
        for ev in conn.reconnected:  # the reconnect's notice reaches the log's check
            ev.set()
        await p.wait_for(6, 10)  # hung here: held, and no longer checking the log
        assert not p._held
    finally:
        await p.close()
    assert rows(tmp_path / "p.db", "SELECT count(*) FROM fixed_ips") == [(5,)]
