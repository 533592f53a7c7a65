"""A one-off read (``iter_subject``: a host's share at start, a joined network's history) whose
consumer is lost under it goes on with a new one from after the last message it yielded —
every message once, none skipped — and gives up with a clear error after a bounded number of
consumers. Found by bench/fleet.py: with 125 views on one event loop, a loop stalled past the
5 s the server keeps an ephemeral consumer nobody listens to, between creating the consumer and
subscribing to its messages, and the read ended in "consumer not found" (404): 12 of 1,000
executor starts failed. Real nats-server; the consumers really deleted."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from netledger.events.errors import Unavailable
from netledger.journal import follow
from netledger.journal.follow import Follower, iter_subject
from netledger.journal.stream import Connection, connect, last_seq

SUBJECT = "netledger.evt.network.7"
OTHER = "netledger.evt.network.8"
#: longer than nats-server keeps an ephemeral push consumer with no interest (5 s)
STALL_S = 6.5


async def fill(conn: Connection, n: int) -> list[int]:
    """``n`` messages, every third on another subject; the sequences of SUBJECT's."""
    ours = []
    for i in range(n):
        subject = OTHER if i % 3 == 2 else SUBJECT
        ack = await conn.js.publish(subject, b"x" * 300, stream=conn.stream)
        if subject == SUBJECT:
            ours.append(ack.seq)
    return ours


def lost_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "consumer lost" in r.getMessage()]


class Deleter:
    """Deletes consumers from another thread (its own loop and connection) while the reader's
    loop is stopped: nothing of the reader's moves meanwhile."""

    def __init__(self, url: str, stream: str) -> None:
        self.url, self.stream = url, stream
        self.deleted: list[str] = []

    def delete(self, name: str) -> None:
        async def run() -> None:
            admin = await connect(self.url, name="deleter")
            try:
                await admin.js.delete_consumer(self.stream, name)
            finally:
                await admin.close()

        t = threading.Thread(target=asyncio.run, args=(run(),))
        t.start()
        t.join()
        self.deleted.append(name)

    def consumers(self) -> list[str]:
        async def run() -> list[str]:
            admin = await connect(self.url, name="lister")
            try:
                return [c.name for c in await admin.js.consumers_info(self.stream)]
            finally:
                await admin.close()

        out: list[list[str]] = []
        t = threading.Thread(target=lambda: out.append(asyncio.run(run())))
        t.start()
        t.join()
        return out[0]


def after_subscribing(monkeypatch: pytest.MonkeyPatch, then: Callable[[Any], None]) -> None:
    """Run ``then(sub)`` where iter_subject has its consumer created and has not yet sent its
    subscription to the consumer's messages nor asked about it (nothing sent till its next
    await): where a loop stalled in the fleet."""
    seed = follow.seed_ordered

    def seed_then(sub: Any, start_seq: int) -> None:
        seed(sub, start_seq)
        then(sub)

    monkeypatch.setattr(follow, "seed_ordered", seed_then)


async def test_a_read_goes_on_when_its_consumers_are_deleted_before_it_asks_about_them(
    conn: Connection,
    nats_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each of the reader's first three consumers is deleted as soon as it exists: its
    consumer_info finds none (404), it reads on with another from where it was."""
    ours = await fill(conn, 300)
    deleter = Deleter(nats_url, conn.stream)
    after_subscribing(
        monkeypatch, lambda sub: deleter.delete(sub._consumer) if len(deleter.deleted) < 3 else None
    )
    with caplog.at_level(logging.WARNING, logger="netledger.stream"):
        got = [m[0] async for m in iter_subject(conn, SUBJECT, ours[5], ours[-1])]
    assert len(deleter.deleted) == 3
    assert got == ours[5:]  # every message once, in order, none skipped
    warned = lost_warnings(caplog)
    assert len(warned) == 3, warned
    assert all(f"at seq {ours[5]}" in w and "consumer not found" in w for w in warned), warned


async def test_a_read_goes_on_when_its_consumer_is_deleted_mid_read(
    conn: Connection, nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Deleted after the first messages were yielded, most still to come (20 MB: the client
    has a few hundred when the tenth is yielded): nats-py recreates it after two missed
    heartbeats, from after the last message it received (seeded: journal/stream.py)."""
    n = 20_000
    for i in range(n):  # published without waiting for each ack: the stream stores them
        await conn.nc.publish(SUBJECT, b"x" * 1000)
        if i % 1000 == 999:
            await conn.nc.flush()
    while await last_seq(conn) < n:
        await asyncio.sleep(0.05)
    deleter = Deleter(nats_url, conn.stream)
    got = []
    received = 0
    with caplog.at_level(logging.INFO, logger="netledger.stream"):
        async for m in iter_subject(conn, SUBJECT, 1, n):
            got.append(m[0])
            if len(got) == 10:
                received = conn.nc.stats["in_msgs"]
                (name,) = deleter.consumers()
                deleter.delete(name)
    assert received < n  # deleted with messages still to deliver
    assert got == list(range(1, n + 1))  # every message once, in order, none skipped
    assert any("recreated under the read" in r.getMessage() for r in caplog.records)


async def test_a_read_goes_on_after_a_stalled_loop_lost_its_consumer(
    conn: Connection, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fleet's failure itself: the loop stalls past 5 s right after the consumer is
    created, the server drops the consumer nobody listens to, consumer_info 404s."""
    ours = await fill(conn, 300)
    stalls = 0

    def stall(_sub: Any) -> None:
        nonlocal stalls
        if stalls < 1:
            stalls += 1
            time.sleep(STALL_S)  # the whole loop stops, as 125 views on one loop did

    after_subscribing(monkeypatch, stall)
    with caplog.at_level(logging.WARNING, logger="netledger.stream"):
        got = [m[0] async for m in iter_subject(conn, SUBJECT, ours[10], ours[-1])]
    assert got == ours[10:]
    assert stalls == 1
    warned = lost_warnings(caplog)
    assert len(warned) == 1, warned
    assert all(f"at seq {ours[10]}" in w and "consumer not found" in w for w in warned), warned


async def test_a_read_that_keeps_losing_its_consumer_gives_up_saying_so(
    conn: Connection,
    nats_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ours = await fill(conn, 30)
    deleter = Deleter(nats_url, conn.stream)
    after_subscribing(monkeypatch, lambda sub: deleter.delete(sub._consumer))
    got = []
    with (
        caplog.at_level(logging.WARNING, logger="netledger.stream"),
        pytest.raises(
            Unavailable, match=r"lost its consumer 5 times, the last at seq 1 \(consumer not found"
        ),
    ):
        async for m in iter_subject(conn, SUBJECT, 1, ours[-1]):
            got.append(m)
    assert got == []
    assert len(deleter.deleted) == follow.READ_ATTEMPTS == 5
    assert len(lost_warnings(caplog)) == 4
    assert deleter.consumers() == []  # none left behind


@pytest.mark.parametrize("when", ["following", "stalled-at-subscribe"])
async def test_the_follower_goes_on_when_its_consumer_is_lost(
    conn: Connection, nats_url: str, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """The long-lived reader (an executor's, the service's) needs nothing of iter_subject's:
    it never asks about its consumer, and nats-py recreates one gone (two missed heartbeats)
    from after the last message it delivered."""
    ours = await fill(conn, 30)
    deleter = Deleter(nats_url, conn.stream)
    if when == "stalled-at-subscribe":
        after_subscribing(monkeypatch, lambda _sub: time.sleep(STALL_S))
    got: list[int] = []
    f = Follower(conn, lambda seq, subject, env, err, msg: got.append(seq), 1, SUBJECT)
    await f.start()
    try:
        await f.wait_for(ours[-1])
        if when == "following":
            (name,) = deleter.consumers()
            deleter.delete(name)
        more = await fill(conn, 30)
        await f.wait_for(more[-1])
    finally:
        await f.stop()
    assert got == ours + more
