"""Snapshots of an executor's view of the log, in a local file: a restart reads only the tail.

Without them an executor's start reads its whole share from sequence 1, its own host subject
included — every report it ever appended (16,000 of them made ``HostView.start`` 362 ms
against 69 ms for the same share on a fresh log: issue 13). A host that churns for years would
pay its age at every restart; DESIGN.md wants every cost to follow the change.

**What**: the fold of the share (``State``), the record of host events (``HostBook``,
``DhcpBook``) and the view's bookkeeping (the networks followed, those just joined, whether
every network is followed, a legacy announcement) at a stream sequence N up to which every
subject of the share has been read. On start the view is restored from it and the follower
reads the share from N+1 (a network needed later is read from where the fold left it, as
always: executor/share.py ``additions``).

**Where**: ``<state-dir>/view.snapshot`` on the host itself. An executor may publish only to
its own host subject (docs/security.md), so not to the service's snapshot bucket; and the
file is the host's own cache — deleting it costs one full read, nothing else.

**Never trusted blindly, never fatal**: the body is the service's snapshot codec
(events/snapshot.py: format, fold version, SHA-256, stream name and creation time, N not
beyond the stream's end, and the anchor — the digest of the stream's message N when it was
written — still that of the message N the stream holds) with the view's pieces in its ``extra`` map, which names its own
format (:data:`VIEW_FORMAT`), the host and how the view reads the log (share or whole log,
``--network-host``). Anything else — a missing, truncated or corrupt file, another host's,
another stream's (or one recreated under the same name), older code's — is refused with a
warning naming the reason, and the view reads its share from the start of the log.

The file: a first line naming it, a second holding the body's SHA-256 (hex) and its anchor
(hex; empty at N = 0), then the body (zlib). Written whole to a temporary file, fsynced and renamed over the old one: a crash leaves
the old snapshot or the new, never half of one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from netledger.events.host_events import HostAnnounced, HostNatApplied
from netledger.events.snapshot import ENCODING, SnapshotInvalid, loads
from netledger.events.state import State
from netledger.journal.snapshot_store import SnapshotStore, write_forked
from netledger.journal.stream import Connection

from .dhcpplan import DhcpBook
from .hosts import HostBook

log = logging.getLogger("netledger.executor.snapshot")

#: The layout of the view's pieces in the snapshot's ``extra`` map (the fold's own layout is
#: the service codec's format and FOLD_VERSION). Bump it when HostBook, DhcpBook or what the
#: view restores changes: the round-trip test (tests/executor/test_view_snapshot_codec.py)
#: fails until the codec below writes every field.
VIEW_FORMAT = 1
MAGIC = b"netledger-executor-view-snapshot\n"
FILE_NAME = "view.snapshot"
#: Write a snapshot once this many messages of the share were read since the last one (or
#: since the start): a restart then reads at most about this many, whatever the host's age.
DEFAULT_EVERY = 1000
#: How long a due snapshot waits for a quiet moment (the pass's reports in the log and read
#: back, no resubscription running) before it is left to the next pass.
SETTLE_TRIES = 100
SETTLE_PAUSE_S = 0.02


@dataclass
class ViewSnapshot:
    """A view as restored from a snapshot: everything of the share folded up to ``seq``."""

    seq: int
    state: State
    book: HostBook
    dhcp_book: DhcpBook
    networks: set[str]
    joining: set[str]
    every: bool
    legacy_announcement: bool


@dataclass(frozen=True)
class ViewKind:
    """Whose view, read how: a snapshot of another is refused."""

    host: str
    share: bool
    network_host: bool

    def describe(self) -> str:
        how = "its share" if self.share else "the whole log"
        return f"host {self.host} reading {how}" + (", --network-host" if self.network_host else "")


# --- the view's pieces (pure) -----------------------------------------------------------------


def book_to_wire(b: HostBook) -> dict[str, Any]:
    """Every field of the host book, msgpack-ready."""
    return {
        "me": b.me,
        "announced": [a.to_data() for a in b.announced.values()],
        "links": sorted(b.links),
        "addresses": sorted([i, a] for i, a in b.addresses),
        "fdb": sorted([i, d] for i, d in b.fdb),
        "nat": None if b.nat is None else b.nat.to_data(),
        "forwarding": b.forwarding,
        "forwarding_v6": b.forwarding_v6,
        "last_reconciled_seq": b.last_reconciled_seq,
    }


def book_from_wire(w: dict[str, Any]) -> HostBook:
    announced = [HostAnnounced.from_data(a) for a in w["announced"]]
    nat = None if w["nat"] is None else HostNatApplied.from_data(w["nat"])
    assert all(isinstance(a, HostAnnounced) for a in announced)
    assert nat is None or isinstance(nat, HostNatApplied)
    return HostBook(
        me=str(w["me"]),
        announced={a.host: a for a in announced if isinstance(a, HostAnnounced)},
        links=set(w["links"]),
        addresses={(i, a) for i, a in w["addresses"]},
        fdb={(i, d) for i, d in w["fdb"]},
        nat=nat if isinstance(nat, HostNatApplied) else None,
        forwarding=bool(w["forwarding"]),
        forwarding_v6=bool(w["forwarding_v6"]),
        last_reconciled_seq=int(w["last_reconciled_seq"]),
    )


def dhcp_to_wire(d: DhcpBook) -> dict[str, Any]:
    return {"me": d.me, "running": dict(d.running), "network": dict(d.network)}


def dhcp_from_wire(w: dict[str, Any]) -> DhcpBook:
    return DhcpBook(me=str(w["me"]), running=dict(w["running"]), network=dict(w["network"]))


def view_to_wire(
    kind: ViewKind,
    book: HostBook,
    dhcp_book: DhcpBook,
    networks: set[str],
    joining: set[str],
    every: bool,
    legacy_announcement: bool,
) -> dict[str, Any]:
    """The ``extra`` map of a view's snapshot (the fold itself is the codec's ``state``)."""
    return {
        "view": VIEW_FORMAT,
        "host": kind.host,
        "share": kind.share,
        "network_host": kind.network_host,
        "networks": sorted(networks),
        "joining": sorted(joining),
        "every": every,
        "legacy_announcement": legacy_announcement,
        "book": book_to_wire(book),
        "dhcp": dhcp_to_wire(dhcp_book),
    }


def view_from_wire(kind: ViewKind, seq: int, state: State, w: dict[str, Any]) -> ViewSnapshot:
    """Check that ``w`` is a view of ``kind`` in this code's layout and decode it; raise
    :class:`SnapshotInvalid` with the reason."""
    if w.get("view") != VIEW_FORMAT:
        raise SnapshotInvalid(f"view format {w.get('view')!r}, this code reads {VIEW_FORMAT}")
    theirs = ViewKind(str(w.get("host")), w.get("share") is True, w.get("network_host") is True)
    if theirs != kind:
        raise SnapshotInvalid(f"taken by {theirs.describe()}, not by {kind.describe()}")
    try:
        return ViewSnapshot(
            seq=seq,
            state=state,
            book=book_from_wire(w["book"]),
            dhcp_book=dhcp_from_wire(w["dhcp"]),
            networks=set(w["networks"]),
            joining=set(w["joining"]),
            every=bool(w["every"]),
            legacy_announcement=bool(w["legacy_announcement"]),
        )
    except Exception as exc:
        raise SnapshotInvalid(f"undecodable view: {exc.__class__.__name__}: {exc}") from None


# --- the file ---------------------------------------------------------------------------------


def file_bytes(body: bytes, sha256: str, anchor: str) -> bytes:
    return MAGIC + f"{sha256} {anchor}".encode() + b"\n" + body


def parse_file(data: bytes) -> tuple[str, str | None, bytes]:
    """(recorded SHA-256, anchor — None in a file written before anchors —, body) of a
    snapshot file's bytes."""
    if not data.startswith(MAGIC):
        raise SnapshotInvalid("not an executor view snapshot (no header)")
    rest = data[len(MAGIC) :]
    line, sep, body = rest.partition(b"\n")
    sha, space, anchor = line.decode("ascii", "replace").partition(" ")
    if not sep or len(sha) != 64:
        raise SnapshotInvalid("no content hash recorded (truncated header)")
    return sha, (anchor if space else None), body


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def install(path: str, body_path: str, sha256: str, anchor: str) -> int:
    """Put the body at ``body_path`` in place as ``path`` (header added), atomically and
    durably: temporary file, fsync, rename, fsync of the folder. Returns the file's size."""
    with open(body_path, "rb") as f:
        data = file_bytes(f.read(), sha256, anchor)
    folder = os.path.dirname(path) or "."
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return len(data)


def body_prefix(path: str) -> str:
    """The name of the forked writer's body files of the snapshot at ``path`` starts so
    (``<name>.body-``): its own, not another program's in the same folder."""
    return f"{os.path.basename(path)}.body-"


def remove_leftovers(path: str) -> list[str]:
    """Delete what an earlier write of the snapshot at ``path`` left behind when it was killed
    mid-way (the forked writer's body, :func:`body_prefix`; ``<path>.tmp``): one snapshot of
    this name is written at a time. Nothing else in the folder is touched (a ``--state-dir``
    shared with other programs: a command service's snapshot bodies are ``netledger-snapshot-*``
    in its temporary folder). The names deleted."""
    folder = os.path.dirname(path) or "."
    tmp = os.path.basename(f"{path}.tmp")
    body = body_prefix(path)
    gone: list[str] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return gone
    for name in names:
        if name == tmp or name.startswith(body):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                continue
            gone.append(name)
    return gone


# --- loading and writing ----------------------------------------------------------------------


@dataclass
class SnapshotStats:
    """What the view's snapshots did (logs, tests, the bench)."""

    loaded_seq: int | None = None
    #: why the snapshot at start was not used (None: used, or never looked for)
    refused: str | None = None
    written: int = 0
    last_written_seq: int | None = None
    last_bytes: int | None = None
    last_write_seconds: float | None = None
    last_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ViewSnapshots:
    """Loads and writes one host's view snapshot (``path``); ``every``: messages read between
    two snapshots (0: never write); ``load``: False ignores the file at start (repairs)."""

    def __init__(
        self,
        conn: Connection,
        path: str,
        kind: ViewKind,
        *,
        every: int = DEFAULT_EVERY,
        load: bool = True,
        fork: bool = True,
    ) -> None:
        self.conn = conn
        self.path = path
        self.kind = kind
        self.every = max(0, every)
        self.load_enabled = load
        self.fork = fork
        self.stats = SnapshotStats()
        #: messages the follower had read when the fold of the last snapshot was taken (the
        #: start counts as one: a restored view's follower counts only the tail)
        self.read_at_last = 0
        self._created: str | None = None

    async def load(self) -> ViewSnapshot | None:
        """The snapshot to start from, or None (a warning says why): read the log."""
        if not self.load_enabled:
            log.warning(
                "view snapshot %s ignored (--ignore-snapshot): reading this host's share of"
                " the log from the start",
                self.path,
            )
            self.stats.refused = "ignored"
            return None
        try:
            snap = await self._load()
        except SnapshotInvalid as exc:
            self.stats.refused = exc.reason
            log.warning(
                "view snapshot %s not used: %s; reading this host's share of the log from the"
                " start",
                self.path,
                exc.reason,
            )
            return None
        self.stats.loaded_seq = snap.seq
        log.info(
            "view snapshot %s loaded: fold at seq %d, %d network(s) followed",
            self.path,
            snap.seq,
            len(snap.networks),
        )
        return snap

    async def _load(self) -> ViewSnapshot:
        created, last = await SnapshotStore(self.conn).stream_identity()
        self._created = created
        try:
            data = await asyncio.to_thread(read_file, self.path)
        except FileNotFoundError:
            raise SnapshotInvalid("none written yet (no file)") from None
        except OSError as exc:
            raise SnapshotInvalid(f"unreadable: {exc}") from None
        sha, anchor, body = parse_file(data)
        snap = await asyncio.to_thread(
            loads,
            body,
            sha256=sha,
            stream=self.conn.stream,
            created=created,
            stream_last_seq=last,
            encoding=ENCODING,
        )
        view = view_from_wire(self.kind, snap.seq, snap.state, snap.extra)
        await SnapshotStore(self.conn).check_anchor(snap.seq, anchor)
        return view

    def due(self, read: int) -> bool:
        """Whether ``read`` (the follower's count of messages read) calls for a snapshot."""
        return self.every > 0 and read - self.read_at_last >= self.every

    async def created(self) -> str:
        """The stream's creation time (asked once: the snapshot records it)."""
        if self._created is None:
            self._created, _ = await SnapshotStore(self.conn).stream_identity()
        return self._created

    async def write(
        self,
        state: State,
        seq: int,
        read: int,
        extra: Callable[[], dict[str, Any]],
        created: str,
    ) -> int:
        """Write the fold as it is *now* at ``seq`` (the caller makes sure it is a prefix of the
        log there: nothing awaits between its check and the image, taken by a forked child
        before the first wait here). Returns the file's size."""
        t0 = time.monotonic()
        folder = os.path.dirname(self.path) or "."
        os.makedirs(folder, mode=0o700, exist_ok=True)
        if self.stats.written == 0:  # a write killed by an earlier run's end left these
            for name in remove_leftovers(self.path):
                log.info("removed %s, left by a snapshot write that did not finish", name)
        store = SnapshotStore(self.conn)
        reconnects = store.reconnects()  # before the image (no await until the fork)
        tmp, sha = await write_forked(
            state,
            OrderedDict(),
            seq=seq,
            stream=self.conn.stream,
            created=created,
            tmpdir=folder,
            fork=self.fork,
            extra=extra,
            prefix=body_prefix(self.path),
        )
        self.read_at_last = read  # the image is taken: what is read from now on is the next
        try:
            anchor = await store.anchor(seq, since=reconnects)
            size = await asyncio.to_thread(install, self.path, tmp, sha, anchor)
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        s = self.stats
        s.written += 1
        s.last_written_seq, s.last_bytes = seq, size
        s.last_write_seconds = round(time.monotonic() - t0, 3)
        s.last_error = None
        log.info(
            "view snapshot written at seq %d: %d bytes in %.3fs", seq, size, s.last_write_seconds
        )
        return size
