"""Appender.append_chain on a real nats-server: pipelined single publishes chained by
``Nats-Expected-Last-Msg-Id`` land as a contiguous prefix, never past a broken link. Every link
but the last is stored under an id of the chain alone (``<id>~<tag>``): :func:`base` reads the
command's id back."""

from __future__ import annotations

from typing import Any

import nats.errors
import pytest

from netledger.journal.append import CHAIN_TAG, Appender, Outgoing, WrongLastSequence
from netledger.journal.stream import Connection, last_seq

SUBJ = "netledger.evt.network.chain"


def msgs(tag: str, n: int) -> list[Outgoing]:
    return [Outgoing(SUBJ, f"{tag}-{i}".encode(), f"{tag}:{i}") for i in range(n)]


def base(msg_id: str) -> str:
    return msg_id.split(CHAIN_TAG, 1)[0]


async def stored(conn: Connection, since: int) -> list[tuple[int, str]]:
    out = []
    for seq in range(since + 1, await last_seq(conn) + 1):
        m = await conn.js.get_msg(conn.stream, seq)
        out.append((seq, base((m.headers or {}).get("Nats-Msg-Id", ""))))
    return out


async def test_a_chain_lands_whole_and_contiguous(conn: Connection) -> None:
    a = Appender(conn)
    first = await a.append(msgs("base", 1), {SUBJ: 0})
    seqs, _ = await a.append_chain(msgs("c", 8), {SUBJ: first})
    assert seqs == list(range(first + 1, first + 9))
    assert await stored(conn, first) == [(first + 1 + i, f"c:{i}") for i in range(8)]


async def test_a_stale_first_check_stores_nothing(conn: Connection) -> None:
    a = Appender(conn)
    first = await a.append(msgs("base", 1), {SUBJ: 0})
    assert await a.append_chain(msgs("c", 5), {SUBJ: first - 1 if first > 1 else 99}) == ([], None)
    assert await stored(conn, first) == []


async def test_a_broken_link_stops_the_chain(conn: Connection) -> None:
    """Message 1 is refused (its subject is not the stream's), so the stream's last message is
    not message 1 when message 2 arrives: only message 0 lands, nothing after the break."""
    a = Appender(conn)
    first = await last_seq(conn)
    chain = msgs("c", 5)
    chain[1] = Outgoing("nowhere.at.all", b"x", "c:1")
    seqs, _ = await a.append_chain(chain, {SUBJ: 0})
    assert seqs == [first + 1]
    assert await stored(conn, first) == [(first + 1, "c:0")]


async def test_a_duplicate_last_link_is_not_counted(conn: Connection) -> None:
    """The last link keeps its command's id: a copy stored before (within the duplicate
    window) makes it a duplicate, not stored, and not part of the landed prefix."""
    a = Appender(conn)
    first = await a.append([Outgoing("netledger.evt.network.other", b"x", "dup:0")], {})
    chain = msgs("c", 3)
    chain[2] = Outgoing(SUBJ, b"dup", "dup:0")
    seqs, _ = await a.append_chain(chain, {SUBJ: 0})
    assert seqs == [first + 1, first + 2]
    assert await stored(conn, first) == [(first + 1, "c:0"), (first + 2, "c:1")]


async def test_a_refused_head_lands_nothing_after_it_on_a_copy_of_its_command(
    conn: Connection,
) -> None:
    """Another replica stored the head's command (the same message id) and it is the stream's
    last message: the head is refused by its subject check, and the next link, which only
    checks that the stream's last message is the one before it, must not land on the copy
    (review hrev13: it did, on a decision the log never took — one address for two
    instances)."""
    a = Appender(conn)
    other = Appender(conn)
    copy = await other.append([Outgoing(SUBJ, b"copy", "c:0")], {SUBJ: 0})
    seqs, _ = await a.append_chain(msgs("c", 3), {SUBJ: 0})  # decided before the copy
    assert seqs == []
    assert await stored(conn, 0) == [(copy, "c:0")]


async def test_another_writer_between_links_stops_the_chain(conn: Connection) -> None:
    """Another writer's message between two links (any subject): the later link is refused."""
    a = Appender(conn)
    nc = conn.nc
    orig = nc.start_request_nowait
    calls = 0

    def interleaving(subject: str, payload: bytes, hdr: bytes | None = None) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:  # before link 2 is sent, someone else writes
            nc.publish_nowait("netledger.evt.network.else", b"y")
        return orig(subject, payload, hdr)

    nc.start_request_nowait = interleaving  # type: ignore[method-assign]
    try:
        seqs, _ = await a.append_chain(msgs("c", 5), {SUBJ: 0})
    finally:
        nc.start_request_nowait = orig  # type: ignore[method-assign]
    assert seqs == [1, 2]
    ids = [i for _, i in await stored(conn, 0)]
    assert ids[:2] == ["c:0", "c:1"] and "c:2" not in ids and "c:3" not in ids


@pytest.mark.parametrize("lost", [1, 4])
async def test_a_lost_ack_in_the_chain(conn: Connection, lost: int) -> None:
    """A link whose ack is lost: a later link's ack proves it landed; a lost last ack leaves it
    to the caller, whose checked retry sees the conflict (the lane then catches up and finds
    the command applied)."""
    a = Appender(conn, publish_timeout=1.0)
    nc = conn.nc
    orig = nc.wait_reply
    calls = 0

    async def losing(started: Any, timeout: float) -> Any:
        nonlocal calls
        calls += 1
        mine = calls
        reply = await orig(started, timeout)
        if mine == lost + 1:
            raise nats.errors.TimeoutError
        return reply

    nc.wait_reply = losing  # type: ignore[method-assign]
    try:
        chain = msgs("c", 5)
        seqs, _ = await a.append_chain(chain, {SUBJ: 0})
    finally:
        nc.wait_reply = orig  # type: ignore[method-assign]
    if lost < 4:
        assert seqs == [1, 2, 3, 4, 5]
    else:
        assert seqs == [1, 2, 3, 4]
        with pytest.raises(WrongLastSequence):
            await a.append([chain[4]], {SUBJ: seqs[-1]})
    assert [i for _, i in await stored(conn, 0)] == [f"c:{i}" for i in range(5)]
