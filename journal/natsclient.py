"""Our NATS client: nats-py's, with the paths every command takes made cheap.

The command service spends its CPU per allocation in small pieces, a good part of them in
nats-py's generic request path (measured with py-spy, bench/alloc.py 16 clients x 16
networks): each ``request`` draws a nuid token and two random bytes (a ``getrandom`` syscall),
builds the header block through a validating loop, parses every reply's headers, hands it
through the inbox subscription's own task, and waits with ``asyncio.wait_for`` (a second future
and callbacks) — four or five passes of the event loop from the reply's bytes to the waiting
code. Here, for our own hot paths only:

* :meth:`NetledgerNats.request_raw` / :meth:`start_request`: replies arrive on one wildcard
  inbox of this connection (below ``inbox_prefix``, so per-user inbox permissions hold) and are
  handed to their future in the read loop itself; the token is a counter; the timeout is one
  timer handle. Headers go as prebuilt bytes (:func:`header_block`).
* :meth:`NetledgerNats.subscribe_direct`: a subscription whose messages are handed to a plain
  function in the read loop (no ``Msg``, no header parsing, no task hop). It is an ordinary
  nats-py subscription otherwise (re-subscribed on reconnect, drained, unsubscribed).
* :meth:`NetledgerNats.publish_nowait`: publish without awaiting; what one pass of the event
  loop published goes out in one write, by a callback scheduled once (not nats-py's flusher
  task with its queue and future) — or ``at_once``, written now with no pass of the loop spent
  on it, when nothing else is about to share the write (a connection's only request in the
  air: :meth:`NetledgerNats.request_raw`; the command service's only lane at work).
* header lines of delivered messages parsed without a generator per line (same result).
* a PING (``flush``) queued behind what is already pending, so its PONG means the server has
  everything sent before it (nats-py 2.16 writes it ahead: :meth:`NetledgerNats._send_ping`).

Everything else (connecting, reconnecting, JetStream consumers, drain) is nats-py's.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.protocol.command import unsub_cmd

log = logging.getLogger("netledger.nats")

#: (data, raw header block or None) of a reply
Reply = tuple[bytes, bytes | None]
#: a direct subscription's handler: (subject, reply, data, raw header block or None)
DirectHandler = Callable[[bytes, bytes, bytes, bytes | None], None]
#: a request sent: (its reply token, the future of its reply)
Started = tuple[bytes, "asyncio.Future[Reply]"]

_HDR_LINE = b"NATS/1.0"
_NO_RESPONDERS = b"NATS/1.0 503"
_CRLF = b"\r\n"
_PING = b"PING\r\n"
_NEWLINES = str.maketrans({"\r": " ", "\n": " "})
_SPACE = re.compile(r"\s")


def header_block(headers: dict[str, str]) -> bytes:
    """The wire form of ``headers`` (as nats-py's publish builds it: values stripped and their
    line breaks replaced; names are ours, constant and valid)."""
    parts = [_HDR_LINE]
    for k, v in headers.items():
        if "\r" in v or "\n" in v:
            v = v.translate(_NEWLINES)
        parts.append(f"{k}: {v.strip()}".encode())
    parts.append(b"")
    parts.append(b"")
    return _CRLF.join(parts)


_HDR_LEN = len(_HDR_LINE)  # b"NATS/1.0"
_HDR_BLOCK = _HDR_LEN + len(_CRLF)  # where a status-less block's header lines start
_SPACE_BYTE = 32  # b"NATS/1.0 100 ..." : an inline status follows the version


class LazyHeaders(Mapping[str, str]):
    """A message's headers, parsed from their lines when first read (then as nats-py's
    ``dict``: the same keys and values, :meth:`NetledgerNats._parse_header_lines`). Always
    true, as nats-py's headers of a block with a header line are."""

    __slots__ = ("_parsed", "_raw")

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._parsed: dict[str, str] | None = None

    def _headers(self) -> dict[str, str]:
        parsed = self._parsed
        if parsed is None:
            parsed = self._parsed = NetledgerNats._parse_header_lines(self._raw)
        return parsed

    def __getitem__(self, key: str) -> str:
        return self._headers()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._headers().get(key, default)

    def __contains__(self, key: object) -> bool:
        if self._parsed is None and isinstance(key, str) and key.isascii():
            # Unparsed: a scan of the block (~0.3 us), not a parse (~3 us) — every follower
            # asks two of these of every message (Follower.in_batch). A name that is nowhere in
            # the block is no header; one that starts a line, colon next, is one (the parse
            # reads a line's name up to its colon); anything else is the parse's to say.
            raw, name = self._raw, key.encode()
            if name not in raw:
                return False
            if key.strip() == key and (raw.startswith(name + b":") or b"\r\n" + name + b":" in raw):
                return True
        return key in self._headers()

    def __iter__(self) -> Iterator[str]:
        return iter(self._headers())

    def __len__(self) -> int:
        return len(self._headers())

    def __bool__(self) -> bool:
        return True

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LazyHeaders):
            other = other._headers()
        return self._headers() == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._headers())


def _expire(fut: asyncio.Future[Reply]) -> None:
    if not fut.done():
        fut.set_exception(nats.errors.TimeoutError())


class NetledgerNats(NATS):
    """nats-py's client with the cheap paths above (see the module's docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._direct: dict[int, DirectHandler] = {}
        self._replies: dict[bytes, asyncio.Future[Reply]] = {}
        self._reply_prefix: bytes = b""
        self._reply_sub: Any = None
        self._reply_count = 0
        self._write_soon = False

    # --- receiving ------------------------------------------------------------------------

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        fn = self._direct.get(sid)
        if fn is None:
            await super()._process_msg(sid, subject, reply, data, headers)  # type: ignore[arg-type]
            return
        stats = self.stats
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        try:
            fn(subject, reply, data, headers)
        except Exception:  # a handler's bug must not stop the read loop
            log.exception("handler of subscription %d failed", sid)

    async def subscribe_direct(self, subject: str, fn: DirectHandler, queue: str = "") -> Any:
        """Subscribe with ``fn`` called in the read loop for every message (it must not block;
        it may start tasks). Returns nats-py's subscription (unsubscribe / drain as usual)."""
        sub = await self.subscribe(subject, queue=queue, cb=_never)
        self._direct[sub._id] = fn
        return sub

    def _remove_sub(self, sid: int, max_msgs: int = 0) -> None:
        self._direct.pop(sid, None)
        super()._remove_sub(sid, max_msgs)
        if self.is_reconnecting:
            # nats-py sends no UNSUB while reconnecting (the server forgot the connection's
            # subscriptions), yet sends what it queued meanwhile once back — among it the SUB
            # of an ordered consumer made again while away (two missed heartbeats). Unsubscribed
            # meanwhile, that SUB reached the server alone, and the consumer made again stayed
            # bound to it for good, delivering to a connection that drops it all (a follower
            # stopped during a NATS restart). Queued behind it, the UNSUB undoes it; for a
            # subscription the server no longer has, it is ignored.
            cmd = unsub_cmd(sid, 0)
            self._pending.append(cmd)
            self._pending_data_size += len(cmd)

    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        # nats-py's (2.16) result, without a generator per line for the whitespace check.
        out: dict[str, str] = {}
        for line in raw.split(_CRLF):
            if not line:
                continue
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            try:
                key = name.strip().decode("ascii")
            except UnicodeDecodeError:
                continue
            if _SPACE.search(key):
                continue
            out[key] = value.strip().decode("utf-8", "replace")
        return out

    async def _process_headers(self, headers: bytes | None) -> Any:
        """nats-py's, except that a header block without an inline status (every stored
        message: its Nats-Msg-Id, batch and expected-sequence headers) is parsed when first
        read (:class:`LazyHeaders`): nats-py itself looks at the headers of a message with a
        payload only to tell it from a control message, which has none, and the readers of the
        log read the payload. ~1-3 us a message, an eighth of an executor's share read."""
        if headers and len(headers) > _HDR_BLOCK and headers[_HDR_LEN] != _SPACE_BYTE:
            raw = headers[_HDR_BLOCK:]
            return LazyHeaders(raw) if b":" in raw else None
        return await super()._process_headers(headers)

    # --- publishing -----------------------------------------------------------------------

    def publish_nowait(
        self,
        subject: str,
        payload: bytes,
        reply: str = "",
        hdr: bytes | None = None,
        *,
        at_once: bool = False,
    ) -> None:
        """Queue a PUB / HPUB (``hdr``: a :func:`header_block`), written with whatever else is
        pending once this pass of the loop is done — or, ``at_once``, now with whatever is
        pending (:meth:`write_now`; a write that fails leaves it to the pass's end). Raises as
        nats-py's ``publish`` does when closed, draining, or disconnected with a full buffer
        (while reconnecting it is kept and sent after the reconnect, as nats-py does)."""
        if self.is_closed:
            raise nats.errors.ConnectionClosedError
        if self.is_draining_pubs:
            raise nats.errors.ConnectionDrainingError
        size = len(payload)
        if size > self._max_payload:
            raise nats.errors.MaxPayloadError
        connected = self.is_connected
        if not connected and (
            self._max_pending_size <= 0 or size + self._pending_data_size > self._max_pending_size
        ):
            raise nats.errors.OutboundBufferLimitError
        if hdr is None:
            cmd = b"PUB %s %s %d\r\n%s\r\n" % (subject.encode(), reply.encode(), size, payload)
        else:
            cmd = b"HPUB %s %s %d %d\r\n%s%s\r\n" % (
                subject.encode(),
                reply.encode(),
                len(hdr),
                len(hdr) + size,
                hdr,
                payload,
            )
        stats = self.stats
        stats["out_msgs"] += 1
        stats["out_bytes"] += size
        self._pending.append(cmd)
        self._pending_data_size += len(cmd)
        if not connected:
            return  # sent once reconnected, as nats-py's own buffered publishes
        if at_once and not self._write_soon:
            # Nothing scheduled to write yet: written now, and no pass of the loop is spent
            # on the write at the pass's end (issue 15: one client's command waited for it).
            try:
                self.write_now()
            except Exception:  # left pending: the pass's own write sends it
                log.debug("writing at once failed", exc_info=True)
            if not self._pending_data_size:
                return
        if not self._write_soon:
            self._write_soon = True
            asyncio.get_running_loop().call_soon(self._write_pending)

    def write_now(self) -> None:
        """Write what is pending at once instead of at the end of this pass of the loop (an
        answer that should not wait for the other callbacks of this pass)."""
        if self._pending_data_size and self.is_connected and self._transport is not None:
            self._transport.writelines(self._pending)
            self._pending = []
            self._pending_data_size = 0

    def _write_pending(self) -> None:
        """Write what is pending (ours and nats-py's, in order) at the end of this pass of the
        loop: what one pass published goes out in one write, as with nats-py's flusher, minus
        the flusher task's queue and future. No backpressure wait: asyncio's transport buffers
        (nats-py's flusher waits on it; our messages are small and answered)."""
        self._write_soon = False
        if self._pending_data_size == 0 or not self.is_connected or self._transport is None:
            return  # nothing left (the flusher took it), or reconnecting: sent after it
        self._transport.writelines(self._pending)
        self._pending = []
        self._pending_data_size = 0

    async def _send_ping(self, future: asyncio.Future[Any] | None = None) -> None:
        """A PING behind everything already queued. nats-py 2.16 writes it to the socket at
        once, ahead of commands still waiting for its flusher task: ``subscribe`` then
        ``flush`` could send PING before SUB, and the PONG then did not mean the subscription
        was in place (found as a 1-in-40 miss of every message of a subscription made just
        before a burst; the server's trace showed PING ahead of SUB)."""
        if not self.is_connected:
            await super()._send_ping(future)  # nats-py's own while (re)connecting
            return
        if future is None:
            future = asyncio.get_running_loop().create_future()
        self._pongs.append(future)
        self._pending.append(_PING)
        self._pending_data_size += len(_PING)
        await self._flush_pending()

    # --- requests -------------------------------------------------------------------------

    async def _init_replies(self) -> None:
        prefix = bytes(self._inbox_prefix) + b"." + bytes(self._nuid.next()) + b"."
        sub = await self.subscribe_direct(prefix.decode() + "*", self._on_reply)
        if self._reply_sub is None:
            self._reply_prefix, self._reply_sub = prefix, sub
        else:  # another request set it up meanwhile
            await sub.unsubscribe()

    async def _attempt_reconnect(self) -> None:
        """nats-py's reconnect; then the requests that were on the connection that went away
        fail with ``ConnectionReconnectingError`` instead of waiting out their timeout: their
        request or its reply was lost with that connection (a reply after the reconnect still
        could come, from a cluster: it is dropped, and the caller's retry — with the same ids,
        as every request of ours is idempotent — gets the answer). A command sent just before
        its NATS server restarted was answered after the client's whole timeout (10 s)."""
        lost = list(self._replies.items())
        await super()._attempt_reconnect()
        if not self.is_connected:
            return
        for token, fut in lost:
            if self._replies.get(token) is fut:
                del self._replies[token]
            if not fut.done():
                fut.set_exception(nats.errors.ConnectionReconnectingError())

    def _on_reply(self, subject: bytes, reply: bytes, data: bytes, hdr: bytes | None) -> None:
        fut = self._replies.pop(subject[len(self._reply_prefix) :], None)
        if fut is not None and not fut.done():
            fut.set_result((data, hdr))

    async def start_request(
        self, subject: str, payload: bytes, hdr: bytes | None = None, *, at_once: bool = False
    ) -> Started:
        """Publish a request now (written at the pass's end, or ``at_once``:
        :meth:`publish_nowait`); return it to wait for with :meth:`wait_reply`."""
        if self._reply_sub is None:
            await self._init_replies()
        return self.start_request_nowait(subject, payload, hdr, at_once=at_once)

    def start_request_nowait(
        self, subject: str, payload: bytes, hdr: bytes | None = None, *, at_once: bool = False
    ) -> Started:
        """:meth:`start_request` once the reply inbox exists (:meth:`ready_for_requests`)."""
        self._reply_count += 1
        token = b"%d" % self._reply_count
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._replies[token] = fut
        try:
            self.publish_nowait(
                subject, payload, (self._reply_prefix + token).decode(), hdr, at_once=at_once
            )
        except BaseException:
            del self._replies[token]
            raise
        return token, fut

    async def ready_for_requests(self) -> None:
        if self._reply_sub is None:
            await self._init_replies()

    async def wait_reply(self, started: Started, timeout: float) -> Reply:
        """The reply of a started request: ``nats.errors.TimeoutError`` after ``timeout``,
        ``NoRespondersError`` when nothing listens on its subject (as nats-py's request). A
        request given up (timeout, cancellation) is forgotten: a late reply is dropped."""
        token, fut = started
        if not fut.done():
            handle = asyncio.get_running_loop().call_later(timeout, _expire, fut)
            try:
                await fut
            finally:
                handle.cancel()
                if not fut.done():
                    fut.cancel()
                self._replies.pop(token, None)
        elif fut.exception() is not None:
            self._replies.pop(token, None)
        data, hdr = fut.result()
        if hdr is not None and hdr.startswith(_NO_RESPONDERS):
            raise nats.errors.NoRespondersError
        return data, hdr

    def forget(self, started: Started) -> None:
        """Give up a started request that will not be waited for."""
        token, fut = started
        self._replies.pop(token, None)
        if not fut.done():
            fut.cancel()

    async def request_raw(
        self, subject: str, payload: bytes, timeout: float, hdr: bytes | None = None
    ) -> Reply:
        """Request / reply: (data, header block or None) of the reply. The only request in
        the air on this connection is written at once (``at_once``): nothing else of this
        pass shares its write — a client's next command — and waiting for the pass's end cost
        a pass of the event loop on every command's way (issue 15)."""
        alone = not self._replies
        started = await self.start_request(subject, payload, hdr, at_once=alone)
        return await self.wait_reply(started, timeout)


async def _never(msg: Any) -> None:  # direct subscriptions never use nats-py's callback
    return None


async def connect(**options: Any) -> NetledgerNats:
    """``nats.connect`` with our client class."""
    nc = NetledgerNats()
    await nc.connect(**options)
    return nc
