"""Review hrev7: the start's catch-up through a child process, adversarially."""

from __future__ import annotations

import asyncio
import logging
import signal

import pytest
from nats.aio.msg import Msg

from netledger.common.natsserver import EmbeddedNats
from netledger.events.codec import SYSTEM, Envelope, encode
from netledger.events.host_events import HostReconciled
from netledger.events.snapshot import state_to_wire
from netledger.journal import catchup
from netledger.journal.catchup import read_in_child
from netledger.journal.stream import Connection, last_seq
from netledger.service.service import CommandService
from tests.service.test_catchup import (
    _forked_children,
    _history,
    _same,
    _signal_children,
    _started,
    at_fold_of,
)


def test_seq_and_pending_reads_the_domain_reply_layout() -> None:
    """The reply subject's longer layout ($JS.ACK.<domain>.<hash>.<stream>.<consumer>.
    <delivered>.<sseq>.<cseq>.<ts>.<pending>.<token>): the child's callback path must read
    the stream sequence and pending where nats-py does."""
    for reply in (
        "$JS.ACK.hub.ACCHASH.EVENTS.cons.1.4242.7.1700000000000000000.13",
        "$JS.ACK.hub.ACCHASH.EVENTS.cons.1.4242.7.1700000000000000000.13.rNd0m",
    ):
        meta = Msg.Metadata._from_reply(reply)
        assert (meta.sequence.stream, meta.num_pending) == (4242, 13)
        assert catchup.seq_and_pending(reply) == (4242, 13), reply
    v1 = "$JS.ACK.EVENTS.cons.1.4242.7.1700000000000000000.13"
    meta1 = Msg.Metadata._from_reply(v1)
    assert catchup.seq_and_pending(v1) == (meta1.sequence.stream, meta1.num_pending)


async def test_a_stalled_child_is_given_up_on_and_the_follower_reads_the_rest(
    conn: Connection, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(catchup, "QUIET_S", 1.0)
    end = await _history(conn, host_events=12_000)
    svc = CommandService(conn, reap_interval=None, child_catch_up=1)
    stopped: list[int] = []
    at_fold_of(svc, 100, lambda: stopped.extend(_signal_children(signal.SIGSTOP)))
    with caplog.at_level(logging.WARNING, logger="netledger.catchup"):
        await asyncio.wait_for(svc.start(), 30)
    inproc = await _started(conn, None)
    try:
        assert stopped
        assert 100 <= svc.fold_report.by_child < end
        assert svc.fold_report.events == end
        assert "no message from the reader process" in caplog.text
        _same(svc, inproc)
    finally:
        await svc.close()
        await inproc.close()
    assert not _forked_children()


async def test_the_log_growing_during_the_childs_catch_up(conn: Connection) -> None:
    end = await _history(conn, host_events=12_000)
    svc = CommandService(conn, reap_interval=None, child_catch_up=1)
    folded: list[int] = []
    fold = svc._fold_raw

    def record(seq: int, subject: str, data: bytes) -> None:
        folded.append(seq)
        fold(seq, subject, data)

    svc._fold_raw = record  # type: ignore[method-assign]

    async def grow() -> None:
        for i in range(3000):
            env = Envelope(
                HostReconciled(f"g{i % 5}", i, 0, 0, 1.0), f"g{i}:0", f"g{i}", 2.0, SYSTEM
            )
            await conn.nc.publish(f"netledger.evt.host.g{i % 5}", encode(env))
            if i % 100 == 0:
                await asyncio.sleep(0)
        await conn.nc.flush()

    grower = asyncio.create_task(grow())
    await svc.start()
    await grower
    for _ in range(500):
        if await last_seq(conn) >= end + 3000:
            break
        await asyncio.sleep(0.01)
    await svc.follower.catch_up()
    inproc = await _started(conn, None)
    try:
        assert folded == list(range(1, len(folded) + 1))
        assert svc.follower.applied_seq == end + 3000
        _same(svc, inproc)
    finally:
        await svc.close()
        await inproc.close()
    assert not _forked_children()


async def test_an_ordered_consumer_reset_in_the_child_hands_each_message_once(
    conn: Connection,
) -> None:
    """The child's consumer deleted on the server mid-way: nats-py's ordered consumer is
    recreated from the last sequence it delivered; the fold still gets each message once."""
    end = await _history(conn, host_events=12_000)
    seen: list[int] = []
    deleted: list[str] = []

    async def delete_consumers() -> None:
        for _ in range(200):
            names = [c.name for c in await conn.js.consumers_info(conn.stream)]
            if names:
                for n in names:
                    await conn.js.delete_consumer(conn.stream, n)
                    deleted.append(n)
                return
            await asyncio.sleep(0.01)

    task: list[asyncio.Task[None]] = []

    def fold(seq: int, s: str, d: bytes) -> None:
        seen.append(seq)
        if seq == 50 and not task:
            task.append(asyncio.ensure_future(delete_consumers()))

    got = await read_in_child(conn, 1, end, fold)
    if task:
        await task[0]
    assert deleted
    assert seen == list(range(1, got[0] + 1))
    assert got[0] == end, got


async def test_the_early_reader_reads_from_the_snapshot_or_from_1_when_none_is_loaded(
    conn: Connection,
) -> None:
    from netledger.service.snapshotter import SnapshotPolicy
    from tests.service.test_catchup import FAST

    await _history(conn)
    svc = CommandService(conn, reap_interval=None, snapshots=FAST)
    await svc.start()
    try:
        for _ in range(400):
            if svc.snapshotter is not None and svc.snapshotter.stats.written:
                break
            await asyncio.sleep(0.05)
        assert svc.snapshotter is not None and svc.snapshotter.stats.written
    finally:
        await svc.close()
    snap_end = await last_seq(conn)
    for i in range(3000):
        env = Envelope(HostReconciled(f"h{i % 7}", i, 0, 0, 1.0), f"t{i}:0", f"t{i}", 2.0, SYSTEM)
        await conn.nc.publish(f"netledger.evt.host.h{i % 7}", encode(env))
    await conn.nc.flush()
    for _ in range(500):
        end = await last_seq(conn)
        if end >= snap_end + 3000:
            break
        await asyncio.sleep(0.01)
    inproc = await _started(conn, None)
    try:
        for load in (True, False):
            again = CommandService(
                conn,
                reap_interval=None,
                snapshots=SnapshotPolicy(every_events=0, load=load),
                child_catch_up=10,
            )
            await again.start()
            try:
                assert again.fold_report.by_child == (end - snap_end if load else end)
                assert state_to_wire(again.state) == state_to_wire(inproc.state)
                assert again.follower.applied_seq == end
                assert not _forked_children()
            finally:
                await again.close()
    finally:
        await inproc.close()


async def test_frames_split_anywhere_and_a_partial_last_frame() -> None:
    """The parent's side: frames cut at every byte, a fold raising mid-frame, a frame cut short
    by the child's death: each message folded once, in order, and ``reached`` is the last one
    folded."""
    msgs = [(s, "netledger.evt.host.h1", bytes([s % 256]) * 7) for s in range(1, 41)]
    data = (
        catchup.frame(("msgs", msgs[:15]))
        + catchup.frame(("msgs", msgs[15:30]))
        + catchup.frame(("msgs", msgs[30:]))
    )
    for cut in range(1, len(data)):
        got: list[int] = []
        f = catchup._Frames(lambda seq, s, d, got=got: got.append(seq), 1, 40)
        f.data_received(data[:cut])
        f.data_received(data[cut:-3])  # the last frame never complete
        f.connection_lost(None)
        assert got == list(range(1, 31)) and f.reached == 30 and f.events == 30
        assert f.failure == "the reader process exited before the end"

    got = []

    def fails_at_20(seq: int, s: str, d: bytes) -> None:
        if seq == 20:
            raise RuntimeError("bug")
        got.append(seq)

    f = catchup._Frames(fails_at_20, 5, 35)
    f.data_received(data + catchup.frame(("end", 40)))
    assert got == list(range(5, 20)) and f.reached == 19 and f.events == 15
    assert f.failure == "the fold failed at seq 20"


async def test_reaching_upto_ends_the_read_without_the_child_s_end_frame() -> None:
    """Once every message through ``upto`` is folded the read is over: a child stopped
    before its "end" frame (killed, stalled) does not hold the start for QUIET_S."""
    msgs = [(s, "netledger.evt.host.h1", b"x") for s in range(1, 11)]
    got: list[int] = []
    f = catchup._Frames(lambda seq, s, d: got.append(seq), 1, 10)
    f.data_received(catchup.frame(("msgs", msgs[:6])))
    assert not f.ended.done()
    f.data_received(catchup.frame(("msgs", msgs[6:])))
    assert f.ended.done() and f.failure is None and f.reached == 10 and got == list(range(1, 11))
    f.data_received(catchup.frame(("end", 10)))  # when it does come: nothing changes
    f.connection_lost(None)
    assert f.failure is None and f.events == 10


async def test_a_nats_restart_mid_way_does_not_hold_the_start_for_quiet_s(
    nats_server: EmbeddedNats,
) -> None:
    """The child's connection (no reconnects) is gone: the child should end at once and the
    follower read the rest, not wait QUIET_S (20 s) for a child that waits forever."""
    import time

    from netledger.journal.stream import connect, ensure_stream

    c = await connect(nats_server.url, name="test")
    try:
        await ensure_stream(c)
        end = await _history(c, host_events=12_000)
        svc = CommandService(c, reap_interval=None, child_catch_up=1)
        restarted = at_fold_of(svc, 100, nats_server.restart)
        t0 = time.monotonic()
        await svc.start()
        took = time.monotonic() - t0
        try:
            assert restarted
            assert svc.follower.applied_seq == end
            assert svc.fold_report.by_child < end
            assert took < catchup.QUIET_S / 2, f"the start took {took:.1f}s"
        finally:
            await svc.close()
    finally:
        await c.close()
    assert not _forked_children()
