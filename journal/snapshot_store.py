"""Where snapshots live: a JetStream object store bucket, one object per snapshot.

Bucket ``NETLEDGER_SNAPSHOTS`` (stream ``OBJ_NETLEDGER_SNAPSHOTS``, file storage, the log's
replicas). A snapshot of the command service's fold at stream sequence N is the object
``service-<N, 12 digits>``; its headers record the sequence, the SHA-256 of the body, the
snapshot format and the fold version, so a reader can pick the newest without downloading the
others. After a new one is stored the bucket is pruned to ``keep``: the one just written is
never deleted, then the newest *usable* ones are kept; unusable ones (:meth:`SnapshotStore.check`)
are the first to go, whatever their sequence. The delete marker a deletion leaves on the
object's metadata subject is purged too (:meth:`SnapshotStore.purge_marker`): the stream holds
the kept snapshots, not a message per snapshot ever written.

Loading tries the snapshots newest first. Each is checked (:func:`netledger.events.snapshot.loads`:
hash, format, fold version, stream identity, not beyond the stream's end; then its *anchor*,
the digest of the stream's message N recorded when it was written, against the message N the
stream holds now — a log restored from an older backup and written past N since fails only
this); an unusable one is
skipped with a warning naming the reason, and with none usable the caller folds the log from
sequence 1. A snapshot is never fatal and never trusted blindly. What is judged without the
body (format and fold version in the headers, the sequence against the stream's end, the
anchor) is :meth:`SnapshotStore.check`, also what a writer and the pruning go by: a snapshot
the reader would refuse — a fold version before an upgrade, one beyond the end of a log
restored from an older backup — must not count as a recent one.

Writing (:func:`write_forked`): the fold is serialised by a forked child process — a
copy-on-write image of the service's memory at one instant — so the event loop goes on serving
commands while megabytes are encoded and hashed; the executor's view snapshots install the
finished file on the host. The command service's child also uploads it, on a connection of its
own (:mod:`.snapshot_upload`).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import signal
import tempfile
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats.js.api import ObjectMeta, ObjectStoreConfig, StorageType
from nats.js.errors import BucketNotFoundError, NotFoundError

from netledger.events.snapshot import (
    ENCODING,
    SNAPSHOT_FORMAT,
    SeenEvents,
    Snapshot,
    SnapshotInvalid,
    anchor_of,
    digest,
    dumps,
    encode_body,
    loads,
)
from netledger.events.state import FOLD_VERSION, State
from netledger.journal.forked import close_inherited, die_with_parent
from netledger.journal.forked import fork as fork_child
from netledger.journal.snapshot_purge import BUCKET as BUCKET  # (imported from here)
from netledger.journal.snapshot_purge import SnapshotPurge
from netledger.journal.snapshot_purge import meta_subject as meta_subject  # (imported from here)
from netledger.journal.stream import CLOSE_TIMEOUT_S, Connection, message_at, retrying

log = logging.getLogger("netledger.snapshot")

H_SEQ = "Netledger-Seq"
H_SHA = "Netledger-Sha256"
H_FORMAT = "Netledger-Snapshot-Format"
H_FOLD = "Netledger-Fold-Version"
H_ENCODING = "Netledger-Encoding"
H_ANCHOR = "Netledger-Anchor"
#: Longest a forked writer may take before it is killed (a wedged child must not pile up).
CHILD_TIMEOUT_S = 600.0
#: How the service's snapshot writes name their temporary files (and journal/snapshot_upload.py).
BODY_PREFIX = "netledger-snapshot-"
#: The forked writer's niceness, added to its parent's (as serve's projector's,
#: projector/child.py NICE): its encoding takes a core for 0.4-2 s (a 100 k-event cloud and
#: 50 k allocations), and on 2 cores the command service's answers come first. In the open loop
#: (bench/alloc_tail.py, a snapshot every 4 s) nearly all of the slowest 1 % of allocations
#: overlapped a snapshot write (against 20-58 % of all), waiting for acks and their lane; niced,
#: 4 interleaved pairs: p99 462 / 497 / 63 / 41 -> 247 / 656 / 27 / 33 ms, max 547 / 575 / 151
#: / 134 -> 318 / 765 / 45 / 62 ms (a loaded machine; in the two quieter pairs the slowest 1 %
#: waited 18-21 ms for their ack instead of 38-52).
CHILD_NICE = 10
#: Reading a snapshot may take this long plus its size at this rate (bytes/s) before it is
#: given up (and the next older one, or the log, used instead).
READ_TIMEOUT_S = 10.0
READ_RATE_FLOOR = 5_000_000.0


@dataclass(frozen=True)
class StoredSnapshot:
    """What the bucket says of one snapshot (from its object info, without the body)."""

    name: str
    seq: int
    sha256: str | None
    size: int
    format: int | None
    fold: int | None
    mtime: str
    #: where its chunks are (``$O.<bucket>.C.<nuid>``) and how many
    nuid: str = ""
    chunks: int = 0
    #: "zlib" when the body is stored compressed (the hash is of the stored bytes)
    encoding: str | None = None
    #: the digest of the stream's message ``seq`` when it was written (events/snapshot.py
    #: ``anchor_of``); None: written by a netledger before Dec 2026, refused
    anchor: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seq": self.seq,
            "sha256": self.sha256,
            "bytes": self.size,
            "format": self.format,
            "fold_version": self.fold,
            "written": self.mtime,
            "anchor": self.anchor,
        }


def object_name(kind: str, seq: int) -> str:
    return f"{kind}-{seq:012d}"


def _header(headers: dict[str, Any] | None, key: str) -> str | None:
    v = (headers or {}).get(key)
    if isinstance(v, list):  # Go's nats.Header: a list of values
        v = v[0] if v else None
    return None if v is None else str(v)


def _int(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


class SnapshotStore(SnapshotPurge):
    """The snapshots of one kind of fold (``service``) in the bucket."""

    def __init__(self, conn: Connection, kind: str = "service", keep: int = 2) -> None:
        self.conn = conn
        self.kind = kind
        self.keep = max(1, keep)
        self._obs: Any = None
        #: name -> reason of the snapshots :meth:`load` refused (also for what only the body
        #: shows: a corrupt or truncated one is no more usable to a writer than to a reader)
        self.refused: dict[str, str] = {}
        #: names of this kind the last listing found deleted (their delete marker still in the
        #: stream): :meth:`prune` purges them
        self.deleted: set[str] = set()

    async def _store(self, create: bool) -> Any:
        if self._obs is not None:
            return self._obs
        js = self.conn.js
        try:
            self._obs = await js.object_store(BUCKET)
        except BucketNotFoundError:
            if not create:
                return None
            replicas = 1
            try:
                info = await js.stream_info(self.conn.stream)
                replicas = info.config.num_replicas or 1
            except Exception:  # the log's replicas are a preference, not a requirement
                pass
            self._obs = await js.create_object_store(
                BUCKET,
                ObjectStoreConfig(
                    description="netledger snapshots of folds (see docs/operations.md)",
                    storage=StorageType.FILE,
                    replicas=replicas,
                ),
            )
        return self._obs

    async def stream_identity(self) -> tuple[str, int]:
        """(creation time as ISO text, last sequence) of the log these snapshots belong to."""
        info = await retrying(lambda: self.conn.js.stream_info(self.conn.stream), "stream info")
        created = info.created.isoformat() if info.created else ""
        return created, int(info.state.last_seq)

    def reconnects(self) -> int:
        """How often the connection has reconnected so far (nats-py's count)."""
        stats = getattr(self.conn.nc, "stats", None) or {}
        return int(stats.get("reconnects", 0))

    async def anchor(self, seq: int, since: int | None = None) -> str:
        """The anchor of a snapshot at ``seq``: the digest of the stream's message ``seq``
        ("" for the empty fold at 0). With ``since`` (:meth:`reconnects` when the fold's image
        was taken): refused if the connection went away meanwhile — the log it came back to
        may be a restored one, whose message ``seq`` would vouch for a fold it does not hold."""
        if seq < 1:
            return ""
        msg = await message_at(self.conn, seq)
        if msg is None:
            raise SnapshotInvalid(f"the log holds no message at seq {seq}")
        if since is not None and self.reconnects() != since:
            raise RuntimeError(
                "reconnected to NATS since the fold's image was taken: not kept (the log may"
                " have been restored meanwhile; the next snapshot is taken after it)"
            )
        return anchor_of(msg.subject or "", msg.data or b"")

    async def check_anchor(self, seq: int, anchor: str | None) -> None:
        """Raise :class:`SnapshotInvalid` unless the stream's message ``seq`` is still the one a
        snapshot at ``seq`` recorded (``anchor``)."""
        if seq < 1:
            return
        if not anchor:
            raise SnapshotInvalid(
                "no anchor recorded (written by an older netledger): it cannot be checked"
                " against the log"
            )
        if await self.anchor(seq) != anchor:
            raise SnapshotInvalid(
                f"the log's message at seq {seq} is not the one it was taken after (the stream"
                " was restored from an older backup and written past it?)"
            )

    async def snapshots(self) -> list[StoredSnapshot]:
        """This kind's snapshots, newest first."""
        obs = await self._store(create=False)
        if obs is None:
            return []
        try:
            # Deleted ones too (the listing reads every object's newest metadata message
            # either way): a marker left behind is purged by the next prune.
            infos = await obs.list(ignore_deletes=False)
        except NotFoundError:
            return []
        out = []
        prefix = f"{self.kind}-"
        self.deleted = {i.name for i in infos if i.deleted and i.name.startswith(prefix)}
        for i in infos:
            if not i.name.startswith(prefix) or i.deleted:
                continue
            seq = _int(_header(i.headers, H_SEQ))
            if seq is None:
                seq = _int(i.name[len(prefix) :])
            if seq is None:
                continue
            out.append(
                StoredSnapshot(
                    name=i.name,
                    seq=seq,
                    sha256=_header(i.headers, H_SHA),
                    size=int(i.size or 0),
                    format=_int(_header(i.headers, H_FORMAT)),
                    fold=_int(_header(i.headers, H_FOLD)),
                    mtime=i.mtime or "",
                    nuid=i.nuid or "",
                    chunks=int(i.chunks or 0),
                    encoding=_header(i.headers, H_ENCODING),
                    anchor=_header(i.headers, H_ANCHOR),
                )
            )
        return sorted(out, key=lambda s: s.seq, reverse=True)

    async def check(self, s: StoredSnapshot, last: int) -> None:
        """Raise :class:`SnapshotInvalid` unless ``s`` may be started from, as far as it can
        be told without its body: this code's format and fold version (headers of older
        objects may lack them: the body says), not beyond the stream's end (``last``), its
        anchor the message the log holds at its seq now (which also tells another stream's
        or one re-created under the same name), and not refused by :meth:`load` already."""
        if s.name in self.refused:
            raise SnapshotInvalid(self.refused[s.name])
        if s.format not in (None, SNAPSHOT_FORMAT) or s.fold not in (None, FOLD_VERSION):
            raise SnapshotInvalid(
                f"format {s.format} / fold version {s.fold}; this code reads format"
                f" {SNAPSHOT_FORMAT}, fold version {FOLD_VERSION}"
            )
        if s.seq > last:
            raise SnapshotInvalid(f"taken at seq {s.seq}, beyond the stream's last sequence {last}")
        await self.check_anchor(s.seq, s.anchor)

    async def usable(self) -> tuple[list[StoredSnapshot], list[StoredSnapshot]]:
        """(usable, unusable) snapshots by :meth:`check`, each newest first."""
        _, last = await self.stream_identity()
        good: list[StoredSnapshot] = []
        bad: list[StoredSnapshot] = []
        for s in await self.snapshots():
            try:
                await self.check(s, last)
            except SnapshotInvalid as exc:
                log.debug("snapshot %s (seq %d) is not usable: %s", s.name, s.seq, exc.reason)
                bad.append(s)
                continue
            good.append(s)
        return good, bad

    async def read(self, s: StoredSnapshot) -> bytes:
        """The body as stored (its chunks in order, read by one ordered consumer: nats-py's
        object get hands every chunk to a thread and took 1 s for 25 MB). Bounded: an object
        whose chunks are gone must not hold a start forever."""
        if not s.nuid:
            raise SnapshotInvalid("no chunks recorded")
        if s.chunks:
            # Every chunk gone (purged behind our back): say so at once, not after the read's
            # time limit (10 s and more: a start waited that long for nothing).
            try:
                await self.conn.js.get_last_msg(f"OBJ_{BUCKET}", f"$O.{BUCKET}.C.{s.nuid}")
            except NotFoundError:
                raise SnapshotInvalid(f"its {s.chunks} chunk(s) are gone") from None
        parts: list[bytes] = []
        got = 0
        done = asyncio.get_running_loop().create_future()

        async def on_chunk(msg: Any) -> None:
            nonlocal got
            parts.append(msg.data)
            got += len(msg.data)
            if len(parts) >= s.chunks and not done.done():
                done.set_result(None)

        limit = READ_TIMEOUT_S + s.size / READ_RATE_FLOOR
        sub = await self.conn.js.subscribe(
            f"$O.{BUCKET}.C.{s.nuid}",
            cb=on_chunk,
            ordered_consumer=True,
            stream=f"OBJ_{BUCKET}",
            pending_msgs_limit=-1,
            pending_bytes_limit=512 * 1024 * 1024,
        )
        try:
            if s.chunks:
                await asyncio.wait_for(done, limit)
        except TimeoutError:
            raise SnapshotInvalid(
                f"not readable within {limit:.0f}s ({got} of {s.size} bytes)"
            ) from None
        finally:
            try:
                await asyncio.wait_for(sub.unsubscribe(), CLOSE_TIMEOUT_S)
            except Exception:
                pass
        body = b"".join(parts)
        if len(body) != s.size:
            raise SnapshotInvalid(f"{len(body)} bytes read, {s.size} recorded")
        return body

    async def load(
        self,
        on_skip: Callable[[StoredSnapshot, str], None] | None = None,
        on_candidate: Callable[[StoredSnapshot, int], Awaitable[None]] | None = None,
    ) -> Snapshot | None:
        """The newest usable snapshot (None: none stored or none usable — fold the log).
        ``on_candidate(s, last)`` is awaited for each snapshot whose headers pass
        :meth:`check` and whose body is fetched, before the body is checked and decoded (most
        of a load: ~0.27 s of 0.3 at the history bench's snapshot), so the caller may read the
        log after it meanwhile (``last``: the stream's last sequence). Not before the fetch:
        a reader of the log then competes with it for the server and the cores (the fetch
        took 17.7 ms instead of 9.4, medians of 11 paired starts). The body may still be
        refused (then an older snapshot is a candidate next, or none is loaded): the caller
        must not take a candidate for the one loaded."""
        created, last = await self.stream_identity()
        try:
            stored = await self.snapshots()
        except Exception as exc:
            log.warning("cannot list snapshots (%s): folding the log from the start", exc)
            return None
        for s in stored:
            try:
                await self.check(s, last)
                body = await self.read(s)
                if on_candidate is not None:
                    await on_candidate(s, last)
                snap = _decoded(
                    body,
                    sha256=s.sha256,
                    stream=self.conn.stream,
                    created=created,
                    stream_last_seq=last,
                    encoding=s.encoding,
                )
                if snap.seq != s.seq:  # the anchor checked is the one of the header's seq
                    raise SnapshotInvalid(f"holds the fold at seq {snap.seq}, stored as {s.seq}")
            except SnapshotInvalid as exc:
                self.refused[s.name] = exc.reason
                log.warning("snapshot %s (seq %d) not used: %s", s.name, s.seq, exc.reason)
                if on_skip is not None:
                    on_skip(s, exc.reason)
                continue
            log.info("loaded snapshot %s: fold at seq %d (%d bytes)", s.name, s.seq, len(body))
            return snap
        if stored:
            log.warning("no usable snapshot: folding the log from the start")
        return None

    async def put(self, path: str, seq: int, sha256: str, anchor: str) -> StoredSnapshot:
        """Upload a finished snapshot file (``anchor``: :meth:`anchor` of ``seq``) over this
        store's connection, then :meth:`prune` the others (:meth:`stored`). The command
        service's snapshots are uploaded by their writer instead (journal/snapshot_upload.py)."""
        f = _open_read(path)
        try:
            stored = await self.upload(f, seq, sha256, anchor)
        finally:
            f.close()
        await self.stored(stored.name)
        return stored

    async def upload(
        self, body: bytes | io.BufferedReader, seq: int, sha256: str, anchor: str
    ) -> StoredSnapshot:
        """Store ``body`` as the snapshot at ``seq``; nothing else. Its chunks first, its
        metadata last (nats-py's object put): an upload cut short leaves chunks no object names
        (purged by :meth:`prune`), never an object a start would read."""
        obs = await self._store(create=True)
        name = object_name(self.kind, seq)
        meta = ObjectMeta(
            name=name,
            description=f"netledger {self.kind} fold at seq {seq} (fold version {FOLD_VERSION})",
            headers={
                H_SEQ: [str(seq)],
                H_SHA: [sha256],
                H_FORMAT: [str(SNAPSHOT_FORMAT)],
                H_FOLD: [str(FOLD_VERSION)],
                H_ENCODING: [ENCODING],
                H_ANCHOR: [anchor],
            },
        )
        info = await obs.put(name, body, meta=meta)
        return StoredSnapshot(
            name,
            seq,
            sha256,
            int(info.size or 0),
            SNAPSHOT_FORMAT,
            FOLD_VERSION,
            info.mtime or "",
            encoding=ENCODING,
            anchor=anchor,
        )

    async def stored(self, name: str) -> None:
        """After ``name`` was uploaded (by whichever connection): forget an earlier refusal of
        that name and :meth:`prune` the others."""
        self.refused.pop(name, None)  # a new object under the name of one refused
        try:
            await self.prune(written=name)
        except Exception as exc:  # stored all the same: the next write prunes again
            log.warning("pruning snapshots after %s: %s", name, exc)

    async def prune(self, written: str | None = None) -> list[str]:
        """Delete all but ``keep`` snapshots: never ``written`` (the one just stored, whatever
        its sequence against the others'), then the newest usable ones; the unusable ones
        (:meth:`check`) go first — by sequence alone, two left beyond the end of a log restored
        from an older backup would outrank and delete the one just written. Returns the names
        deleted."""
        obs = await self._store(create=False)
        if obs is None:
            return []
        good, bad = await self.usable()
        ranked = sorted(good + bad, key=lambda s: s.name != written)  # stable: usable first
        removed = []
        for s in ranked[self.keep :]:
            try:
                await obs.delete(s.name)
                removed.append(s.name)
            except Exception as exc:  # another replica pruned it first
                log.debug("pruning %s: %s", s.name, exc)
        # The delete marker each deletion leaves on the object's metadata subject: every
        # snapshot has a name of its own, so one per snapshot ever written stayed in the
        # stream, and every listing read them all (review hrev83). Those of this pruning and
        # any an earlier one left (an older netledger's, a purge that failed).
        failed: list[str] = []
        for name in sorted({*removed, *self.deleted}):
            try:
                await self.purge_marker(name)
            except Exception as exc:  # the next pruning tries again
                log.debug("purging the delete marker of %s: %s", name, exc)
                failed.append(name)
        if failed:  # e.g. credentials without the stream's purge (docs/security.md)
            log.warning(
                "%d snapshot delete marker(s) not purged (%s first): the next pruning tries again",
                len(failed),
                failed[0],
            )
        try:
            await self.purge_orphans(obs)
        except Exception as exc:  # the next pruning tries again
            log.debug("purging orphan chunks: %s", exc)
        return removed


# --- writing without stopping the event loop ---------------------------------------------------


def _open_read(path: str) -> io.BufferedReader:
    return open(path, "rb")


def _read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write_bytes(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _child_write(
    path: str, body_fn: Callable[[], bytes], parent: int
) -> int:  # pragma: no cover - runs in the forked child
    """In the forked child (:func:`.forked.fork`): encode, hash, write; the exit status."""
    die_with_parent(parent)
    # The parent's asyncio wakeup fd must not hear about our signals (and is closed below).
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # The parent's sockets (its NATS connection; an executor's netlink sockets, its dnsmasq
    # pipes) are not ours to hold open: the files are opened by name (found by review).
    close_inherited(keep=())
    if CHILD_NICE:
        os.nice(CHILD_NICE)
    body = body_fn()
    _write_bytes(path, body)
    _write_bytes(path + ".sha256", digest(body).encode())
    return 0


async def write_forked(
    state: State,
    seen: OrderedDict[str, SeenEvents],
    *,
    seq: int,
    stream: str,
    created: str,
    tmpdir: str | None = None,
    fork: bool = True,
    extra: Callable[[], dict[str, Any]] | None = None,
    prefix: str = BODY_PREFIX,
) -> tuple[str, str]:
    """Serialise the fold as it is *now* into a temporary file; return (path, sha256).

    With ``fork`` (POSIX), a child process encodes a copy-on-write image of memory while the
    event loop goes on (the only pause is ``fork`` itself: milliseconds). Without it, the
    encoding runs in the loop (it blocks for as long as it takes). Either way the image is
    taken before this coroutine first waits: nothing folded after the call is in it.
    ``extra`` builds the reader's own bookkeeping (events/snapshot.py ``dumps``) from the
    same image."""

    def body() -> bytes:
        more = extra() if extra is not None else None
        return encode_body(dumps(state, seen, seq=seq, stream=stream, created=created, extra=more))

    fd, path = tempfile.mkstemp(prefix=prefix, dir=tmpdir)
    os.close(fd)
    try:
        if fork and hasattr(os, "fork"):
            parent = os.getpid()
            pid = fork_child(lambda: _child_write(path, body, parent), close=())
            # One thread waits for the child, whatever happens to this task: a second waitpid
            # would race it for the exit status.
            waiter = asyncio.ensure_future(asyncio.to_thread(os.waitpid, pid, 0))
            try:
                _, status = await asyncio.wait_for(asyncio.shield(waiter), CHILD_TIMEOUT_S)
            except BaseException as exc:
                # Timed out, or the caller cancelled (a service closing): the child must not
                # outlive the wait — a wedged one would also hold the waiting thread, and the
                # interpreter's exit joins it.
                if not waiter.done():
                    os.kill(pid, signal.SIGKILL)
                if isinstance(exc, TimeoutError):
                    await waiter
                    raise RuntimeError("the snapshot writer took too long and was killed") from None
                raise
            if os.waitstatus_to_exitcode(status) != 0:
                raise RuntimeError(
                    f"the snapshot writer failed (exit {os.waitstatus_to_exitcode(status)})"
                )
            sha = _read_text(path + ".sha256").strip()
            os.unlink(path + ".sha256")
        else:
            data = body()
            _write_bytes(path, data)
            sha = digest(data)
    except BaseException:
        for p in (path, path + ".sha256"):
            try:
                os.unlink(p)
            except OSError:
                pass
        raise
    return path, sha


def _decoded(body: bytes, **how: Any) -> Snapshot:
    """:func:`loads`, any error it does not foresee a refusal too: a body whose hash matches
    but that this code decodes otherwise than its writer meant (a future writer's) is no
    reason to skip the older snapshots and fold the whole log (found by review). Running out
    of memory is no verdict on the snapshot: it goes on, as does a cancellation."""
    try:
        return loads(body, **how)
    except (SnapshotInvalid, MemoryError):
        raise
    except Exception as exc:
        raise SnapshotInvalid(f"undecodable: {exc.__class__.__name__}: {exc}") from exc
