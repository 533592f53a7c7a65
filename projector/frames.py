"""What crosses the projector's pipes: length-prefixed pickled frames, and the raw message.

The reader (:mod:`.runner`) sends the writer's processes (:mod:`.writer_proc`) lists of raw
messages (:func:`raw_message`: the stream sequence, stored time and pending count already taken
out of the reply subject); they answer with small acknowledgements. Each frame is a 4-byte
little-endian length and a pickle (:func:`frame`, :class:`FrameReader`); :mod:`.writer_proc`'s
docstring lists the frames each side sends.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import select
import struct
from collections.abc import Callable
from typing import Any

import msgspec
from nats.aio.msg import Msg

from .store import Plan, RawTuple

#: A frame's length prefix.
LENGTH = struct.Struct("<I")
_V1_TOKENS = 9
_modf = math.modf


def frame(obj: Any) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return LENGTH.pack(len(data)) + data


def _has_fast_mode() -> bool:
    try:
        pickle.Pickler(io.BytesIO()).fast = True
    except AttributeError:
        return False
    return True


_FAST = _has_fast_mode()


def data_frame(obj: Any) -> bytes:
    """:func:`frame` of plain data — tuples, lists, dicts, strings, numbers, ``None``, no
    object twice that must stay one, nothing that holds itself: what the reader and the
    projecting process send (messages, plans). Pickled without the memo (the pickler's
    ``fast`` mode), which remembers every object pickled in case it comes again: half of the
    pickling of a plan of 2,000 allocations (1.12 -> 0.58 us an event, ~5 % of the projecting
    process's work; the plan comes out ~7 % larger, a string met twice being written twice)."""
    if not _FAST:
        return frame(obj)
    buf = io.BytesIO()
    buf.write(b"\0\0\0\0")
    p = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
    p.fast = True
    p.dump(obj)
    view = buf.getbuffer()
    LENGTH.pack_into(view, 0, len(view) - 4)
    del view
    return buf.getvalue()


_plan_encoder = msgspec.msgpack.Encoder()
_decode_msgpack = msgspec.msgpack.Decoder().decode
#: A :func:`plan_frame`'s body back to ``(Plan, busy)``: decoded by its type, the rows and keys
#: come back as the tuples they were (and faster than untyped: lists, then rebuilt).
decode_plan_frame = msgspec.msgpack.Decoder(tuple[Plan, float]).decode
#: The first byte of every pickle this module writes (protocol 2 and later: PROTO).
_PICKLE = 0x80


def plan_frame(plan: Any, busy: float) -> bytearray:
    """The frame of ``(plan, busy)`` as msgpack (msgspec), read back by a :class:`FrameReader`
    given :data:`decode_plan_frame` (the committing process's). A third of the instructions
    of pickling it (fast mode: ~10,700 an allocation in the projecting process, its
    fourth-largest cost), and faster to read. msgpack carries every value a row holds (str,
    int, float, bytes, bool, None) as it was; one it does not carry exactly (an int beyond 64
    bits, a string with a lone surrogate) sends the frame pickled instead (:func:`data_frame`):
    the reader tells them apart by the first byte."""
    buf = bytearray(4)
    try:
        _plan_encoder.encode_into((plan, busy), buf, 4)
    except (TypeError, ValueError, OverflowError):  # UnicodeEncodeError is a ValueError
        return bytearray(data_frame((plan, busy)))
    LENGTH.pack_into(buf, 0, len(buf) - 4)
    return buf


class FrameReader:
    """Frames out of a pipe (blocking reads; ``poll`` says whether bytes are waiting): pickles,
    or msgpack (:func:`plan_frame`)."""

    def __init__(self, fd: int, decode_msgpack: Callable[[Any], Any] = _decode_msgpack) -> None:
        self.fd = fd
        self.decode_msgpack = decode_msgpack
        self.buf = bytearray()
        self.eof = False

    def next(self) -> tuple[bool, Any]:
        """``(True, frame)`` if a whole frame is buffered, else ``(False, None)``."""
        if len(self.buf) >= 4:
            (n,) = LENGTH.unpack_from(self.buf)
            if len(self.buf) >= 4 + n:
                body = memoryview(self.buf)[4 : 4 + n]
                obj = pickle.loads(body) if body[0] == _PICKLE else self.decode_msgpack(body)
                del body
                del self.buf[: 4 + n]
                return True, obj
        return False, None

    def fill(self) -> None:
        """Read what the pipe holds (blocks until at least one byte, or end of file)."""
        data = os.read(self.fd, 1 << 20)
        if not data:
            self.eof = True
        self.buf += data

    def waiting(self, timeout: float | None = 0) -> bool:
        return bool(readable([self.fd], timeout))


def readable(fds: list[int], timeout: float | None = None) -> set[int]:
    """Those of ``fds`` with something to read (or whose other end is closed), after waiting at
    most ``timeout`` seconds (None: until one is). ``poll``, not ``select``: the pipes keep the
    numbers they had in the parent, and ``select`` fails on 1,024 and above (a projector inside
    a process with many descriptors open)."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    ms = None if timeout is None else math.ceil(timeout * 1000)
    return {fd for fd, _ in poller.poll(ms)}


def ack_numbers(reply: str) -> tuple[int, int, int]:
    """(stream sequence, timestamp ns, pending) from a JetStream message's reply subject, as
    nats-py's ``Msg.metadata`` reads them (both reply layouts), without building it."""
    tokens = Msg.Metadata._get_metadata_fields(reply)
    if len(tokens) == _V1_TOKENS:
        return int(tokens[5]), int(tokens[7]), int(tokens[8])
    ack = Msg.Ack
    return int(tokens[ack.StreamSeq]), int(tokens[ack.Timestamp]), int(tokens[ack.NumPending])


def stream_time(ts_ns: int) -> float:
    """The stored time as the projection has always recorded it: nats-py's metadata timestamp
    (a datetime, so rounded to the microsecond) as epoch seconds.

    That is ``datetime.fromtimestamp(ts_ns / 1e9, UTC).timestamp()`` (a test checks it), done
    as ``datetime`` does it — the float's fraction rounded half to even to microseconds, then
    exact microseconds / 10**6 — in half the time: it runs for every message."""
    frac, whole = _modf(ts_ns / 1_000_000_000.0)
    us = round(frac * 1e6)
    if us >= 1_000_000:
        us -= 1_000_000
        whole += 1.0
    elif us < 0:
        us += 1_000_000
        whole -= 1.0
    return (int(whole) * 1_000_000 + us) / 1_000_000


def raw_message(seq: int, subject: str, data: bytes, reply: str) -> RawTuple:
    """What the reader sends the writer for a message: the fields of a :class:`~.store.Raw`,
    with the stored time and the pending count out of the reply subject."""
    head, _, _, ts, pending = reply.rsplit(".", 4)
    if head.count(".") != 4:  # not $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>...
        _, t, p = ack_numbers(reply)
        return (seq, subject, data, stream_time(t), p)
    return (seq, subject, data, stream_time(int(ts)), int(pending))
