"""The start's catch-up child asked for the tail while the snapshot is decoded
(service/tail_prefetch.py), on a real nats-server with real snapshots.

* the normal path: the child is asked for the tail after the snapshot before the snapshot is
  decoded, and has read some of it into the pipe while the decode has not ended;
* the newest snapshot refused after the child was asked (a corrupt or truncated body, a
  foreign fold version its headers do not tell): the start folds exactly what a start without
  snapshots folds — a fresh child asked from the older snapshot or from seq 1;
* the child killed after it was asked: the follower reads what it did not.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import struct
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from netledger.events import snapshot as snapshot_mod
from netledger.events.codec import SYSTEM, Envelope, encode
from netledger.events.host_events import HostReconciled
from netledger.events.snapshot import digest, dumps, encode_body, state_to_wire
from netledger.journal import catchup
from netledger.journal import snapshot_store as store_mod
from netledger.journal.snapshot_store import H_ANCHOR, H_SEQ, H_SHA, SnapshotStore
from netledger.journal.stream import Connection, last_seq
from netledger.replay.verify_snapshot import fold_to as fold_from_log
from netledger.service.service import CommandService
from netledger.service.snapshotter import SnapshotPolicy
from tests.service.test_catchup import FAST, _forked_children, _history, _same
from tests.service.test_snapshot_unusable_newer import _put

#: a start that loads snapshots and writes none
LOAD = SnapshotPolicy(every_events=0)


async def _host_events(conn: Connection, n: int, tag: str) -> int:
    """``n`` executor reports, published without waiting for each ack; the last sequence."""
    start = await last_seq(conn)
    for i in range(n):
        env = Envelope(HostReconciled(f"h{i % 7}", i, 0, 0, 1.0), f"{tag}{i}:0", tag, 2.0, SYSTEM)
        await conn.nc.publish(f"netledger.evt.host.h{i % 7}", encode(env))
    await conn.nc.flush()
    for _ in range(1000):  # stored by the server soon after it received them
        end = await last_seq(conn)
        if end >= start + n:
            return end
        await asyncio.sleep(0.01)
    raise AssertionError(f"the stream holds {end - start} of {n} host events")


async def _snapshot(conn: Connection) -> int:
    """The log so far, with a snapshot of it written by a service; the snapshot's sequence."""
    svc = CommandService(conn, reap_interval=None, snapshots=FAST)
    await svc.start()
    try:
        assert svc.snapshotter is not None
        for _ in range(400):
            if svc.snapshotter.stats.written:
                break
            await asyncio.sleep(0.05)
        assert svc.snapshotter.stats.written
    finally:
        await svc.close()
    return (await SnapshotStore(conn).snapshots())[0].seq


@dataclass
class _Watch:
    """What the start did, in order: the child asked (pid, start, upto); a snapshot body
    decoded (``("decode", seq, asks so far, bytes in the asked child's pipe)``)."""

    seen: list[tuple[Any, ...]] = field(default_factory=list)
    readers: list[catchup.Reader] = field(default_factory=list)
    #: run on the reader asked last, when a snapshot's decode begins
    at_decode: Callable[[catchup.Reader], None] | None = None

    def asks(self) -> list[tuple[int, int]]:
        return [(e[2], e[3]) for e in self.seen if e[0] == "ask"]

    def decodes(self) -> list[tuple[Any, ...]]:
        return [e[1:] for e in self.seen if e[0] == "decode"]


def _in_pipe(fd: int) -> int:
    """Bytes waiting in the pipe ``fd`` reads from."""
    return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])


def _wait_for_frames(reader: catchup.Reader) -> None:
    """Block (the decode would: this runs inside it) until the child wrote into its pipe."""
    for _ in range(3000):
        if _in_pipe(reader._frames_fd) > 0:
            return
        time.sleep(0.01)
    raise AssertionError("the child asked for the tail sent nothing during the decode")


def _watch(monkeypatch: pytest.MonkeyPatch) -> _Watch:
    """Record the asks and the decodes of the real Reader and snapshot code."""
    w = _Watch()
    ask, loads = catchup.Reader.ask, store_mod.loads

    def asked(self: catchup.Reader, start: int, upto: int) -> None:
        w.seen.append(("ask", self.pid, start, upto))
        w.readers.append(self)
        ask(self, start, upto)

    def decoded(body: bytes, **kw: Any) -> snapshot_mod.Snapshot:
        reader = w.readers[-1] if w.readers else None
        if reader is not None and w.at_decode is not None:
            w.at_decode(reader)
        in_pipe = _in_pipe(reader._frames_fd) if reader is not None else 0
        w.seen.append(("decode", kw["stream_last_seq"], len(w.asks()), in_pipe))
        return loads(body, **kw)

    monkeypatch.setattr(catchup.Reader, "ask", asked)
    monkeypatch.setattr(store_mod, "loads", decoded)
    return w


async def _start(conn: Connection, **kw: Any) -> CommandService:
    svc = CommandService(conn, reap_interval=None, **kw)
    await svc.start()
    return svc


async def test_the_child_reads_the_tail_while_the_snapshot_is_decoded(
    conn: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _history(conn)
    snap = await _snapshot(conn)
    end = await _host_events(conn, 3000, "t")
    plain = await _start(conn, child_catch_up=None)
    w = _watch(monkeypatch)
    w.at_decode = _wait_for_frames
    again = await _start(conn, snapshots=LOAD, child_catch_up=10)
    try:
        assert again.snapshotter is not None and again.snapshotter.stats.loaded_seq == snap
        # asked for the tail, then the snapshot decoded — with the child's frames in the pipe
        assert w.asks() == [(snap + 1, end)]
        [(_, asks_then, in_pipe)] = w.decodes()
        assert asks_then == 1 and in_pipe > 0
        assert again.fold_report.by_child == end - snap
        _same(again, plain, rejected=False)
        assert state_to_wire(again.state) == state_to_wire(await fold_from_log(conn, end))
        assert not _forked_children()
    finally:
        await again.close()
        await plain.close()


async def _bad_snapshot(
    conn: Connection, svc: CommandService, damage: str, monkeypatch: pytest.MonkeyPatch
) -> int:
    """A snapshot of ``svc``'s fold (caught up with the log) whose headers pass the checks and
    whose body is refused once read; its sequence."""
    seq = await svc.follower.catch_up()
    created = (await conn.js.stream_info(conn.stream)).created.isoformat()
    with monkeypatch.context() as m:
        if damage == "foreign_fold":  # another netledger's, its headers without the version
            m.setattr(snapshot_mod, "FOLD_VERSION", snapshot_mod.FOLD_VERSION + 1)
        body = dumps(svc.state, svc.seen, seq=seq, stream=conn.stream, created=created)
    body = encode_body(body)
    sha = digest(body)
    if damage == "corrupt":
        body = body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]
    elif damage == "truncated":
        body = body[: len(body) // 2]
    anchor = await SnapshotStore(conn).anchor(seq)
    await _put(conn, seq, body, **{H_SEQ: str(seq), H_SHA: sha, H_ANCHOR: anchor})
    return seq


@pytest.mark.parametrize("older", [True, False], ids=["older_snapshot", "no_other_snapshot"])
@pytest.mark.parametrize("damage", ["corrupt", "truncated", "foreign_fold"])
async def test_a_snapshot_refused_after_the_child_was_asked_folds_what_no_snapshot_folds(
    conn: Connection, monkeypatch: pytest.MonkeyPatch, damage: str, older: bool
) -> None:
    """The child asked for the tail of the newest snapshot reads from the wrong place once
    that snapshot is refused: it is stopped, and a fresh one reads from the older snapshot
    (or from seq 1: none usable); the fold is the whole log's, each message once."""
    await _history(conn)
    good = await _snapshot(conn) if older else None
    await _host_events(conn, 1500, "a")
    svc = await _start(conn, child_catch_up=None)
    try:
        bad = await _bad_snapshot(conn, svc, damage, monkeypatch)
    finally:
        await svc.close()
    end = await _host_events(conn, 1500, "b")
    plain = await _start(conn, child_catch_up=None)
    w = _watch(monkeypatch)
    again = await _start(conn, snapshots=LOAD, child_catch_up=10)
    try:
        assert again.snapshotter is not None
        assert [s["seq"] for s in again.snapshotter.stats.skipped] == [bad]
        assert again.snapshotter.stats.loaded_seq == good
        start = good + 1 if good is not None else 1
        # asked for the bad one's tail before its decode; then from where the fold starts
        assert w.asks() == [(bad + 1, end), (start, end)]
        assert w.decodes()[0][1] == 1
        assert len({e[1] for e in w.seen if e[0] == "ask"}) == 2, "a fresh child"
        assert again.fold_report.by_child == end - start + 1
        assert again.fold_report.events == end - start + 1
        _same(again, plain, rejected=False)
        if good is None:  # (a snapshot does not carry what an earlier start refused)
            assert again.rejected_total == plain.rejected_total == 2
        assert not _forked_children()
    finally:
        await again.close()
        await plain.close()


async def test_a_child_killed_after_it_was_asked_leaves_the_rest_to_the_follower(
    conn: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _history(conn)
    snap = await _snapshot(conn)
    # More than the pipe holds (~185 bytes a message): the child cannot have sent it all
    end = await _host_events(conn, 15_000, "t")
    assert (end - snap) * 150 > 2 * catchup.PIPE_SIZE
    plain = await _start(conn, child_catch_up=None)
    w = _watch(monkeypatch)
    killed: list[int] = []

    def kill(reader: catchup.Reader) -> None:
        _wait_for_frames(reader)  # reading: some of the tail is the child's, the rest not
        os.kill(reader.pid, signal.SIGKILL)
        killed.append(reader.pid)

    w.at_decode = kill
    again = await _start(conn, snapshots=LOAD, child_catch_up=10)
    try:
        assert killed and w.asks() == [(snap + 1, end)]
        assert again.snapshotter is not None and again.snapshotter.stats.loaded_seq == snap
        assert 0 < again.fold_report.by_child < end - snap
        assert again.fold_report.events == end - snap
        _same(again, plain, rejected=False)
        assert not _forked_children()
    finally:
        await again.close()
        await plain.close()


async def test_a_snapshot_at_the_log_s_end_asks_the_child_for_nothing(
    conn: Connection, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Every tail read by the child (``child_catch_up=0``) and a snapshot at the log's end: the
    tail is empty. The child was asked for seq+1..seq; no message could end its read, and the
    start waited QUIET_S (20 s) for a frame, then warned the child had stopped short (review
    h126). An empty tail asks for nothing: the catch-up reads nothing, at once."""
    await _history(conn)
    snap = await _snapshot(conn)
    assert await last_seq(conn) == snap
    w = _watch(monkeypatch)
    caplog.set_level("WARNING", logger="netledger.catchup")
    again = await _start(conn, snapshots=LOAD, child_catch_up=0)
    try:
        assert again.snapshotter is not None and again.snapshotter.stats.loaded_seq == snap
        assert w.asks() == []
        stopped = [r.getMessage() for r in caplog.records if "stopped at seq" in r.getMessage()]
        assert not stopped
        assert again.follower.applied_seq == snap and again.fold_report.by_child == 0
        assert not _forked_children()
    finally:
        await again.close()


async def test_a_reader_asked_for_nothing_reads_nothing(conn: Connection) -> None:
    """Reader.read after an ask of an empty stretch: nothing to fold, no wait for the child
    (it waited QUIET_S for a frame no message could bring, review h126): answered at its
    first step, before the loop runs anything else."""
    await _history(conn)
    end = await last_seq(conn)
    reader = catchup.Reader.fork(conn)
    assert reader is not None
    folded: list[int] = []
    try:
        reader.ask(end + 1, end)
        read = asyncio.ensure_future(
            reader.read(end + 1, end + 100, lambda seq, _s, _d: folded.append(seq))
        )
        await asyncio.sleep(0)
        assert read.done(), "the read waits for the child"
        assert read.result() == (end, 0) and folded == []
    finally:
        await reader.close()
    assert not _forked_children()


@pytest.mark.parametrize(
    "error", [KeyError("future"), MemoryError()], ids=["KeyError", "MemoryError"]
)
async def test_an_unforeseen_decode_error_tries_the_older_snapshot(
    conn: Connection,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
) -> None:
    """A hash-valid body whose decode fails otherwise than :class:`SnapshotInvalid` (a future
    writer's): refused with a warning naming it and the error, and the older snapshot is
    loaded — before, the older ones were skipped and the whole log folded. Running out of
    memory is not a refusal: the start fails (no child left behind)."""
    await _history(conn)
    good = await _snapshot(conn)
    await _host_events(conn, 200, "a")
    newest = await _snapshot(conn)
    assert newest > good
    end = await _host_events(conn, 1500, "b")
    loads = store_mod.loads

    def failing(body: bytes, **how: Any) -> Any:
        snap = loads(body, **how)
        if snap.seq == newest:
            raise error
        return snap

    monkeypatch.setattr(store_mod, "loads", failing)
    if isinstance(error, MemoryError):
        svc = CommandService(conn, reap_interval=None, snapshots=LOAD, child_catch_up=10)
        with pytest.raises(MemoryError):
            await svc.start()
        await svc.close()
        assert not _forked_children()
        return
    plain = await _start(conn, child_catch_up=None)
    again = await _start(conn, snapshots=LOAD, child_catch_up=10)
    try:
        assert again.snapshotter is not None
        assert [s["seq"] for s in again.snapshotter.stats.skipped] == [newest]
        assert "undecodable: KeyError" in again.snapshotter.stats.skipped[0]["reason"]
        assert f"snapshot service-{newest:012d} (seq {newest}) not used: undecodable" in caplog.text
        assert again.snapshotter.stats.loaded_seq == good
        assert again.fold_report.events == end - good
        _same(again, plain, rejected=False)
        assert not _forked_children()
    finally:
        await again.close()
        await plain.close()
