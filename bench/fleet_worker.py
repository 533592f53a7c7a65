"""One worker process of the fleet benchmark (bench/fleet.py): a few hundred simulated hosts.

Each host is what an executor reads the log with, without its kernel: a connection of its own
and an ``executor/view.py`` ``HostView`` (the fold of its share, its follower with the share's
filter subjects, the share growing and shrinking as the fold says) — or, for the raw limit, a
connection of its own reading the same share's history raw (bench/history_raw.py, one ordered
consumer per subject, counted not decoded; ``read_raw``) or following it with one raw ordered
consumer with the same filter subjects on a twin stream (``follow_raw``).

The driver speaks to it in JSON lines: a request on stdin, ``{"ok": ...}`` or ``{"error": ...}``
on stdout. What the hosts saw (which stream sequences each was handed, when each applied an
event of one of the benchmark's instances) goes to a file the driver names, not to the pipe.
Timestamps are ``time.monotonic()``: one clock (CLOCK_MONOTONIC) with the driver's.

    python bench/fleet_worker.py     # started by bench/fleet.py, never by hand
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: F401  (puts the repository first on the path)
from history_raw import read_on, reader_connection

from netledger.events.codec import Envelope
from netledger.events.errors import DecodeError
from netledger.executor.view import HostView
from netledger.journal.stream import Connection, connect

#: views (or raw hosts) starting at once in one worker: the server's work per start is a
#: string of round trips (a consumer per subject), overlapped this much
START_CONCURRENCY = 2
#: a view's start is tried this often (a failure is reported with the figures)
START_TRIES = 3


class TimedView(HostView):
    """A ``HostView`` that also notes what it was handed: the stream sequence of every message
    from ``record_from`` on, and when it applied an event of a benchmark instance (one whose
    name starts with ``prefix``) — right after the view's own handling of it."""

    prefix = "\0"
    record_from: int | None = None

    def __init__(self, conn: Connection, host: str, network_host: bool) -> None:
        super().__init__(conn, host, network_host=network_host)
        self.seqs: list[int] = []
        self.applied: list[tuple[str, str, float]] = []

    def _on_message(
        self, seq: int, subject: str, env: Envelope | None, err: DecodeError | None, msg: Msg
    ) -> None:
        super()._on_message(seq, subject, env, err, msg)
        if self.record_from is not None and seq >= self.record_from:
            self.seqs.append(seq)
        inst = getattr(env.event, "instance", None) if env is not None else None
        if isinstance(inst, str) and inst.startswith(self.prefix):
            assert env is not None
            self.applied.append((inst, env.event.TYPE, time.monotonic()))


async def read_share(own: Connection, fast: bool, subjects: list[str]) -> int:
    """A share's history read raw: one ordered consumer per subject, counted not decoded."""
    return sum([(await read_on(own, fast, s, 1)).count for s in subjects])


class RawHost:
    """The raw limit of one host following the log: a raw ordered consumer with its filter
    subjects on the twin stream, noting when each payload came."""

    def __init__(self, conn: Connection, host: str) -> None:
        self.conn = conn
        self.host = host
        self.sub: Any = None
        self.got: list[tuple[str, float]] = []

    async def start(self, raw_stream: str, raw_subjects: list[str]) -> None:
        from nats.js.api import ConsumerConfig, DeliverPolicy

        got = self.got

        async def cb(msg: Msg) -> None:
            got.append((msg.data.decode(), time.monotonic()))

        self.sub = await self.conn.js.subscribe(
            "",
            cb=cb,
            ordered_consumer=True,
            stream=raw_stream,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.NEW, filter_subjects=sorted(raw_subjects)
            ),
            pending_msgs_limit=-1,
            pending_bytes_limit=256 * 1024 * 1024,
            idle_heartbeat=1.0,  # as the views' followers (journal/stream.py FOLLOW_HEARTBEAT_S)
        )

    async def close(self) -> None:
        if self.sub is not None:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()
        await self.conn.close()


class Worker:
    def __init__(self) -> None:
        self.failed_starts: list[str] = []
        self.views: list[TimedView] = []
        self.raw: list[RawHost] = []

    async def start_views(self, url: str, hosts: list[list[Any]], prefix: str) -> dict[str, Any]:
        TimedView.prefix = prefix
        sem = asyncio.Semaphore(START_CONCURRENCY)
        # Every host's connection first, while this process is idle: hundreds of hosts share
        # its event loop here (each has its own on a real host), and a connect waiting behind
        # the others' folding timed out (5 s) on a loaded machine.
        conns = [await connect(url, name=f"fleet-{h}") for h, _ in hosts]

        async def one(conn: Connection, host: str, network_host: bool) -> None:
            async with sem:
                for attempt in range(START_TRIES):
                    view = TimedView(conn, host, network_host)
                    try:
                        await view.start()
                    except Exception as exc:
                        # Said, counted and tried again: a loop this crowded can stall past
                        # nats-py's two missed heartbeats, and it resets an ordered consumer
                        # under the read ("consumer not found").
                        logging.warning("view of %s failed to start: %r", host, exc)
                        await view.close()
                        self.failed_starts.append(f"{host}: {exc.__class__.__name__}: {exc}")
                        if attempt == START_TRIES - 1:
                            raise
                        continue
                    self.views.append(view)
                    return

        await asyncio.gather(
            *(one(c, h, bool(nh)) for c, (h, nh) in zip(conns, hosts, strict=True))
        )
        return {
            "subjects": {v.host: v.follower.subjects for v in self.views if v.follower},
            "read": sum(v.follower.handled for v in self.views if v.follower),
            "failed_starts": self.failed_starts,
        }

    async def read_raw(self, url: str, hosts: list[list[Any]]) -> dict[str, Any]:
        """The raw limit of a view's start: each host's share read raw (its own connection)."""
        sem = asyncio.Semaphore(START_CONCURRENCY)
        base = await connect(url, name="fleet-raw-base")
        try:
            conns = [await reader_connection(base) for _ in hosts]  # as the views' (above)

            async def one(own: tuple[Connection, bool], subjects: list[str]) -> int:
                async with sem:
                    try:
                        return await read_share(own[0], own[1], subjects)
                    finally:
                        await own[0].close()

            got = await asyncio.gather(
                *(one(c, subjects) for c, (_h, subjects) in zip(conns, hosts, strict=True))
            )
        finally:
            await base.close()
        return {"read": sum(got)}

    async def follow_raw(
        self, url: str, hosts: list[list[Any]], stream: str, rename: list[str]
    ) -> dict[str, Any]:
        """Each host a connection and a raw ordered consumer with its filter subjects."""
        sem = asyncio.Semaphore(START_CONCURRENCY)
        conns = [await connect(url, name=f"fleet-raw-{h}") for h, _ in hosts]

        async def one(conn: Connection, host: str, subjects: list[str]) -> None:
            async with sem:
                raw = RawHost(conn, host)
                await raw.start(stream, [s.replace(rename[0], rename[1], 1) for s in subjects])
                self.raw.append(raw)

        await asyncio.gather(*(one(c, h, s) for c, (h, s) in zip(conns, hosts, strict=True)))
        return {}

    def record(self, from_seq: int) -> dict[str, Any]:
        for v in self.views:
            v.record_from = from_seq
            v.seqs.clear()
            v.applied.clear()
        for r in self.raw:
            r.got.clear()
        return {}

    def progress(self) -> dict[str, Any]:
        return {
            "applied": sum(len(v.applied) for v in self.views),
            "got": sum(len(r.got) for r in self.raw),
            "resubscriptions": sum(v.resubscriptions for v in self.views),
        }

    async def sync(self) -> dict[str, Any]:
        """Every view caught up with the log as it is now (its own ``sync``)."""
        await asyncio.gather(*(v.sync() for v in self.views))
        return {"resubscriptions": sum(v.resubscriptions for v in self.views)}

    def dump(self, path: str) -> dict[str, Any]:
        out = {
            "views": {v.host: {"seqs": v.seqs, "applied": v.applied} for v in self.views},
            "raw": {r.host: r.got for r in self.raw},
        }
        Path(path).write_text(json.dumps(out))
        return {}

    async def stop(self) -> dict[str, Any]:
        for v in self.views:
            await v.close()
            await v.conn.close()
        for r in self.raw:
            await r.close()
        self.views, self.raw = [], []
        return {}

    async def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.pop("op")
        if op == "views":
            return await self.start_views(**req)
        if op == "read_raw":
            return await self.read_raw(**req)
        if op == "follow_raw":
            return await self.follow_raw(**req)
        if op == "record":
            return self.record(**req)
        if op == "progress":
            return self.progress()
        if op == "sync":
            return await self.sync()
        if op == "dump":
            return self.dump(**req)
        if op == "stop":
            return await self.stop()
        raise ValueError(f"unknown op {op!r}")


async def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    worker = Worker()
    try:
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                break
            req = json.loads(line)
            last = req.get("op") == "stop"
            try:
                answer: dict[str, Any] = {"ok": await worker.handle(req)}
            except Exception as exc:
                logging.exception("request failed")
                answer = {"error": f"{exc.__class__.__name__}: {exc}"}
            print(json.dumps(answer), flush=True)
            if last:
                break
    finally:
        await worker.stop()


if __name__ == "__main__":
    asyncio.run(main())
