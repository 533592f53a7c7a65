"""The start's catch-up through a child process (journal/catchup.py) on a real nats-server.

* the fold read by the child equals the fold read in-process (and the fold of the log), a
  malformed message and an event on a foreign subject in the middle recorded and skipped alike;
* a child killed mid-way, a fold that fails mid-way, a child that cannot connect: the follower
  reads the rest, every message folded exactly once, the start does not fail;
* the child hands over every message through ``upto`` in order, once, and nothing after.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from netledger.common.natsserver import EmbeddedNats
from netledger.events.codec import SYSTEM, Envelope, encode
from netledger.events.errors import Unavailable
from netledger.events.host_events import HostReconciled
from netledger.events.snapshot import state_to_wire
from netledger.journal.catchup import Reader, read_in_child
from netledger.journal.stream import Connection, connect, ensure_stream, last_seq, stream_config
from netledger.replay.verify_snapshot import fold_to as fold_from_log
from netledger.service.client import Client
from netledger.service.service import CommandService
from netledger.service.snapshotter import SnapshotPolicy

FAST = SnapshotPolicy(every_events=5, min_interval=0.0, check_interval=0.05)


async def _history(conn: Connection, host_events: int = 0) -> int:
    """Networks, allocations and leases through the service; a malformed message and an event
    on a foreign subject in the middle; then ``host_events`` executor reports (published
    without waiting for each ack). Returns the last sequence."""
    svc = CommandService(conn, reap_interval=None)
    await svc.start()
    client = Client(conn)
    try:
        await client.request(
            "network.create",
            {"label": "n", "cidr": "10.20.0.0/16", "num_networks": 2, "network_size": 256,
             "mode": "vxlan", "vni_start": 500},
        )  # fmt: skip
        for i in range(20):
            r = await client.request(
                "fixed_ip.allocate",
                {"instance": f"i-{i}", "project": "p1", "host": "h1"},
                command_id=f"alloc-{i}",
            )
            if i % 3 == 0:
                await client.request(
                    "fixed_ip.lease",
                    {"address": r["address"], "mac": r["mac"]},
                    command_id=f"lease-{i}",
                )
        await conn.js.publish("netledger.evt.host.h1", b"\xc1 not msgpack")
        foreign = Envelope(HostReconciled("h2", 1, 0, 0, 1.0), "x:0", "x", 1.0, SYSTEM)
        await conn.js.publish("netledger.evt.host.h1", encode(foreign))
        for i in range(20, 30):
            await client.request(
                "fixed_ip.allocate",
                {"instance": f"i-{i}", "project": "p1", "host": "h1"},
                command_id=f"alloc-{i}",
            )
    finally:
        await svc.close()
    start = await last_seq(conn)
    for i in range(host_events):
        env = Envelope(HostReconciled(f"h{i % 7}", i, 0, 0, 1.0), f"r{i}:0", f"r{i}", 2.0, SYSTEM)
        await conn.nc.publish(f"netledger.evt.host.h{i % 7}", encode(env))
    await conn.nc.flush()
    for _ in range(1000):  # stored by the server soon after it received them
        end = await last_seq(conn)
        if end >= start + host_events:
            return end
        await asyncio.sleep(0.01)
    raise AssertionError(f"the stream holds {end - start} of {host_events} host events")


async def _started(conn: Connection, child_catch_up: int | None) -> CommandService:
    svc = CommandService(conn, reap_interval=None, child_catch_up=child_catch_up)
    await svc.start()
    return svc


def _same(a: CommandService, b: CommandService, rejected: bool = True) -> None:
    """The same fold; ``rejected=False``: but for the messages each recorded as rejected (a
    start from a snapshot folds, and so rejects, only what follows it)."""
    assert state_to_wire(a.state) == state_to_wire(b.state)
    assert a.follower.applied_seq == b.follower.applied_seq
    assert list(a.seen) == list(b.seen)
    assert [list(v) for v in a.seen.values()] == [list(v) for v in b.seen.values()]
    if not rejected:
        return
    assert [(r.seq, r.subject, r.reason) for r in a.rejected] == [
        (r.seq, r.subject, r.reason) for r in b.rejected
    ]
    assert a.rejected_total == b.rejected_total


async def test_the_fold_read_by_a_child_equals_the_fold_read_in_process(conn: Connection) -> None:
    end = await _history(conn)
    child = await _started(conn, 1)
    inproc = await _started(conn, None)
    try:
        assert child.fold_report.by_child == end
        assert child.fold_report.events == end
        assert inproc.fold_report.by_child == 0
        _same(child, inproc)
        # the malformed message and the foreign event: recorded and skipped
        assert child.rejected_total == 2
        reasons = [r.reason for r in child.rejected]
        assert any("not msgpack" in r for r in reasons)
        assert any("does not belong on netledger.evt.host.h1" in r for r in reasons)
        assert state_to_wire(child.state) == state_to_wire(await fold_from_log(conn, end))
        # and it goes on following the log as ever
        await Client(conn).request(
            "fixed_ip.allocate", {"instance": "i-late", "project": "p1", "host": "h1"}
        )
        await child.follower.catch_up()
        await inproc.follower.catch_up()
        _same(child, inproc)
    finally:
        await child.close()
        await inproc.close()


def at_fold_of(svc: CommandService, seq: int, action: Callable[[], None]) -> list[int]:
    """Run ``action`` once, right after ``svc``'s catch-up folds ``seq``; the returned list gets
    ``seq`` when it ran."""
    fold = svc._fold_raw
    ran: list[int] = []

    def folded(s: int, subject: str, data: bytes) -> None:
        fold(s, subject, data)
        if s == seq and not ran:
            ran.append(s)
            action()

    svc._fold_raw = folded  # type: ignore[method-assign]
    return ran


def _signal_children(sig: int) -> list[int]:
    """Send ``sig`` to this process's forked children; their pids."""
    pids = _forked_children()
    for pid in pids:
        os.kill(pid, sig)
    return pids


def _forked_children() -> list[int]:
    """Processes forked from this one (same executable; not the nats-server it started)."""
    me = os.getpid()
    exe = os.path.realpath(f"/proc/{me}/exe")
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == me and os.path.realpath(entry / "exe") == exe:
                out.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


async def test_a_child_killed_mid_way_leaves_the_rest_to_the_follower(
    conn: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    # More than the pipe holds (1 MiB): the child is still reading when it is killed.
    end = await _history(conn, host_events=12_000)
    svc = CommandService(conn, reap_interval=None, child_catch_up=1)
    killed: list[int] = []
    at_fold_of(svc, 100, lambda: killed.extend(_signal_children(signal.SIGKILL)))
    with caplog.at_level(logging.WARNING, logger="netledger.catchup"):
        await svc.start()
    inproc = await _started(conn, None)
    try:
        assert killed, "no catch-up child to kill"
        assert 100 <= svc.fold_report.by_child < end
        assert svc.fold_report.events == end
        assert "reading the rest in this process" in caplog.text
        _same(svc, inproc)
    finally:
        await svc.close()
        await inproc.close()
    assert not _forked_children()  # collected


async def test_a_fold_failing_mid_way_is_retried_by_the_follower(conn: Connection) -> None:
    end = await _history(conn)
    svc = CommandService(conn, reap_interval=None, child_catch_up=1)
    fold = svc._fold_raw
    failed: list[int] = []

    def fail_once_at_30(seq: int, subject: str, data: bytes) -> None:
        if seq == 30 and not failed:
            failed.append(seq)
            raise RuntimeError("a bug")
        fold(seq, subject, data)

    svc._fold_raw = fail_once_at_30  # type: ignore[method-assign]
    await svc.start()
    inproc = await _started(conn, None)
    try:
        assert failed == [30]
        assert svc.fold_report.by_child == 29
        assert svc.follower.handled == end - 29
        _same(svc, inproc)
    finally:
        await svc.close()
        await inproc.close()


async def test_the_child_hands_over_each_message_once_in_order_up_to_the_end(
    conn: Connection,
) -> None:
    end = await _history(conn, host_events=3000)
    seen: list[int] = []
    reached, n = await read_in_child(conn, 5, end - 10, lambda seq, s, d: seen.append(seq))
    assert (reached, n) == (end - 10, end - 14)
    assert seen == list(range(5, end - 9))
    assert await read_in_child(conn, end + 1, end, lambda *_: None) == (end, 0)


async def test_a_child_that_cannot_connect_leaves_everything_to_the_caller(
    nats_server: EmbeddedNats, caplog: pytest.LogCaptureFixture
) -> None:
    # The child tries for its connection's bound (connect_timeout * 2 + 1): 2 s, not 5
    c = await connect(nats_server.url, name="test", allow_reconnect=False, connect_timeout=0.5)
    try:
        await ensure_stream(c)
        nats_server.stop()
        with caplog.at_level(logging.WARNING, logger="netledger.catchup"):
            got = await read_in_child(c, 1, 10, lambda *_: None)
        assert got == (0, 0)
        assert "catch-up reader stopped at seq 0 of 10" in caplog.text
    finally:
        await c.close()


async def test_a_gap_in_the_log_stops_the_child_there(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """This log never has one (nothing is deleted); a stream that allows deletes stands in for
    a message the reader lost: the child hands over what comes before it, no more."""
    c = await connect(nats_url, name="test")
    try:
        config = stream_config()
        config.deny_delete = False
        await c.js.add_stream(config)
        for i in range(20):
            env = Envelope(HostReconciled("h1", i, 0, 0, 1.0), f"r{i}:0", f"r{i}", 2.0, SYSTEM)
            await c.js.publish("netledger.evt.host.h1", encode(env))
        await c.js.delete_msg(c.stream, 10)
        seen: list[int] = []
        with caplog.at_level(logging.WARNING, logger="netledger.catchup"):
            got = await read_in_child(c, 1, 20, lambda seq, s, d: seen.append(seq))
        assert got == (9, 9)
        assert seen == list(range(1, 10))
        assert "stopped at seq 9 of 20 (a gap in the log)" in caplog.text
    finally:
        await c.close()


async def test_a_reader_forked_early_and_not_needed_is_stopped(conn: Connection) -> None:
    """The reader is forked before the snapshot is loaded; when the tail after it is short,
    the follower reads it and the reader is stopped unused."""
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
    end = await last_seq(conn)
    again = CommandService(
        conn, reap_interval=None, snapshots=SnapshotPolicy(every_events=0), child_catch_up=10
    )
    await again.start()
    try:
        assert again.snapshotter is not None and again.snapshotter.stats.loaded_seq == end
        loaded = again.snapshotter.stats.loaded_seconds
        assert loaded is not None and 0 < loaded <= again.ready_seconds
        assert again.fold_report.by_child == 0
        assert not _forked_children()
        assert state_to_wire(again.state) == state_to_wire(await fold_from_log(conn, end))
    finally:
        await again.close()


async def test_a_long_fold_at_the_start_is_announced_once(
    conn: Connection, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``serve`` says so before a start that folds a long stretch (seconds of it) — and says
    nothing before a short one."""
    from netledger import serve
    from netledger.service import service as service_mod

    end = await _history(conn)
    told: list[tuple[int, int, int | None]] = []
    for notice in (end, end + 1):
        monkeypatch.setattr(service_mod, "CATCH_UP_NOTICE", notice)
        svc = CommandService(conn, reap_interval=None)
        svc.on_catch_up = lambda *args: told.append(args)
        await svc.start()
        await svc.close()
    assert told == [(1, end, None)]
    serve._say_catching_up(1, 1_000_003, None)
    serve._say_catching_up(500_001, 510_000, 500_000)
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "netledger: the command service folds 1,000,003 events of the log (no snapshot)"
        " before it is ready",
        "netledger: the command service folds 10,000 events of the log (after its snapshot at"
        " seq 500,000) before it is ready",
    ]


async def test_the_reader_takes_stored_messages_from_the_parser(
    conn: Connection, tmp_path: Path
) -> None:
    """The child's reader (``catchup._read``, run here in this process on a connection of its
    own, writing its frames to a file) hands stored messages from nats-py's parser straight to
    its handler (journal/fastread.py), and the frames hold every message through ``upto`` in
    order: the first ones small (the fold starts after 32 messages, not 512), then doubling."""
    import pickle
    import struct

    from netledger.journal import catchup

    end = await _history(conn, host_events=1500)
    url = conn.nc.connected_url
    assert url is not None
    own = await connect(url.geturl(), stream=conn.stream)
    out = tmp_path / "frames"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT)
    try:
        reached = await catchup._read(fd, own.nc, conn.stream, 3, end - 5)
    finally:
        os.close(fd)
        await own.close()
    assert "_process_msg" in vars(own.nc), "stored messages took nats-py's callback path"
    assert reached == end - 5
    data, got, sizes = out.read_bytes(), [], []
    while data:
        (n,) = struct.unpack_from("<I", data)
        kind, value = pickle.loads(data[4 : 4 + n])
        data = data[4 + n :]
        if kind == "msgs":
            got += [seq for seq, _, _ in value]
            sizes.append(len(value))
    assert got == list(range(3, end - 4))
    assert sizes[:6] == [32, 64, 128, 256, 512, 512]
    assert catchup.FIRST_CHUNK == 32 and catchup.CHUNK == 512


async def test_the_fold_is_prepared_while_the_child_starts_reading(conn: Connection) -> None:
    """``prepare`` runs once the child is asked for the stretch, before the first message is
    folded; one that fails changes nothing (the fold builds what it needs at its first
    message)."""
    from netledger.journal.catchup import Reader

    end = await _history(conn)
    for fails in (False, True):
        folded: list[int] = []
        prepared: list[int] = []

        def prepare(
            fails: bool = fails, folded: list[int] = folded, prepared: list[int] = prepared
        ) -> None:
            prepared.append(len(folded))
            if fails:
                raise RuntimeError("a bug")

        reader = Reader.fork(conn)
        assert reader is not None
        got = await reader.read(1, end, lambda seq, s, d, f=folded: f.append(seq), prepare=prepare)
        assert got == (end, end) and folded == list(range(1, end + 1)) and prepared == [0]
    assert not _forked_children()


async def test_a_reader_closed_and_cancelled_in_its_reap_leaves_no_zombie(
    conn: Connection,
) -> None:
    """A cancellation that lands while :meth:`Reader.close` waits for the killed child (a
    second cancellation of the start while its ``finally`` drops the reader) still collects
    the child: none is left a zombie. The kill lands within microseconds, so the cancellation
    lands in the wait only when the child had not exited at the first look: tried until it
    did."""
    landed = 0
    for _ in range(50):
        reader = Reader.fork(conn)
        assert reader is not None
        closing = asyncio.create_task(reader.close())
        await asyncio.sleep(0)  # close() runs up to its first wait for the child
        if closing.done():  # the child was gone at the first look: nothing to cancel
            await closing
        else:
            closing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await closing
            landed += 1
        assert _collected(reader.pid)
        if landed >= 3:
            break
    assert landed >= 3


def _collected(pid: int) -> bool:
    """Whether child ``pid`` was collected already (if not, it is now: no zombie stays)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


@pytest.mark.parametrize("child", [True, False], ids=["read_by_a_child", "read_in_process"])
async def test_a_close_while_the_start_catches_up_leaves_nothing_running(
    conn: Connection, child: bool
) -> None:
    """close() while start() folds a long log (serve told to stop meanwhile): the start is
    stopped and raises; no follower, subscription, task or child is left. Before, the start
    went on after the close, and left its follower, its subscriptions and its tasks running."""
    await _history(conn, host_events=3000)
    subs = set(conn.nc._subs)
    tasks = asyncio.all_tasks()
    svc = CommandService(conn, reap_interval=None, child_catch_up=10 if child else None)
    closing: list[asyncio.Task[None]] = []

    def close() -> None:
        closing.append(asyncio.create_task(svc.close()))

    if child:
        ran = at_fold_of(svc, 100, close)
    else:
        take, ran = svc._take, []

        def taken(seq: int, *rest: Any) -> None:
            take(seq, *rest)
            if seq == 100 and not ran:
                ran.append(seq)
                close()

        svc._take = taken  # type: ignore[method-assign]
    with pytest.raises(Unavailable, match="closed while it started"):
        await svc.start()
    await closing[0]
    # (asked for at seq 100; where the start is when the close lands varies: the rest of the
    # fold may be handled in the same turn of the loop)
    assert ran == [100]
    assert set(conn.nc._subs) == subs, "a subscription (the follower's) left"
    assert not _forked_children()
    assert svc.heartbeats is None and svc.snapshotter is None
    assert (svc._reaper, svc._reclaimer, svc._watchdog, svc._indexer) == (None,) * 4
    # (a task cancelled, such as a subscription's reader, ends at its next step)
    left = [t for t in asyncio.all_tasks() - tasks if not t.done() and not t.cancelling()]
    assert not left, [t.get_name() for t in left]
    with pytest.raises(Unavailable, match="closed"):  # and it does not start again
        await svc.start()
