"""Appender.append_prelinked on a real nats-server: the placements, then the message stored only
right after them — never the message without its placements (service/prelink.py)."""

from __future__ import annotations

from typing import Any

import nats.errors
import pytest

from netledger.journal.append import (
    Appender,
    MaybeApplied,
    Outgoing,
    PrelinkBroken,
    WrongLastSequence,
)
from netledger.journal.stream import Connection, last_seq

NET = "netledger.evt.network.pre"
PLACE = "netledger.evt.placement.h1"


async def stored(conn: Connection, since: int) -> list[tuple[int, str, str]]:
    out = []
    for seq in range(since + 1, await last_seq(conn) + 1):
        m = await conn.js.get_msg(conn.stream, seq)
        headers = m.headers or {}
        assert "Nats-Batch-Id" not in headers, "no atomic batch"
        out.append((seq, m.subject, headers.get("Nats-Msg-Id", "")))
    return out


async def join_then_alloc(a: Appender, check: int) -> int:
    """One join (``c:1:x``), then the allocation (``c:0``) checked against ``check``."""
    return await a.append_prelinked(
        [Outgoing(PLACE, b"j", "c:1:x")], Outgoing(NET, b"alloc", "c:0"), {NET: check}
    )


async def test_the_placements_land_right_before_the_message(conn: Connection) -> None:
    a = Appender(conn)
    base = await a.append([Outgoing(NET, b"base", "base:0")], {NET: 0})
    joins = [Outgoing(PLACE, b"j0", "c:1:x"), Outgoing(PLACE, b"j1", "c:2:x")]
    seq = await a.append_prelinked(joins, Outgoing(NET, b"alloc", "c:0"), {NET: base})
    assert seq == base + 3
    assert await stored(conn, base) == [
        (base + 1, PLACE, "c:1:x"),
        (base + 2, PLACE, "c:2:x"),
        (base + 3, NET, "c:0"),
    ]


async def test_a_stale_check_leaves_only_the_placements(conn: Connection) -> None:
    """A conflict: the message is refused (its subject moved), the placements stay alone."""
    a = Appender(conn)
    base = await a.append([Outgoing(NET, b"base", "base:0")], {NET: 0})
    with pytest.raises(WrongLastSequence):
        await join_then_alloc(a, base - 1)
    assert await stored(conn, base) == [(base + 1, PLACE, "c:1:x")]


async def test_a_placement_stored_before_breaks_the_link(conn: Connection) -> None:
    """The placement's id was stored before (deduplicated, not stored now): the stream's last
    message is not it, so the message is refused whole — it never lands without a placement
    right before it."""
    a = Appender(conn)
    await a.append([Outgoing(PLACE, b"old", "c:1:x")], {})
    base = await a.append([Outgoing(NET, b"base", "base:0")], {NET: 0})
    with pytest.raises(PrelinkBroken):
        await join_then_alloc(a, base)
    assert await stored(conn, base) == []


async def test_another_writer_in_between_breaks_the_link(
    conn: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = Appender(conn)
    base = await a.append([Outgoing(NET, b"base", "base:0")], {NET: 0})
    nc = conn.nc
    orig = nc.start_request_nowait
    calls = 0

    def interleaving(subject: str, payload: bytes, hdr: bytes | None = None) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:  # before the message is sent, someone else writes
            nc.publish_nowait("netledger.evt.network.else", b"y")
        return orig(subject, payload, hdr)

    monkeypatch.setattr(nc, "start_request_nowait", interleaving)
    with pytest.raises(PrelinkBroken):
        await join_then_alloc(a, base)
    ids = [i for _, _, i in await stored(conn, base)]
    assert ids[0] == "c:1:x" and "c:0" not in ids


async def test_a_retry_of_a_landed_message(conn: Connection) -> None:
    """A retry of a message that landed, with fresh placements: on the same check the server
    refuses it as a conflict (a single server checks the subject before the id); on a check
    that has folded it, it is acknowledged as a duplicate (its sequence, not above the check).
    Either way each retry's placement stays alone, and the message is stored once."""
    a = Appender(conn)
    base = await a.append([Outgoing(NET, b"base", "base:0")], {NET: 0})
    msg = Outgoing(NET, b"alloc", "c:0")
    first = await a.append_prelinked([Outgoing(PLACE, b"j", "c:1:x")], msg, {NET: base})
    with pytest.raises(WrongLastSequence):
        await a.append_prelinked([Outgoing(PLACE, b"j", "c:1:y")], msg, {NET: base})
    again = await a.append_prelinked([Outgoing(PLACE, b"j", "c:1:z")], msg, {NET: first})
    assert again == first
    ids = [i for _, _, i in await stored(conn, base)]
    assert ids == ["c:1:x", "c:0", "c:1:y", "c:1:z"]


async def test_no_answer_is_in_doubt(conn: Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    a = Appender(conn, publish_timeout=0.5)
    base = await a.append([Outgoing(NET, b"base", "base:0")], {NET: 0})
    nc = conn.nc
    orig = nc.wait_reply

    async def losing(started: Any, timeout: float) -> Any:
        await orig(started, timeout)
        raise nats.errors.TimeoutError

    monkeypatch.setattr(nc, "wait_reply", losing)
    with pytest.raises(MaybeApplied):
        await join_then_alloc(a, base)
    # It landed: the caller's catch-up finds the command applied.
    assert [i for _, _, i in await stored(conn, base)] == ["c:1:x", "c:0"]
