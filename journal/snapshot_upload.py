"""The command service's snapshot uploaded by the child that encoded it, on a connection of its own.

Why: the upload was the parent's, over the service's one NATS connection — a few megabytes in
128 KiB chunks, one publish-ack each (fsynced by a store that syncs every write), 110-475 ms
a snapshot — and that connection also carries the clients' requests, the service's appends
and their acks, and its follower's deliveries: a chunk in nats-py's write buffer or the
socket sits in front of them (bench/README.md "Commands arriving steadily": the open loop's
slowest 1 % waited where a snapshot was written). Now the forked child (journal/snapshot_store.py
``write_forked``'s, at the same niceness) encodes, hashes, connects exactly as the service did
(:func:`~.forked.connect_options`: the servers, user and password, token, credentials file or
nkey seed, TLS, inbox prefix) and uploads; the parent computes the snapshot's anchor meanwhile
and sends it down a pipe, then prunes once the child reports the object stored. The loop's
share is the ``fork`` and the anchor's one direct get.

What a start may load stays as before: the object's metadata is published after its last
chunk (:meth:`.SnapshotStore.upload`), so a child killed or failed mid-upload leaves chunks no
object names (purged by a later pruning), and a stored snapshot is checked (hash, format, fold
version, anchor) before it is used. A child that cannot connect (a limit on the user's
connections, a server its credentials do not reach) writes the file first, so the parent
uploads it itself as it used to (a warning says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import tempfile
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from netledger.events.snapshot import SeenEvents, digest, dumps, encode_body
from netledger.events.state import State
from netledger.journal import natsclient, snapshot_store
from netledger.journal.forked import close_inherited, connect_options, die_with_parent, fork
from netledger.journal.snapshot_store import SnapshotStore, StoredSnapshot
from netledger.journal.stream import CLOSE_TIMEOUT_S, Connection

log = logging.getLogger("netledger.snapshot")

#: the child's exit status when it could not connect (its file is written: the parent uploads)
NOT_CONNECTED = 3
#: how much of the child's report is read (a JSON object, or a failure's text)
REPORT_MAX = 1 << 14
#: what the parent writes before the anchor, then a newline (nothing at all: it gave up)
ANCHOR_TAG = "anchor:"


def _read_all(fd: int, limit: int = REPORT_MAX) -> bytes:
    out = b""
    while len(out) < limit:
        part = os.read(fd, limit - len(out))
        if not part:
            break
        out += part
    return out


def _read_line(fd: int) -> bytes:
    """Up to the first newline (without it), or all until the end: the line is the message,
    whoever else may hold the pipe's other end open (a process forked meanwhile)."""
    out = b""
    while b"\n" not in out and len(out) < REPORT_MAX:
        part = os.read(fd, 4096)
        if not part:
            return b""  # no whole line: nothing was said
        out += part
    return out.split(b"\n", 1)[0]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def _connect_and_upload(
    opts: dict[str, Any], stream: str, kind: str, body: bytes, seq: int, sha: str, anchor: str
) -> StoredSnapshot | str:
    """In the child: the stored snapshot, or why it could not connect (text)."""
    try:
        nc = await asyncio.wait_for(natsclient.connect(**opts), opts["connect_timeout"] * 2 + 1)
    except Exception as exc:
        return f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__
    try:
        conn = Connection(nc=nc, js=nc.jetstream(timeout=10.0), stream=stream)
        return await SnapshotStore(conn, kind).upload(body, seq, sha, anchor)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), CLOSE_TIMEOUT_S)


def _child(
    path: str,
    body_fn: Callable[[], bytes],
    anchor_fd: int,
    report_fd: int,
    opts: dict[str, Any],
    target: tuple[str, str, int],
    parent: int,
) -> int:  # pragma: no cover - runs in the forked child (tests drive it through the parent)
    """Encode, hash, write the file, wait for the anchor, connect, upload, report."""
    die_with_parent(parent)
    # The parent's asyncio wakeup fd must not hear about our signals; a stop of the service's
    # unit (SIGTERM to its group) stops the write too, as the file writer's child.
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # The parent's sockets (its NATS connection, the clients') are not ours to write on.
    close_inherited(keep=(anchor_fd, report_fd))
    try:
        if snapshot_store.CHILD_NICE:
            os.nice(snapshot_store.CHILD_NICE)
        body = body_fn()
        sha = digest(body)
        with open(path, "wb") as f:
            f.write(body)
        with open(path + ".sha256", "w") as f:
            f.write(sha)
        told = _read_line(anchor_fd).decode()
        if not told.startswith(ANCHOR_TAG):  # the parent gave up meanwhile
            return 1
        stream, kind, seq = target
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        got = loop.run_until_complete(
            _connect_and_upload(opts, stream, kind, body, seq, sha, told[len(ANCHOR_TAG) :])
        )
    except BaseException as exc:
        _write_all(report_fd, f"{exc.__class__.__name__}: {exc}"[:REPORT_MAX].encode())
        return 1
    if isinstance(got, str):
        _write_all(report_fd, got[:REPORT_MAX].encode())
        return NOT_CONNECTED
    _write_all(report_fd, json.dumps(asdict(got)).encode())
    return 0


async def put_forked(
    store: SnapshotStore,
    state: State,
    seen: OrderedDict[str, SeenEvents],
    *,
    seq: int,
    created: str,
    anchor: Callable[[], Awaitable[str]],
    tmpdir: str | None = None,
    extra: Callable[[], dict[str, Any]] | None = None,
) -> StoredSnapshot:
    """Store the fold as it is *now* as ``store``'s snapshot at ``seq``, encoded and uploaded
    by a forked child (POSIX); then prune. ``anchor`` is awaited in this process after the
    fork (:meth:`.SnapshotStore.anchor`, or the reader's own message at ``seq``). Raises
    (the child killed and reaped, its files removed) when the anchor cannot be had, the child
    fails, or it takes longer than ``snapshot_store.CHILD_TIMEOUT_S``. ``extra`` builds the
    reader's own bookkeeping from the same image (as ``snapshot_store.write_forked``)."""
    conn = store.conn

    def body() -> bytes:
        more = extra() if extra is not None else None
        return encode_body(
            dumps(state, seen, seq=seq, stream=conn.stream, created=created, extra=more)
        )

    opts = connect_options(conn, role="snapshot")
    target = (conn.stream, store.kind, seq)
    fd, path = tempfile.mkstemp(prefix=snapshot_store.BODY_PREFIX, dir=tmpdir)
    os.close(fd)
    anchor_r, anchor_w = os.pipe()
    report_r, report_w = os.pipe()
    parent = os.getpid()
    try:
        # No await before this: the image is the fold as the caller left it.
        pid = fork(
            lambda: _child(path, body, anchor_r, report_w, opts, target, parent),
            close=(anchor_w, report_r),
        )
    except BaseException:
        for x in (anchor_r, anchor_w, report_r, report_w):
            os.close(x)
        _remove(path)
        raise
    os.close(anchor_r)
    os.close(report_w)
    # One thread waits for the child, whatever happens to this task: a second waitpid would
    # race it for the exit status.
    waiter = asyncio.ensure_future(asyncio.to_thread(os.waitpid, pid, 0))
    try:
        try:
            told = await anchor()
            # (short: the pipe takes it at once; a child that died first is told by its status)
            with contextlib.suppress(BrokenPipeError):
                _write_all(anchor_w, f"{ANCHOR_TAG}{told}\n".encode())
        finally:
            os.close(anchor_w)
        try:
            _, status = await asyncio.wait_for(
                asyncio.shield(waiter), snapshot_store.CHILD_TIMEOUT_S
            )
        except TimeoutError:
            raise RuntimeError("the snapshot writer took too long and was killed") from None
        code = os.waitstatus_to_exitcode(status)
        report = _read_all(report_r).decode(errors="replace")
        if code == 0:
            stored = StoredSnapshot(**json.loads(report))
        elif code == NOT_CONNECTED:
            log.warning(
                "the snapshot writer could not connect to NATS (%s): uploading over the"
                " service's own connection",
                report,
            )
            return await store.put(path, seq, _read_sha(path), told)  # (prunes too)
        else:
            why = f": {report}" if report else ""
            raise RuntimeError(f"the snapshot writer failed (exit {code}){why}")
    except BaseException:
        # Failed, timed out, or the caller cancelled (a service closing): the child must not
        # outlive this — a wedged one would also hold the waiting thread, and the interpreter's
        # exit joins it. Killed mid-upload, it leaves chunks no object names.
        if not waiter.done():
            os.kill(pid, signal.SIGKILL)
        # Reaped before its files are removed (a kill takes effect at once; a second
        # cancellation is not held up).
        with contextlib.suppress(Exception):
            await asyncio.shield(waiter)
        raise
    finally:
        os.close(report_r)
        _remove(path)
    await store.stored(stored.name)
    return stored


def _read_sha(path: str) -> str:
    with open(path + ".sha256") as f:
        return f.read().strip()


def _remove(path: str) -> None:
    for p in (path, path + ".sha256"):
        with contextlib.suppress(OSError):
            os.unlink(p)
