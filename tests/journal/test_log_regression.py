"""A log that goes back (store restored from an older copy) stops readers loudly."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path
from typing import Any

import pytest

from netledger.common.natsserver import EmbeddedNats, free_port
from netledger.events.errors import LogRegression, Unavailable
from netledger.journal.stream import check_regression, connect, ensure_stream, last_seq
from netledger.service.client import Client
from netledger.service.service import CommandService


def test_check_regression_pure() -> None:
    check_regression(10, 10)
    check_regression(11, 10)
    with pytest.raises(LogRegression) as e:
        check_regression(9, 10)
    assert e.value.details == {"stream_last_seq": 9, "seen_seq": 10}
    assert "9" in e.value.message and "10" in e.value.message


async def test_service_stops_when_the_store_is_restored_from_an_old_copy(tmp_path: Path) -> None:
    port = free_port()
    server = EmbeddedNats(data_dir=tmp_path / "nats", port=port, sync_interval="always")
    server.start()
    conn = await connect(server.url)
    svc: CommandService | None = None
    try:
        await ensure_stream(conn)
        svc = CommandService(conn, reap_interval=None)
        svc.watch_interval = 0.3
        await svc.start()
        c = Client(conn)
        c.deadline = 5.0
        [net] = await c.create_networks(label="n", cidr="10.6.0.0/24", mode="flat")
        await c.allocate_fixed_ip("i-1", network_id=net["id"])
        # Take a copy of the store (server stopped so the copy is consistent).
        server.stop()
        shutil.copytree(tmp_path / "nats" / "jetstream", tmp_path / "old-store")
        server.start()
        await asyncio.sleep(0.5)
        for k in range(2, 6):
            await c.allocate_fixed_ip(f"i-{k}", network_id=net["id"])
        seen = await last_seq(conn)
        # Restore the old copy under the running service.
        server.stop()
        shutil.rmtree(tmp_path / "nats" / "jetstream")
        shutil.copytree(tmp_path / "old-store", tmp_path / "nats" / "jetstream")
        server.start()
        assert svc.failed is not None
        err = await asyncio.wait_for(svc.failed, 30)
        assert isinstance(err, LogRegression)
        assert err.details["seen_seq"] == seen
        assert err.details["stream_last_seq"] < seen
        # It no longer decides anything: nothing is appended to the old log.
        before = await last_seq(conn)
        with pytest.raises(Unavailable):
            await c.allocate_fixed_ip("i-9", network_id=net["id"])
        assert await last_seq(conn) == before
    finally:
        if svc is not None:
            await svc.close()
        await conn.close()
        server.stop()


async def test_projector_and_executor_stop_on_a_restored_store(tmp_path: Path) -> None:
    """The store is restored from an older copy under a running projector and executor: both
    stop with the regression error; nothing from the old log is applied."""
    import subprocess

    from netledger.executor.daemon import run_executor
    from netledger.executor.desired import HostConfig
    from netledger.executor.options import Options
    from netledger.projector.runner import Projector

    port = free_port()
    server = EmbeddedNats(data_dir=tmp_path / "nats", port=port, sync_interval="always")
    server.start()
    ns = f"nlg-{port}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    conn = await connect(server.url)
    svc = CommandService(conn, reap_interval=None)
    proj = Projector(conn, tmp_path / "p.db")
    proj.watch_interval = 0.3
    executor: asyncio.Task[object] | None = None
    try:
        await ensure_stream(conn)
        await svc.start()
        c = Client(conn)
        c.deadline = 5.0
        [net] = await c.create_networks(label="n", cidr="10.6.0.0/24", mode="flat")
        await c.allocate_fixed_ip("i-1", network_id=net["id"])
        server.stop()
        shutil.copytree(tmp_path / "nats" / "jetstream", tmp_path / "old-store")
        server.start()
        await asyncio.sleep(0.5)
        for k in range(2, 6):
            await c.allocate_fixed_ip(f"i-{k}", network_id=net["id"])
        await proj.start()
        executor = asyncio.create_task(
            run_executor(conn, HostConfig(host="hx"), Options(netns=ns, watch_interval=0.3), False)
        )
        seen = await proj.catch_up()
        await asyncio.sleep(1.0)  # the executor is following too
        assert not executor.done()
        await svc.close()
        server.stop()
        shutil.rmtree(tmp_path / "nats" / "jetstream")
        shutil.copytree(tmp_path / "old-store", tmp_path / "nats" / "jetstream")
        server.start()
        failure = await asyncio.wait_for(proj.wait_failed(), 30)
        assert isinstance(failure, LogRegression)
        # the executor's own host events came after `seen`
        assert failure.details["seen_seq"] >= seen > failure.details["stream_last_seq"]
        with pytest.raises(LogRegression):
            await asyncio.wait_for(executor, 30)
        # New writes on the old log are not applied by the stopped projector.
        await conn.js.publish("netledger.evt.registry", b"junk-on-the-old-log")
        await asyncio.sleep(0.5)
        assert proj.last_seq == failure.details["seen_seq"]
    finally:
        if executor is not None and not executor.done():
            executor.cancel()
            await asyncio.gather(executor, return_exceptions=True)
        await proj.close()
        await svc.close()
        await conn.close()
        server.stop()
        subprocess.run(["ip", "netns", "delete", ns], check=False)


async def test_readers_stop_when_the_restored_store_was_written_past_them(tmp_path: Path) -> None:
    """The store is restored from an older copy and written past where the readers were before
    they are back (another writer, while their server was away): the stream's last sequence is
    no lower than what they saw, so only its message at their newest sequence tells. The
    command service and the projector stop with ``log_diverged`` at the reconnect; nothing of
    the new log is folded or projected."""
    from netledger.events.errors import LogDiverged
    from netledger.projector.runner import Projector

    server = EmbeddedNats(data_dir=tmp_path / "nats", port=free_port(), sync_interval="always")
    server.start()
    store = tmp_path / "nats" / "jetstream"
    conn = await connect(server.url)
    svc = CommandService(conn, reap_interval=None)
    svc.watch_interval = 0.3
    proj = Projector(conn, tmp_path / "p.db")
    proj.watch_interval = 0.3
    try:
        await ensure_stream(conn)
        await svc.start()
        c = Client(conn)
        c.deadline = 5.0
        [net] = await c.create_networks(label="n", cidr="10.6.0.0/24", mode="flat")
        await c.allocate_fixed_ip("i-1", network_id=net["id"])
        server.stop()
        shutil.copytree(store, tmp_path / "old-store")
        server.start()
        await asyncio.sleep(0.5)
        for k in range(2, 6):
            await c.allocate_fixed_ip(f"i-{k}", network_id=net["id"])
        await proj.start()
        seen = await proj.catch_up()
        assert await svc.follower.catch_up() == seen

        server.stop()
        shutil.rmtree(store)
        shutil.copytree(tmp_path / "old-store", store)
        # Written past `seen` on another port, where the readers are not.
        elsewhere = EmbeddedNats(data_dir=tmp_path / "nats", port=free_port())
        elsewhere.start()
        w = await connect(elsewhere.url)
        try:
            k = await last_seq(w)
            assert k < seen
            for i in range(seen - k + 3):
                await w.js.publish("netledger.evt.registry", b"after the restore %d" % i)
            assert await last_seq(w) == seen + 3
        finally:
            await w.close()
            elsewhere.stop()
        server.start()  # the readers' server again: they reconnect to the longer, other log

        assert svc.failed is not None
        err = await asyncio.wait_for(svc.failed, 30)
        assert isinstance(err, LogDiverged) and err.code == "log_diverged"
        failure = await asyncio.wait_for(proj.wait_failed(), 30)
        assert isinstance(failure, LogDiverged)
        assert failure.details["seq"] == seen
        assert proj.last_seq == seen  # nothing of the new log projected
        assert svc.state.last_seq <= seen  # nor folded
    finally:
        await proj.close()
        await svc.close()
        await conn.close()
        server.stop()


class _RestoredLog:
    """A connection to a log restored under the reader and written past it: its messages at
    seqs 2 and 3 are others now. ``wait_interval_or_reconnect`` says "reconnected" once;
    ``stream_info`` fails the first ``fail`` times (NATS not answering for a while), and may run
    ``during_info`` (the ordered consumer, recreated meanwhile, delivering the new log)."""

    stream = "NETLEDGER"

    def __init__(self, fail: int = 0) -> None:
        from types import SimpleNamespace

        self.fail = fail
        self.wakes = 0
        self.during_info: Any = None
        self.msgs = {
            2: ("netledger.evt.registry", b"new 2"),
            3: ("netledger.evt.registry", b"new 3"),
        }
        self.js = SimpleNamespace(stream_info=self._info, get_msg=self._get)
        self.reconnect_hooks: list[Any] = []  # (the real connection calls them at a reconnect)

    def reconnect_event(self) -> asyncio.Event:
        return asyncio.Event()

    async def wait_interval_or_reconnect(self, ev: asyncio.Event, interval: float) -> bool:
        self.wakes += 1
        await asyncio.sleep(0.01)
        return self.wakes == 1

    async def _info(self, stream: str) -> Any:
        from types import SimpleNamespace

        if self.during_info is not None:
            self.during_info()
            self.during_info = None
        if self.fail > 0:
            self.fail -= 1
            raise Unavailable("stream info: no answer for 30s")
        return SimpleNamespace(state=SimpleNamespace(last_seq=3))

    async def _get(self, stream: str, seq: int) -> Any:
        from types import SimpleNamespace

        subject, data = self.msgs[seq]
        return SimpleNamespace(subject=subject, data=data)


def _follower(conn: Any) -> Any:
    from netledger.journal.follow import Follower

    f = Follower(conn, lambda *a: None)
    f.applied_seq = f.position = f.highest_seen = 2
    f.last_msg = (2, "netledger.evt.registry", b"old 2")  # read before the server went away
    return f


def _delivered(seq: int, data: bytes) -> Any:
    from types import SimpleNamespace

    reply = f"$JS.ACK.NETLEDGER.c.1.{seq}.{seq}.1764262800000000000.0"
    return SimpleNamespace(reply=reply, subject="netledger.evt.registry", data=data)


async def test_follower_checks_the_message_read_before_the_reconnect() -> None:
    """The ordered consumer, recreated while the reconnect's check is in flight, delivers the
    new log: checking the newest message read *then* compares the new log with itself."""
    from netledger.events.errors import LogDiverged

    conn = _RestoredLog()
    f = _follower(conn)
    conn.during_info = lambda: f._on_msg(_delivered(3, b"new 3"))
    with pytest.raises(LogDiverged):
        await asyncio.wait_for(f.watch(0.01), 5)


async def test_follower_checks_again_after_the_reconnects_check_failed() -> None:
    """NATS not answering right after the reconnect (a cluster electing the stream's leader):
    the check of the message read must not be lost with it."""
    from netledger.events.errors import LogDiverged

    f = _follower(_RestoredLog(fail=1))
    with pytest.raises(LogDiverged):
        await asyncio.wait_for(f.watch(0.01), 5)


async def test_projector_checks_again_after_the_reconnects_check_failed(tmp_path: Path) -> None:
    from netledger.events.errors import LogDiverged
    from netledger.projector.runner import Projector

    p = Projector(_RestoredLog(fail=1), tmp_path / "p.db")  # type: ignore[arg-type]
    p.watch_interval = 0.01
    p._reading = True
    p.last_seq = p._enqueued = 2
    p.last_raw = (2, "netledger.evt.registry", b"old 2", 0.0, 0)
    await asyncio.wait_for(p._watch_log(), 5)
    assert isinstance(p.failure, LogDiverged)


async def test_the_projector_checks_what_it_had_read_when_the_reconnect_came(
    tmp_path: Path,
) -> None:
    """Its watcher may wake long after the reconnect (in a question to a server that was away)
    while the recreated consumer already delivered the new log's next message, which the new
    log of course holds: the check must be of the message read *before* the reconnect, noted
    at the reconnect itself (a clean-clone CI run missed a divergence so)."""
    from netledger.events.errors import LogDiverged
    from netledger.projector.runner import Projector

    conn = _RestoredLog()
    p = Projector(conn, tmp_path / "p.db")  # type: ignore[arg-type]
    p.watch_interval = 0.01
    p._reading = True
    p.last_seq = p._enqueued = 2
    p.last_raw = (2, "netledger.evt.registry", b"old 2", 0.0, 0)
    woke = conn.wait_interval_or_reconnect

    async def late(ev: asyncio.Event, interval: float) -> bool:
        if conn.wakes == 0:  # the reconnect, and the new log's message 3 read before the wake
            for hook in list(conn.reconnect_hooks):
                hook()
            p.last_seq = p._enqueued = 3
            p.last_raw = (3, "netledger.evt.registry", b"new 3", 0.0, 0)
        return await woke(ev, interval)

    conn.wait_interval_or_reconnect = late  # type: ignore[method-assign]
    await asyncio.wait_for(p._watch_log(), 5)
    assert isinstance(p.failure, LogDiverged)
    assert conn.reconnect_hooks == []  # taken back when the watch ends


async def test_a_share_claims_only_what_it_read_after_a_reconnect() -> None:
    """A share reader's position may be past its newest message (a catch-up saw the stream's
    end); the log it reconnects to agrees with it up to that message — the check passes — but
    may hold other messages after it. Its position comes back to what it read: a snapshot
    taken at the old position would skip them for good."""
    conn = _RestoredLog()
    conn.msgs[2] = ("netledger.evt.registry", b"old 2")  # the backup was taken after seq 2
    f = _follower(conn)
    f.position = 3  # caught up to the old log's end; seq 3 was not of its share
    task = asyncio.create_task(f.watch(0.01))
    try:
        for _ in range(200):
            if conn.wakes >= 2:  # the reconnect's round, and one more
                break
            await asyncio.sleep(0.01)
        assert f.failure is None  # the log holds what it read
        assert f.position == f.applied_seq == 2
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
