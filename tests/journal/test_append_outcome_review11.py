"""Review 11: an append that got no answer may have landed, whatever the storage watcher's
diagnosis of the store says: its error must keep ``outcome: unknown`` (journal/append.py
``_no_answer``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from nats.js.errors import NotFoundError

from netledger.common.natsserver import EmbeddedNats, free_port
from netledger.events.errors import LogUnavailable
from netledger.journal.append import Appender, Outgoing
from netledger.journal.loghealth import LogHealth
from netledger.journal.stream import connect, ensure_stream
from netledger.ops.config import Reserve
from netledger.ops.storage import StorageWatcher


class AckDropper:
    """A TCP relay between a client and nats-server that, once ``dropping``, forwards what the
    client sends but not what the server answers: an append is stored, its acknowledgement
    lost on the way (a connection dying after the store, a stalled link). While ``open`` is
    clear it holds what the server sends instead (in order, nothing lost: a replica that has
    not read the log's end yet)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.dropping = False
        self.open = asyncio.Event()
        self.open.set()
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _client(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self.writers += [cw, uw]

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, to_client: bool) -> None:
            with contextlib.suppress(Exception):
                while data := await r.read(65536):
                    if to_client:
                        await self.open.wait()
                        if self.dropping:
                            continue
                    w.write(data)
                    await w.drain()
            w.close()

        for t in (pipe(cr, uw, False), pipe(ur, cw, True)):
            task = asyncio.create_task(t)
            self.tasks.add(task)

    def cut(self, upstream_port: int) -> None:
        """Drop every connection; the next ones go to ``upstream_port`` (a failover, or the
        server restarted without its stream yet)."""
        self.upstream_port = upstream_port
        self.dropping = False
        for w in self.writers:
            w.close()
        self.writers.clear()

    async def close(self) -> None:
        self.open.set()
        if self.server is not None:
            self.server.close()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def test_an_unanswered_append_that_landed_is_not_called_not_applied(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """The store is below its reserve when the diagnosis runs (the disk filled while the append
    was in flight). The append itself was stored; only its acknowledgement never came. The
    command was answered ``log_storage_full`` with ``outcome: not_applied`` — the watcher's
    verdict for refusals it makes *before* trying — although the event is in the log: a caller
    trusting ``not_applied`` sends the command again under a new command id. It also hides the
    "appends unanswered while the store was low" signal the watcher latches on (its tick looks
    for ``outcome == "unknown"``)."""
    relay = AckDropper(nats_server.port)
    port = await relay.start()
    direct = await connect(nats_server.url)
    conn = await connect(f"nats://127.0.0.1:{port}")
    try:
        await ensure_stream(direct)
        health = LogHealth()
        st = os.statvfs(tmp_path)
        # A reserve above what is free: the store is "below its reserve" for the diagnosis.
        reserve = Reserve(nbytes=st.f_bavail * st.f_frsize + (1 << 30))
        watcher = StorageWatcher(health, conn, reserve=reserve, store_dir=tmp_path)
        appender = Appender(conn, budget=1.0, health=health)
        subject = "netledger.evt.network.review11"
        relay.dropping = True
        try:
            await appender.append([Outgoing(subject, b"x", "review11-cmd:0")], {subject: 0})
            raise AssertionError("an append without acknowledgement succeeded")
        except LogUnavailable as err:
            got = err
        m = await direct.js.get_last_msg(direct.stream, subject)
        assert m.headers is not None and m.headers.get("Nats-Msg-Id") == "review11-cmd:0"
        assert got.code == "log_storage_full"  # the diagnosis names the store's trouble
        assert got.details.get("outcome") == "unknown", got.details
        failing = health.failing
        assert failing is not None and failing.details.get("outcome") == "unknown"
        await watcher.close()
    finally:
        relay.dropping = False
        await conn.close()
        await direct.close()
        await relay.close()


async def test_an_append_whose_first_attempt_landed_is_not_called_not_applied_by_a_later_one(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """Within its budget an append is retried with the same ids. Its first attempt is stored
    but unacknowledged (the connection dies); the retries then reach a server where no stream
    answers (no responders: the restarted server's JetStream not up yet, a failover) until
    the budget runs out. The answer took its outcome from the *last* attempt alone:
    ``not_applied``, although the first one is in the log."""
    other = EmbeddedNats(tmp_path / "other", port=free_port())  # JetStream, no netledger stream
    await asyncio.to_thread(other.start)
    relay = AckDropper(nats_server.port)
    port = await relay.start()
    direct = await connect(nats_server.url)
    conn = await connect(f"nats://127.0.0.1:{port}")
    try:
        await ensure_stream(direct)
        health = LogHealth()
        appender = Appender(conn, publish_timeout=1.0, budget=4.0, health=health)
        subject = "netledger.evt.network.review11b"
        relay.dropping = True
        task = asyncio.create_task(
            appender.append([Outgoing(subject, b"x", "review11b-cmd:0")], {subject: 0})
        )
        # Stored on the log's server (its ack dropped on the way back): the link dies now.
        while True:
            try:
                m = await direct.js.get_last_msg(direct.stream, subject)
                break
            except NotFoundError:
                await asyncio.sleep(0.01)
        assert m.headers is not None and m.headers.get("Nats-Msg-Id") == "review11b-cmd:0"
        relay.cut(other.port)
        try:
            await task
            raise AssertionError("an append without acknowledgement succeeded")
        except LogUnavailable as err:
            got = err
        assert got.details.get("outcome") == "unknown", (got.code, got.details)
    finally:
        await conn.close()
        await direct.close()
        await relay.close()
        await asyncio.to_thread(other.stop)
