"""Stored messages straight from nats-py's parser to a reader's handler.

Used on connections a long reader owns: the projector's (``projector run``) and the command
service's catch-up child (journal/catchup.py). There nats-py's work per message is most of
the reader's: after parsing the protocol it builds a ``Msg`` (decoding subject and reply),
checks the ordered consumer's sequence, queues the message, and a task per subscription takes
it out and awaits the callback, which then takes the reply subject apart once more. Here the
connection's ``_process_msg`` is wrapped: a stored message of a subscription whose callback
was registered (:func:`register`) is handed at once to a plain function
``handler(stream seq, subject, data, timestamp ns, pending)``, with the ordered consumer's
bookkeeping done as nats-py does it (delivered sequence, last stream sequence, activity, flow
control's count of delivered messages). Everything else takes nats-py's own path unchanged:
status messages (heartbeats, flow control: the headers name a status), a message out of
consumer order (nats-py resets the ordered consumer and drops it, as always), other
subscriptions. Every stored message of a registered subscription takes this path, so the
handler sees them in the order they arrived, as with the callback. The connection's parser
also takes whole ``HMSG`` frames out of its buffer itself (:func:`_install_parser`), leaving
the rest of the protocol to nats-py's.

Only on the nats-py releases it was checked against (:data:`CHECKED`), and only if the client
looks as this code expects (``_process_msg``, ``_subs``, ``_error_cb``, ``stats``); otherwise
nothing changes and the callback gets every message (the parser is taken over only if it is
nats-py's own ``Parser``). Measured on 100,000 stored
messages: the reader's CPU 13.5 -> 11.2 us a message with the direct delivery, ~8 with the
parser's fast path too (tests/projector/test_projector_fastread.py compares it with
nats-py's parser over random frames cut at random places).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import nats.aio.client as nats_client
from nats.aio.msg import Msg
from nats.protocol.parser import AWAITING_CONTROL_LINE, Parser

#: handler(stream seq, subject, data, stored time ns, pending)
Handler = Callable[[int, str, bytes, int, int], None]

_V1_TOKENS = 9
_STORED = b"NATS/1.0\r\n"  # a stored message's headers; a status has its code on this line
_ATTR = "_netledger_fast_handlers"
_LINGER = "_netledger_fast_lingering"


def reply_numbers(reply: str) -> tuple[int, int, int, int]:
    """(stream seq, consumer seq, timestamp ns, pending) from a JetStream reply subject, as
    nats-py's ``Msg.Metadata`` reads them (both reply layouts)."""
    head, sseq, dseq, ts, pending = reply.rsplit(".", 4)
    if head.count(".") == 4:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>...
        return int(sseq), int(dseq), int(ts), int(pending)
    tokens = Msg.Metadata._get_metadata_fields(reply)
    if len(tokens) == _V1_TOKENS:
        return int(tokens[5]), int(tokens[6]), int(tokens[7]), int(tokens[8])
    ack = Msg.Ack
    return (
        int(tokens[ack.StreamSeq]),
        int(tokens[ack.ConsumerSeq]),
        int(tokens[ack.Timestamp]),
        int(tokens[ack.NumPending]),
    )


#: nats-py releases whose internals this was checked against (the names it uses could stay
#: while their meaning changes: another release keeps nats-py's own path until checked).
CHECKED = ("2.16.",)


def install(nc: Any) -> bool:
    """Wrap ``nc``'s message processing (once); False if nats-py does not look as expected."""
    if getattr(nc, _ATTR, None) is not None:
        return True
    if not str(getattr(nats_client, "__version__", "")).startswith(CHECKED):
        return False
    original = getattr(nc, "_process_msg", None)
    subs = getattr(nc, "_subs", None)
    if (
        not inspect.iscoroutinefunction(original)
        or not isinstance(subs, dict)
        or not isinstance(getattr(nc, "stats", None), dict)
        or not hasattr(nc, "_error_cb")
    ):
        return False
    handlers: dict[Any, Handler] = {}
    lingering: dict[int, Any] = {}  # sid -> a subscription gone, its messages still taken
    stats = nc.stats

    def handle(
        sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> Exception | bool:
        """Deliver a stored message of a registered subscription: True, or the handler's
        error; False if it is not one (nats-py's own path must take it)."""
        sub = subs.get(sid)
        if sub is None and lingering:
            sub = lingering.get(sid)
        handler = handlers.get(getattr(sub, "_cb", None)) if handlers else None
        if sub is None or handler is None or not reply or (headers and headers[:10] != _STORED):
            return False
        r = reply.decode()
        try:
            sseq, dseq, ts, pending = reply_numbers(r)
        except ValueError:
            return False
        jsi = getattr(sub, "_jsi", None)
        if jsi is not None:
            jsi._active = True
            if jsi._ordered:
                if dseq != jsi._dseq:
                    return False  # out of order: nats-py resets the ordered consumer
                jsi._dseq = dseq + 1
                jsi._sseq = sseq
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        sub._received += 1
        if jsi is not None:
            jsi.track_sequences(r)  # flow control counts it delivered (_received) and seen
        try:
            handler(sseq, subject.decode(), data, ts, pending)
        except Exception as exc:  # nats-py reports a callback's error to its error callback
            return exc
        return True

    async def process_msg(
        sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        done = handle(sid, subject, reply, data, headers)
        if done is False:
            await original(sid, subject, reply, data, headers)
        elif done is not True:
            await nc._error_cb(done)

    nc._process_msg = process_msg
    setattr(nc, _ATTR, handlers)
    setattr(nc, _LINGER, lingering)
    _install_parser(nc, handle)
    return True


def _install_parser(nc: Any, handle: Callable[..., Exception | bool]) -> None:
    """Take complete ``HMSG`` frames out of nats-py's parser buffer without its regular
    expressions, and without moving the rest of the buffer down after each one (nats-py
    deletes every line and payload from the front of a 32 KiB buffer); whatever else the
    buffer starts with (PING, INFO, MSG, an error, a frame cut short mid-payload) is left to
    nats-py's parser, as is every message ``handle`` does not take (given with the consumed
    bytes gone, as nats-py would)."""
    ps = getattr(nc, "_ps", None)
    if (
        not isinstance(ps, Parser)
        or type(ps).parse is not Parser.parse
        or not isinstance(getattr(ps, "buf", None), bytearray)
        or getattr(ps, "state", None) is None
    ):
        return
    slow = ps.parse

    async def parse(data: bytes = b"") -> None:
        buf = ps.buf
        buf.extend(data)
        if ps.state != AWAITING_CONTROL_LINE:
            await slow()
            return
        pos, n = 0, len(buf)
        whole = True  # what is left starts with a frame not yet complete
        while pos < n:
            if not buf.startswith(b"HMSG ", pos):
                whole = False
                break
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            args = buf[pos + 5 : eol].split()
            reply: bytes | bytearray = b""
            try:
                if len(args) == 5:
                    subject, sid, reply, hsize, size = args
                elif len(args) == 4:
                    subject, sid, hsize, size = args
                else:
                    raise ValueError
                sid_n, hsize_n, size_n = int(sid), int(hsize), int(size)
            except ValueError:
                whole = False  # nats-py's parser says what is wrong with it
                break
            body = eol + 2
            end = body + size_n
            if end + 2 > n:
                break
            headers = bytes(buf[body : body + hsize_n]) if hsize_n > 0 else None
            payload = bytes(buf[body + hsize_n : end])
            pos = end + 2
            subject_b, reply_b = bytes(subject), bytes(reply)
            done = handle(sid_n, subject_b, reply_b, payload, headers)
            if done is True:
                continue
            del buf[:pos]
            if done is False:
                await nc._process_msg(sid_n, subject_b, reply_b, payload, headers)
            else:
                await nc._error_cb(done)
            buf = ps.buf  # (a reconnect resets the parser meanwhile)
            pos, n = 0, len(buf)
            if ps.state != AWAITING_CONTROL_LINE:
                break
        if pos:
            del buf[:pos]
        if not whole and buf:
            await slow()

    ps.parse = parse  # type: ignore[method-assign]


def register(nc: Any, callback: Any, handler: Handler) -> bool:
    """Send the stored messages of subscriptions with ``callback`` to ``handler`` instead
    (:func:`install` first); False if this connection cannot."""
    handlers = getattr(nc, _ATTR, None)
    if handlers is None:
        return False
    handlers[callback] = handler
    return True


def unregister(nc: Any, callback: Any) -> None:
    handlers = getattr(nc, _ATTR, None)
    if handlers is not None:
        handlers.pop(callback, None)
    unlinger(nc)


def linger(nc: Any, sub: Any) -> None:
    """Go on handing the stored messages of ``sub`` to its handler once it is unsubscribed —
    those the server had sent before the unsubscribe reached it, in order on the connection —
    until :func:`unlinger` (nats-py drops them: a consumer paused by unsubscribing read them
    all again; measured, ~0.7 of a catch-up's messages were delivered twice)."""
    lingering = getattr(nc, _LINGER, None)
    sid = getattr(sub, "_id", None)
    if lingering is not None and sid is not None:
        lingering[sid] = sub


def unlinger(nc: Any) -> None:
    """Stop taking the messages of subscriptions gone (nats-py drops what still comes)."""
    lingering = getattr(nc, _LINGER, None)
    if lingering:
        lingering.clear()


def pause_reading(nc: Any) -> Any:
    """Stop reading ``nc``'s socket: what the server sends meanwhile waits in the kernel and
    is read in one go by :func:`resume_reading` (a trickle of messages wakes the reader once,
    not once a message). Returns what to resume (None when the connection cannot be paused:
    not nats-py's TCP transport as checked, or not reading now)."""
    writer = getattr(getattr(nc, "_transport", None), "_io_writer", None)
    transport: Any = getattr(writer, "transport", None)
    # (asyncio's transports, uvloop's too: they are no asyncio.ReadTransport subclasses)
    if transport is None or not all(
        callable(getattr(transport, m, None))
        for m in ("pause_reading", "resume_reading", "is_reading", "is_closing")
    ):
        return None
    if transport.is_closing():
        return None
    if not transport.is_reading():
        return None  # paused by its stream reader (its buffer is full): not ours to resume
    transport.pause_reading()
    return transport


def resume_reading(paused: Any) -> None:
    """Undo :func:`pause_reading` (nothing if the connection is gone: a reconnect made another)."""
    if paused is not None and not paused.is_closing() and not paused.is_reading():
        paused.resume_reading()
