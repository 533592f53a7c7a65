"""``export`` and ``import``: the log as JSON lines, and back into an empty stream.

An export line is one stored message::

    {"seq": 12, "time": "2026-05-01T10:00:00.123Z", "stream_time": 1777629600.123,
     "subject": "netledger.evt.network.1", "headers": {"Nats-Msg-Id": "<command>:0"},
     "payload": "<base64 of the exact stored bytes>",
     "event": {"type": ..., "version": ..., "stored_version": ..., "id": ..., "command_id": ...,
               "time": ..., "actor": {...}, "data": {...}}}

``event`` is for people and tools (decoded and upcast to today's shape); a message that cannot
be decoded has ``"error": "<reason>"`` instead. The import uses ``payload``, so the copy is
byte-identical, whatever the codec of the importing netledger thinks of old shapes.

Import appends line *i* of the file as stream sequence *i* (an export of a part of the log, made
with ``--from-seq N``, is stored from 1 on: the result says ``renumbered`` and by how much; a file
whose sequences have a gap is refused), each with its original
``Nats-Msg-Id`` and ``Nats-Expected-Last-Sequence: i-1``: order is enforced by the server, a
concurrent writer stops the import instead of interleaving, and a re-run first compares the
stream's existing messages with the file's first lines, then appends only what is missing (so
nothing is ever appended twice). A stream whose messages differ from the file is refused.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import re
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import IO, Any

import msgpack
from nats.js.errors import APIError

from netledger.common.progress import progress_bar
from netledger.events.codec import Actor, Envelope, decode, encode
from netledger.events.errors import DecodeError
from netledger.events.ids import EVENT_PREFIX
from netledger.events.types import EVENT_TYPES
from netledger.journal.stream import MSG_ID, Connection, last_seq

from .errors import BadExport, ImportInterrupted, SeqBeyondStream, StreamNotEmpty
from .reader import Stored, first_seq_at, read_range
from .times import iso

EXPECTED_LAST_SEQ = "Nats-Expected-Last-Sequence"
#: Acknowledgements awaited at a time while importing (pipelined publishes).
WINDOW = 1000


def kept_headers(headers: dict[str, str]) -> dict[str, str]:
    """The headers worth keeping: the message id, and any application header. JetStream's
    own control headers (expected sequences, batch ids) were checks at append time."""
    return {k: v for k, v in headers.items() if k == MSG_ID or not k.startswith("Nats-")}


def _stored_version(data: bytes) -> Any:
    try:
        obj = msgpack.unpackb(data, raw=False)
    except Exception:
        return None
    return obj.get("version") if isinstance(obj, dict) else None


def export_line(m: Stored) -> dict[str, Any]:
    line: dict[str, Any] = {
        "seq": m.seq,
        "time": iso(m.stream_time),
        "stream_time": m.stream_time,
        "subject": m.subject,
        "headers": kept_headers(m.headers),
        "payload": base64.b64encode(m.data).decode(),
    }
    try:
        env = decode(m.data)
    except DecodeError as exc:
        line["error"] = str(exc)
        return line
    line["event"] = {
        "type": env.type,
        "version": env.event.VERSION,
        "stored_version": _stored_version(m.data),
        "id": env.event_id,
        "command_id": env.command_id,
        "time": env.time,
        "actor": env.actor.to_wire(),
        "data": env.event.to_data(),
    }
    return line


async def export(
    conn: Connection,
    out: IO[str],
    *,
    from_seq: int = 1,
    to_seq: int | None = None,
    since: datetime.datetime | None = None,
    show_progress: bool | None = None,
) -> dict[str, Any]:
    """Write messages ``from_seq``..``to_seq`` (default: the last now) to ``out``; with
    ``since``, none stored before it (where that starts is one direct get by time: nothing
    before it is read). A ``to_seq`` past the stream's end is :class:`SeqBeyondStream`, as
    ``replay`` answers it (:func:`export_end`)."""
    end = await export_end(conn, to_seq)
    if since is not None:
        start = await first_seq_at(conn, since)
        from_seq = max(from_seq, end + 1 if start is None else start)
    n = undecodable = 0
    first = last = None
    with progress_bar("export", max(0, end - from_seq + 1), show_progress) as advance:
        async for m in read_range(conn, from_seq, end):
            line = export_line(m)
            out.write(json.dumps(line, separators=(",", ":"), default=str) + "\n")
            n += 1
            undecodable += "error" in line
            first = first or m.seq
            last = m.seq
            if n % 1000 == 0:
                advance(n)
        advance(n)
    return {"messages": n, "first_seq": first, "last_seq": last, "undecodable": undecodable}


async def export_end(conn: Connection, to_seq: int | None) -> int:
    """The last sequence an export up to ``to_seq`` writes (default: the stream's last now),
    or :class:`SeqBeyondStream` when the stream ends before ``to_seq``: an export quietly cut
    at the end read as a log that holds ``to_seq`` (replay refuses the same)."""
    end = await last_seq(conn)
    if to_seq is None:
        return end
    if to_seq > end:
        raise SeqBeyondStream(
            f"the stream ends at seq {end}; there is no seq {to_seq} to export to",
            to_seq=to_seq,
            stream_last_seq=end,
        )
    return to_seq


# --- import ----------------------------------------------------------------------------------


def payload_of(line: dict[str, Any], lineno: int) -> bytes:
    """The bytes to store: the original ones, or (for a hand-written line without them) the
    event re-encoded with today's codec."""
    if isinstance(line.get("payload"), str):
        try:
            return base64.b64decode(line["payload"], validate=True)
        except ValueError:
            raise BadExport(f"line {lineno}: payload is not base64", line=lineno) from None
    ev = line.get("event")
    if not isinstance(ev, dict) or ev.get("type") not in EVENT_TYPES:
        raise BadExport(f"line {lineno}: neither a payload nor a known event", line=lineno)
    try:
        event = EVENT_TYPES[ev["type"]].from_data(ev["data"])
        env = Envelope(
            event,
            str(ev.get("id") or ""),
            str(ev.get("command_id") or ""),
            float(ev.get("time") or 0.0),
            Actor.from_wire(ev.get("actor")),
        )
    except Exception as exc:
        raise BadExport(f"line {lineno}: event cannot be encoded: {exc}", line=lineno) from None
    return encode(env)


#: What NATS cannot carry in a subject token or a header name (whitespace, control characters)
_NOT_IN_TOKEN = re.compile(r"[\x00-\x20\x7f]")
_NOT_IN_HEADER_NAME = re.compile(r"[\x00-\x20\x7f:]")
_NOT_IN_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _subject_error(subject: str) -> str | None:
    """Why ``subject`` cannot be stored as an event of the stream (None: it can). Checked for
    the whole file first: the server would refuse it half way (outside the stream's
    ``netledger.evt.>``, an empty token) or, worse, store a wildcard as a literal name."""
    tokens = subject.split(".")
    if tokens[:2] != EVENT_PREFIX.split(".") or len(tokens) < 3:
        return f"subject {subject!r} is not an event subject ({EVENT_PREFIX}.…)"
    for t in tokens[2:]:
        if not t or t in ("*", ">") or _NOT_IN_TOKEN.search(t):
            return f"subject {subject!r} has an empty, wildcard or blank token"
    return None


def _headers_error(headers: dict[Any, Any]) -> str | None:
    for k, v in headers.items():
        if not isinstance(k, str) or not k or _NOT_IN_HEADER_NAME.search(k):
            return f"header name {k!r} is not a NATS header name"
        if not isinstance(v, str) or _NOT_IN_HEADER_VALUE.search(v):
            return f"header {k} is not one line of text"
    return None


def read_lines(path: Path) -> Iterator[tuple[int, int | None, str, bytes, dict[str, str]]]:
    """(line number, its seq, subject, payload, headers) per line; checks order as it goes: the lines'
    sequences are consecutive (from wherever the first starts)."""
    prev = 0
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise BadExport(f"line {lineno}: not UTF-8 text", line=lineno) from None
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except ValueError as exc:
                raise BadExport(f"line {lineno}: not JSON ({exc})", line=lineno) from None
            if not isinstance(line, dict) or not isinstance(line.get("subject"), str):
                raise BadExport(f"line {lineno}: not an export line", line=lineno)
            why = _subject_error(line["subject"])
            if why is not None:
                raise BadExport(f"line {lineno}: {why}", line=lineno)
            seq = line.get("seq")
            if isinstance(seq, int):
                if seq <= prev:
                    raise BadExport(
                        f"line {lineno}: seq {seq} after {prev}: lines are out of order",
                        line=lineno,
                    )
                if prev and seq != prev + 1:
                    raise BadExport(
                        f"line {lineno}: seq {seq} after {prev}: the file has a gap (the"
                        " messages after it would be stored under other sequences)",
                        line=lineno,
                    )
                prev = seq
            headers = line.get("headers") or {}
            if not isinstance(headers, dict):
                raise BadExport(f"line {lineno}: headers is not an object", line=lineno)
            why = _headers_error(headers)
            if why is not None:
                raise BadExport(f"line {lineno}: {why}", line=lineno)
            yield (
                lineno,
                seq if isinstance(seq, int) else None,
                line["subject"],
                payload_of(line, lineno),
                kept_headers(headers),
            )


def check_file(path: Path) -> tuple[int, int | None]:
    """Read the whole file once before appending anything (a bad line half way must not leave
    half an import); return the number of messages and the first one's ``seq`` (None if the
    lines carry none)."""
    count, first = 0, None
    for _, seq, *_ in read_lines(path):
        if count == 0:
            first = seq
        count += 1
    return count, first


async def _existing(conn: Connection, n: int) -> AsyncGenerator[Stored, None]:
    if n > 0:
        async for m in read_range(conn, 1, n):
            yield m


async def import_file(
    conn: Connection, path: str | Path, *, show_progress: bool | None = None
) -> dict[str, Any]:
    """Append the file's messages to the stream (see the module doc); return a summary."""
    path = Path(path)
    total, first_seq = check_file(path)
    start = await last_seq(conn)
    existing = _existing(conn, start)
    pending: list[tuple[int, asyncio.Future[Any]]] = []
    target = matched = appended = 0

    async def settle(keep: int) -> None:
        nonlocal appended
        while len(pending) > keep:
            seq, fut = pending.pop(0)
            try:
                ack = await fut
            except APIError as exc:
                await _drain(pending)
                raise ImportInterrupted(
                    f"the server refused message {seq}: {exc.description or exc}"
                    f" (appended {appended} before it; another writer, or a repeated id):"
                    " run the import again to go on from where it stopped",
                    seq=seq,
                    appended=appended,
                ) from None
            if ack.duplicate or int(ack.seq) != seq:
                await _drain(pending)
                raise ImportInterrupted(
                    f"message {seq} was stored as seq {ack.seq}"
                    f"{' (duplicate id)' if ack.duplicate else ''}: the copy would not keep"
                    " the original sequences",
                    seq=seq,
                    stored=int(ack.seq),
                )
            appended += 1

    with progress_bar(f"import {path.name}", total, show_progress) as advance:
        try:
            for lineno, _, subject, data, headers in read_lines(path):
                target += 1
                if target <= start:
                    have = await anext(existing)
                    if (have.subject, have.data, have.headers.get(MSG_ID)) != (
                        subject,
                        data,
                        headers.get(MSG_ID),
                    ):
                        raise StreamNotEmpty(
                            f"stream {conn.stream} is not empty and its message {have.seq}"
                            f" differs from line {lineno} of {path}: import only into an empty"
                            " stream (or one holding exactly the file's first messages)",
                            seq=have.seq,
                            line=lineno,
                        )
                    matched += 1
                    continue
                hdrs = dict(headers)
                hdrs[EXPECTED_LAST_SEQ] = str(target - 1)
                fut = await conn.js.publish_async(subject, data, stream=conn.stream, headers=hdrs)
                pending.append((target, fut))
                if len(pending) >= WINDOW:
                    await settle(WINDOW // 2)
                    advance(target)
            await settle(0)
            advance(target)
        finally:
            await existing.aclose()
            await _drain(pending)
    return {
        "file": str(path),
        "lines": target,
        "already_present": matched,
        "appended": appended,
        "stream_last_seq": await last_seq(conn),
        "stream_had_more": max(0, start - target),
        # an export of a part of the log: its messages stored that much lower than in the
        # log they came from (every seq in the copy, hence in a replay of it, shifts)
        "first_seq_in_file": first_seq,
        "renumbered": first_seq is not None and first_seq != 1,
    }


async def _drain(pending: list[tuple[int, asyncio.Future[Any]]]) -> None:
    """Wait for the acks still outstanding (their outcome no longer matters)."""
    for _, fut in pending:
        try:
            await fut
        except Exception:
            pass
    pending.clear()
