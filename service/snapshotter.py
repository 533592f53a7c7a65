"""The command service's snapshots: load the newest valid one at start, write new ones behind.

Owned by :class:`netledger.service.service.CommandService` (``service.snapshotter``). At start the
service asks :meth:`Snapshotter.load` for a fold to begin from and then reads only the tail of
the log. While it runs, every ``every_events`` events folded (and at most once per
``min_interval``), a new snapshot is written in the background (a forked child encodes and
uploads it on a connection of its own; see :mod:`netledger.journal.snapshot_upload`): commands
are never held for it. Replicas share the bucket: a replica
skips its turn when the newest *usable* stored snapshot is recent enough — one a start would
refuse (another fold version, beyond the end of a restored log, refused by :meth:`load`) is
no snapshot at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netledger.events.prune import prune_all
from netledger.events.snapshot import SeenEvents, Snapshot, anchor_of
from netledger.events.state import State
from netledger.journal.snapshot_store import (
    BODY_PREFIX,
    CHILD_TIMEOUT_S,
    SnapshotStore,
    StoredSnapshot,
    write_forked,
)
from netledger.journal.snapshot_upload import put_forked
from netledger.journal.stream import CLOSE_TIMEOUT_S, Connection

log = logging.getLogger("netledger.snapshot")


@dataclass(frozen=True)
class SnapshotPolicy:
    """When the service writes snapshots (``serve --snapshot-every/--snapshot-min-interval``)."""

    #: write once this many events were folded since the last snapshot (0: never write)
    every_events: int = 20_000
    #: ... but not more often than this (seconds)
    min_interval: float = 60.0
    #: how often the condition is checked (seconds)
    check_interval: float = 5.0
    #: snapshots kept in the bucket (older ones are deleted)
    keep: int = 2
    #: start from the newest valid snapshot (False: fold the whole log, e.g. to repair)
    load: bool = True
    #: encode and upload in a forked child (False: in the event loop, blocking it meanwhile,
    #: and uploaded over the service's connection)
    fork: bool = True
    #: where the child writes its file before the upload (None: the system's temp folder)
    tmpdir: str | None = None


def own_tmpdir(data_dir: Path) -> str | None:
    """``<data_dir>/snapshot-tmp``, made if missing, without the files a write killed with its
    service left there: a SIGKILL gives the writer no chance to remove its body (a few MB a
    write), which in the system's temp folder stayed until a reboot. Only bodies older than
    a write may take (``CHILD_TIMEOUT_S``) are removed: another service sharing the folder may
    be writing one now. The folder's path (None, with a warning: it cannot be made)."""
    folder = data_dir / "snapshot-tmp"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:  # (a data folder serve cannot write: it starts as before)
        log.warning("snapshot bodies in the system's temp folder: %s", exc)
        return None
    too_old = time.time() - CHILD_TIMEOUT_S
    for body in folder.glob(f"{BODY_PREFIX}*"):
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to remove
            if body.stat().st_mtime < too_old:
                body.unlink()
                log.info("removed %s, left by a snapshot write that did not finish", body)
    return str(folder)


@dataclass
class SnapshotStats:
    loaded_seq: int | None = None
    loaded_name: str | None = None
    #: seconds the start took to list, read, check and decode the snapshot it loaded
    loaded_seconds: float | None = None
    skipped: list[dict[str, Any]] = field(default_factory=list)
    written: int = 0
    last_written_seq: int | None = None
    last_written_at: float | None = None
    last_write_seconds: float | None = None
    last_bytes: int | None = None
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        # (the epoch kept as it was; the moment also as the other commands print times: ISO
        # 8601 UTC with milliseconds, as verify --snapshots and audit — review h130)
        at = self.last_written_at
        out["last_written_time"] = (
            None
            if at is None
            else datetime.datetime.fromtimestamp(at, datetime.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
        )
        return out


#: how long write() waits for the fold to be a prefix of the log (None from applied_seq)
SETTLE_TRIES = 200
SETTLE_PAUSE_S = 0.005


class Snapshotter:
    def __init__(
        self,
        conn: Connection,
        policy: SnapshotPolicy,
        state: Callable[[], State],
        seen: Callable[[], OrderedDict[str, SeenEvents]],
        applied_seq: Callable[[], int | None],
        last_read: Callable[[], tuple[int, str, bytes] | None] | None = None,
        extra: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.conn = conn
        self.policy = policy
        self.store = SnapshotStore(conn, "service", keep=policy.keep)
        self._state = state
        self._seen = seen
        self._applied_seq = applied_seq
        #: (seq, subject, data) of the newest message the reader folded (Follower.last_msg)
        self._last_read = last_read
        #: what the service keeps beside the fold (events/snapshot.py ``extra``), built from
        #: the snapshot's image
        self._extra = extra
        self.stats = SnapshotStats()
        #: events folded since the fold the newest snapshot holds (counted by the service)
        self.since = 0
        self._last_at = float("-inf")
        self._created: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def load(
        self, on_candidate: Callable[[StoredSnapshot, int], Awaitable[None]] | None = None
    ) -> Snapshot | None:
        """The newest usable snapshot, or None (``on_candidate``: :meth:`SnapshotStore.load`'s;
        one asked for may still be refused, and an error loading is None too)."""
        if not self.policy.load:
            return None

        def skipped(s: StoredSnapshot, reason: str) -> None:
            self.stats.skipped.append({"name": s.name, "seq": s.seq, "reason": reason})

        t0 = time.monotonic()
        try:
            snap = await self.store.load(on_skip=skipped, on_candidate=on_candidate)
        except MemoryError:  # the fold of the whole log would not fit either
            raise
        except Exception as exc:  # a bucket we cannot read is no reason not to start
            log.warning("snapshots unavailable (%s): folding the log from the start", exc)
            return None
        if snap is not None:
            self.stats.loaded_seconds = round(time.monotonic() - t0, 3)
            self.stats.loaded_seq = snap.seq
            self.stats.loaded_name = f"service-{snap.seq:012d}"
            self._created = snap.created
        return snap

    def start(self) -> None:
        if self.policy.every_events > 0:
            self._task = asyncio.create_task(self._run(), name="netledger-snapshots")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=CLOSE_TIMEOUT_S)
            self._task = None

    def due(self, now: float) -> bool:
        p = self.policy
        return (
            p.every_events > 0
            and self.since >= p.every_events
            and now - self._last_at >= p.min_interval
        )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Checked often enough for the minimum interval (a short one in tests), at most
            # every check_interval.
            await asyncio.sleep(
                max(0.05, min(self.policy.check_interval, self.policy.min_interval))
            )
            if not self.due(loop.time()):
                continue
            try:
                await self.write()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.last_error = f"{exc.__class__.__name__}: {exc}"
                log.warning(
                    "writing a snapshot failed: %s (next try in %.0fs)",
                    exc,
                    self.policy.min_interval,
                )
            self._last_at = loop.time()

    async def write(self) -> StoredSnapshot | None:
        """Write a snapshot of the fold as it is now (None: a replica wrote a recent one)."""
        if self._created is None:
            self._created, _ = await self.store.stream_identity()
        usable, _ = await self.store.usable()
        newest = usable[0] if usable else None
        # The service folds its own appends from their acks, ahead of its reader: the image
        # must be the log's fold, so wait (briefly) for a moment the reader has caught up —
        # and so has taken what they change across subjects in the log's order
        # (events/fold_ahead.py; applied_seq is None until then).
        for _ in range(SETTLE_TRIES):
            # No await between reading the sequence and the fork: the image is the fold at it.
            seq = self._applied_seq()
            if seq is not None:
                read = self._last_read() if self._last_read is not None else None
                reconnects = self.store.reconnects()
                break
            await asyncio.sleep(SETTLE_PAUSE_S)
        else:
            log.info("the fold stayed ahead of the log reader; snapshot postponed")
            return None
        if newest is not None and newest.seq >= seq - self.policy.every_events // 2:
            log.debug("snapshot at seq %d is recent enough; not writing", newest.seq)
            self.since = seq - newest.seq
            return None
        since_at_fork = self.since
        t0 = time.monotonic()
        # The fold is the log's up to seq, read in its order: what it no longer needs of the
        # deleted networks goes, every entry of it (the form verify --snapshots compares).
        prune_all(self._state(), seq)

        async def anchor() -> str:
            # Asked after the image is taken (the fork is behind us): the message folded at
            # seq, as the reader got it — the log asked now (retried while NATS is away) may be
            # one restored meanwhile, whose message seq is another.
            if read is not None and read[0] == seq:
                return anchor_of(read[1], read[2])
            return await self.store.anchor(seq, since=reconnects)

        if self.policy.fork and hasattr(os, "fork"):
            # The child uploads on a connection of its own: the snapshot's chunks never queue
            # in front of the commands on the service's (journal/snapshot_upload.py).
            stored = await put_forked(
                self.store,
                self._state(),
                self._seen(),
                seq=seq,
                created=self._created,
                anchor=anchor,
                tmpdir=self.policy.tmpdir,
                extra=self._extra,
            )
        else:
            path, sha = await write_forked(
                self._state(),
                self._seen(),
                seq=seq,
                stream=self.conn.stream,
                created=self._created,
                tmpdir=self.policy.tmpdir,
                fork=False,
                extra=self._extra,
            )
            try:
                stored = await self.store.put(path, seq, sha, await anchor())
            finally:
                os.unlink(path)
        self.since -= since_at_fork
        s = self.stats
        s.written += 1
        s.last_written_seq, s.last_written_at = seq, time.time()
        s.last_write_seconds = round(time.monotonic() - t0, 3)
        s.last_bytes, s.last_error = stored.size, None
        log.info(
            "snapshot %s written: %d bytes in %.2fs", stored.name, stored.size, s.last_write_seconds
        )
        return stored
