"""A raw rtnetlink socket inside a named network namespace, with batched requests.

Why not ``IPRoute(netns=...)``: it *creates* a missing namespace (a typo would make a new, empty
host), and one request per call costs ~1.7 ms of Python. Here the namespace is entered from a
short-lived thread (``setns`` affects only the calling thread; the socket stays bound to the
namespace it was created in), requests are packed straight into bytes (:mod:`.nlencode`: the
bytes pyroute2's message classes make), sent many per ``sendmsg``, and every acknowledgement is
matched back to its request by sequence number. Dumps are read undecoded and parsed by
:mod:`.nlparse`, only what the executor uses (:meth:`RtSocket.read_raw`; a dump the kernel
marks interrupted is read again, or taken by a reader that mends what changed); pyroute2's
marshal decodes them whole for tests and tools (:meth:`RtSocket.dump`).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from . import nlparse
from .nlencode import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST
from .nlparse import NLM_F_DUMP_INTR, NLMSG_DONE, NLMSG_ERROR

if TYPE_CHECKING:
    from pyroute2.netlink import nlmsg
from .errors import DumpInterrupted, KernelNoAnswer, NamespaceNotFound, NotPermitted

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/netns"
#: Acked requests per sendmsg: small enough that the acks fit the receive buffer.
CHUNK = 150
#: Seconds to wait for the kernel's next reply: never block a pass (and the daemon) forever.
RECV_TIMEOUT = 30.0
_HDR = struct.Struct("=IHHII")
_ERR = struct.Struct("=i")
#: Dumps of a table made in a row while it keeps changing under them, before giving up.
DUMP_TRIES = 4

T = TypeVar("T")
#: a dump's messages as :meth:`RtSocket.dump_raw` yields them: (buffer, payload start, end)
Dump = Iterator[tuple[bytes, int, int]]
log = logging.getLogger("netledger.executor.netlink")
_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(netns: str) -> str:
    return os.path.join(NETNS_DIR, netns)


def check_netns(netns: str | None) -> None:
    if netns is not None and not os.path.exists(netns_path(netns)):
        raise NamespaceNotFound(
            f"network namespace {netns!r} does not exist ({netns_path(netns)})", netns=netns
        )


def in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a thread that has entered ``netns`` (or directly when None)."""
    if netns is None:
        return fn()
    check_netns(netns)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            fd = os.open(netns_path(netns), os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, f"setns({netns}): {os.strerror(e)}")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target, name=f"netns-{netns}")
    t.start()
    t.join()
    if "error" in box:
        err = box["error"]
        if isinstance(err, PermissionError):
            raise NotPermitted(f"entering network namespace {netns!r} needs root (CAP_SYS_ADMIN)")
        raise err
    return box["value"]  # type: ignore[no-any-return]


def _dump_failed(code: int) -> NoReturn:
    e = code or errno.EIO
    raise OSError(e, f"netlink dump failed: {os.strerror(e)}")


@dataclass
class Request:
    """One netlink request: its body (the message after the header, executor/nlencode.py);
    ``ok`` lists errnos that mean "already so" (EEXIST, ENODEV...); ``follows``: sent in the
    same ``sendmsg`` as the request before it, whatever the chunk size (a link's creation and
    its ownership mark: no crash may come between them)."""

    body: bytes
    type: int
    flags: int
    ok: tuple[int, ...] = ()
    tag: object = None
    follows: bool = False


def chunks(requests: list[Request], size: int) -> list[tuple[int, int]]:
    """(start, stop) of each ``sendmsg``: ``size`` requests, more when the next ones
    ``follow`` the last (never split)."""
    starts: list[int] = []
    for i, req in enumerate(requests):
        if not starts or (i - starts[-1] >= size and not req.follows):
            starts.append(i)
    return list(zip(starts, [*starts[1:], len(requests)], strict=False))


class RtSocket:
    def __init__(self, netns: str | None = None, timeout: float = RECV_TIMEOUT) -> None:
        self.netns = netns
        self.timeout = timeout

        def make() -> socket.socket:
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            s.bind((0, 0))
            s.settimeout(timeout)
            return s

        self.sock = in_netns(netns, make)
        self.seq = 0
        self._marshal: Any = None
        #: dumps the kernel marked interrupted (dropped and done again, or ``accepted``)
        self.interrupted = 0
        #: ... of them taken as they were (``read_raw(accept_last=True)``: the last try)
        self.accepted = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RtSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _recv(self) -> bytes:
        try:
            return self.sock.recv(1 << 20)
        except TimeoutError:
            # A late reply is harmless: every reader matches replies by sequence number.
            raise KernelNoAnswer(
                f"no netlink answer from the kernel within {self.timeout:.0f}s"
                + (f" (namespace {self.netns})" if self.netns else "")
            ) from None

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0x7FFFFFFF or 1
        return self.seq

    # --- dumps --------------------------------------------------------------------------
    #
    # The kernel builds a dump a bufferful per ``recv``; when the table changed between two
    # (its generation moved: a link made or deleted, an address added...) it marks the next
    # message — or the final NLMSG_DONE — with NLM_F_DUMP_INTR, and the dump may have skipped
    # or repeated entries (the kernel resumes by position in a list that moved): an unchanged
    # link missing from the cache's dump looked deleted until the next sweep, an instance's
    # MAC missing from the sighting reporter's FDB read looked gone. The cache's journal of
    # notifications mends only what changed, not what the shift skipped. So a marked dump is
    # done again: :meth:`read_raw` (the executor's reads) hands a dump to its reader and, when
    # the dump ends marked, runs the reader again on a new one; :meth:`dump` (tests, tools)
    # reads it whole first.

    def dump(self, msg: nlmsg, msg_type: int) -> list[nlmsg]:
        """A dump decoded by pyroute2 (every attribute: tests and tools; the executor's own
        reads use :meth:`read_raw`), read whole and done again while the kernel marks it
        interrupted, as :meth:`read_raw` does. pyroute2's package is imported here, not with
        the module: importing it takes ~0.1 s, a tenth of an ``executor run --once``."""
        if self._marshal is None:
            from pyroute2.netlink.rtnl.marshal import MarshalRtnl

            self._marshal = MarshalRtnl()

        def once() -> list[nlmsg]:
            seq = self._next_seq()
            msg["header"]["type"] = msg_type
            msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
            msg["header"]["sequence_number"] = seq
            msg.encode()
            self.sock.send(msg.data)
            got: list[nlmsg] = []
            seen = 0
            while True:
                for part in self._marshal.parse(self._recv()):
                    header = part["header"]
                    if header["sequence_number"] != seq:
                        continue
                    seen |= header["flags"]
                    mtype = header["type"]
                    if mtype == NLMSG_DONE:
                        if seen & NLM_F_DUMP_INTR:
                            self.interrupted += 1
                            raise self._interrupted(msg_type, 1)
                        return got
                    if mtype == NLMSG_ERROR:
                        err = part.get("error")
                        _dump_failed(-int(err or 0) if isinstance(err, int) else 0)
                    got.append(part)

        return self._redone(once, msg_type)

    def dump_raw(self, body: bytes, msg_type: int, strict: bool = True) -> Dump:
        """A dump of ``msg_type`` (``body``: the family header, e.g. :func:`.nlencode.link_dump`),
        undecoded: (buffer, payload start, message end) per message, for :mod:`.nlparse` to
        read only what it needs. Streamed, each bufferful handed out as it is read: held whole
        until its end, the sweep's dump (2,401 links, 1,200 addresses and flood entries) took
        ~1.8 ms more CPU and ~5 MB more memory — its buffers' fresh pages. So a dump the kernel
        marked interrupted is known only at its end: once its NLMSG_DONE is read, it raises
        :class:`.errors.DumpInterrupted`, and what the reader made of it must be dropped;
        :meth:`read_raw` does that, and dumps again. ``strict=False``: a marked dump ends as
        any other (counted in :attr:`accepted`)."""
        seq = self._next_seq()
        head = nlparse.NLMSG_HDR.pack(
            nlparse.NLMSG_HDR.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0
        )
        self.sock.send(head + body)
        seen = 0
        while True:
            data = self._recv()
            for mtype, flags, s, start, end in nlparse.messages(data):
                if s != seq:
                    continue
                seen |= flags
                if mtype == NLMSG_DONE:
                    if seen & NLM_F_DUMP_INTR:
                        self.interrupted += 1
                        if strict:
                            raise self._interrupted(msg_type, 1)
                        self.accepted += 1
                    return
                if mtype == NLMSG_ERROR:
                    _dump_failed(-_ERR.unpack_from(data, start)[0])
                try:
                    yield data, start, end
                except GeneratorExit:
                    # The reader stopped early: the kernel would refuse the next dump on this
                    # socket (EBUSY) until the rest of this one is read.
                    self._drain(seq)
                    raise

    def read_raw(
        self,
        body: bytes,
        msg_type: int,
        reader: Callable[[Dump], T],
        *,
        tries: int = DUMP_TRIES,
        accept_last: bool = False,
    ) -> T:
        """What ``reader`` makes of a :meth:`dump_raw` of ``msg_type``. ``reader`` must read
        the dump to its end (the kernel's mark may come on its NLMSG_DONE) and start afresh
        each time it is called (a dump memo's ``begin``): a dump marked interrupted is given
        up and ``reader`` runs again on a new one, up to ``tries`` dumps; then
        :class:`.errors.DumpInterrupted` — or, ``accept_last``, the last dump taken as it is
        (for a reader that mends what changed meanwhile by other means: the cache's journal
        of notifications).

        Each try is a whole dump: under a steady stream of changes — the executor's own, a
        new network's links every few milliseconds — most of a large host's dumps are marked
        (bench/kernel_tail.py, 30 new networks a second at 1,200: with four tries the sweep's
        dump and the sighting read took 2-3 times their CPU, beside the passes, and the
        command -> kernel p99 1-3x). So the periodic reads try twice."""
        for _ in range(tries - 1):
            try:
                return reader(self.dump_raw(body, msg_type))
            except DumpInterrupted:
                log.debug("netlink dump (type %d) interrupted by a change: again", msg_type)
        try:
            return reader(self.dump_raw(body, msg_type, strict=not accept_last))
        except DumpInterrupted:
            raise self._interrupted(msg_type, tries) from None

    def _redone(self, once: Callable[[], T], msg_type: int) -> T:
        """``once()`` again while it raises :class:`.errors.DumpInterrupted`, up to
        :data:`DUMP_TRIES` times. Then that error, not the last dump with a warning as ``ip``
        does ("Dump was interrupted and may be inconsistent"): every caller already takes a
        failed read as a failed pass or poll, tried again at the next (as after
        :class:`.errors.KernelNoAnswer`), and the sighting reporter must report nothing
        rather than a partial view (docs/reclaim.md)."""
        for _ in range(DUMP_TRIES - 1):
            try:
                return once()
            except DumpInterrupted:
                log.debug("netlink dump (type %d) interrupted by a change: again", msg_type)
        try:
            return once()
        except DumpInterrupted:
            raise self._interrupted(msg_type, DUMP_TRIES) from None

    def _interrupted(self, msg_type: int, tries: int) -> DumpInterrupted:
        return DumpInterrupted(
            f"{tries} netlink dump(s) of type {msg_type} in a row were interrupted by changes "
            "of the table" + (f" (namespace {self.netns})" if self.netns else ""),
            netns=self.netns,
            tries=tries,
        )

    def _drain(self, seq: int) -> None:
        """Read and drop the rest of dump ``seq`` (headers only, no decoding)."""
        try:
            while True:
                data = self._recv()
                off = 0
                while off + _HDR.size <= len(data):
                    length, mtype, _flags, s, _pid = _HDR.unpack_from(data, off)
                    if length < _HDR.size:
                        break
                    if s == seq and mtype in (NLMSG_DONE, NLMSG_ERROR):
                        return
                    off += (length + 3) & ~3
        except (OSError, KernelNoAnswer):  # give up: the next dump says what is wrong
            return

    # --- batched requests ---------------------------------------------------------------

    def batch(
        self, requests: list[Request], chunk_size: int = CHUNK, pause: float = 0.0
    ) -> list[int]:
        """Send every request in order; return the errno of each (0: success or ok).

        Only the last request of a ``sendmsg`` asks for an acknowledgement: the kernel handles
        the messages of one send in order and reports every failure whether asked or not, so
        once the last one's ack is read every earlier failure has been read before it. One ack
        per request cost a ``recv`` (and a turn of the GIL) each: ~4,000 for a first pass over
        1,000 networks, each waiting behind any other thread holding the interpreter.

        ``pause`` sleeps between chunks: slow motion for tests that interrupt an apply."""
        results = [0] * len(requests)
        for start, stop in chunks(requests, chunk_size):
            if start and pause:
                time.sleep(pause)
            by_seq: dict[int, int] = {}
            buf = bytearray()
            last = stop - 1
            for i in range(start, stop):
                req = requests[i]
                seq = self._next_seq()
                by_seq[seq] = i
                flags = NLM_F_REQUEST | req.flags
                if i == last:
                    flags |= NLM_F_ACK
                buf += _HDR.pack(_HDR.size + len(req.body), req.type, flags, seq, 0)
                buf += req.body
            last_seq = self.seq
            self.sock.send(bytes(buf))
            acked = False
            while not acked:
                data = self._recv()
                off = 0
                while off + _HDR.size <= len(data):
                    length, mtype, _flags, seq, _pid = _HDR.unpack_from(data, off)
                    if length < _HDR.size:
                        break
                    if mtype == NLMSG_ERROR and seq in by_seq:
                        (code,) = _ERR.unpack_from(data, off + _HDR.size)
                        i = by_seq.pop(seq)
                        e = -code
                        results[i] = 0 if e in requests[i].ok else e
                        if seq == last_seq:
                            acked = True
                    off += (length + 3) & ~3
        return results
