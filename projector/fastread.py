"""The projector's stored messages straight from nats-py's parser to its handler.

On a connection the projector owns (``projector run``), nats-py's work per message is most of
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
handler sees them in the order they arrived, as with the callback.

Only if the client looks as this code expects (nats-py 2.x: ``_process_msg``, ``_subs``,
``_error_cb``, ``stats``); otherwise nothing changes and the callback gets every message.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg

#: handler(stream seq, subject, data, stored time ns, pending)
Handler = Callable[[int, str, bytes, int, int], None]

_V1_TOKENS = 9
_STORED = b"NATS/1.0\r\n"  # a stored message's headers; a status has its code on this line
_ATTR = "_netledger_fast_handlers"


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


def install(nc: Any) -> bool:
    """Wrap ``nc``'s message processing (once); False if nats-py does not look as expected."""
    if getattr(nc, _ATTR, None) is not None:
        return True
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
    stats = nc.stats

    async def process_msg(
        sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        sub = subs.get(sid)
        handler = handlers.get(getattr(sub, "_cb", None)) if handlers else None
        if sub is None or handler is None or not reply or (headers and headers[:10] != _STORED):
            await original(sid, subject, reply, data, headers)
            return
        r = reply.decode()
        try:
            sseq, dseq, ts, pending = reply_numbers(r)
        except ValueError:
            await original(sid, subject, reply, data, headers)
            return
        jsi = getattr(sub, "_jsi", None)
        if jsi is not None:
            jsi._active = True
            if jsi._ordered:
                if dseq != jsi._dseq:
                    # Out of order: nats-py resets the ordered consumer (and drops this one).
                    await original(sid, subject, reply, data, headers)
                    return
                jsi._dseq = dseq + 1
                jsi._sseq = sseq
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        sub._received += 1
        if jsi is not None:
            jsi.track_sequences(r)  # flow control counts it delivered (_received) and seen
        try:
            handler(sseq, subject.decode(), data, ts, pending)
        except Exception as exc:  # as nats-py reports a callback's error
            await nc._error_cb(exc)

    nc._process_msg = process_msg
    setattr(nc, _ATTR, handlers)
    return True


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
