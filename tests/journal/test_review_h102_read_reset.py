"""Review h102 of b301f19 (journal/follow.py ``_read_once``): a one-off read whose consumer
nats-py recreated *before* the read asked about it, after the first consumer had delivered
every message of the read, must still yield them.

The read counts what it waits for from the consumer it asks about (``base``: where that one
started): nats-py recreates a lost ordered consumer from after the last message it received, so
the one asked about counts nothing of what the first delivered — those wait in the read's
buffer. Counted from the second, nothing was left (``left == 0``) and the read ended at once,
yielding none of them: a host's share or a joined network's history read as empty, without an
error. The consumer is really deleted on a real nats-server; nats-py really recreates it (two
missed heartbeats); only the moment is chosen (between the subscribe and the question)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from netledger.journal import follow
from netledger.journal.follow import iter_subject
from netledger.journal.stream import Connection
from tests.journal.test_read_consumer_lost import OTHER, SUBJECT, fill

#: a guard against a hang only (nats-py recreates a consumer after two missed 1 s heartbeats)
GUARD_S = 60.0


def recreated_before_asking(
    monkeypatch: pytest.MonkeyPatch, conn: Connection, delivered_through: int
) -> list[tuple[str, str]]:
    """Before the read's first ``consumer_info``: wait until its consumer delivered through
    ``delivered_through``, delete the consumer on the server and wait until nats-py has made
    another. The (old, new) consumer names are recorded."""
    real = follow.retrying
    swaps: list[tuple[str, str]] = []

    async def retrying(fn: Any, what: str, wait: float = 30.0) -> Any:
        if getattr(fn, "__name__", "") == "consumer_info" and not swaps:
            psub = fn.__self__
            jsi = psub._sub._jsi

            async def lose() -> None:
                while jsi._sseq < delivered_through:  # the messages reach the subscription
                    await asyncio.sleep(0.01)
                old = psub._consumer
                await conn.js.delete_consumer(conn.stream, old)
                while psub._consumer == old:  # nats-py's activity check recreates it
                    await asyncio.sleep(0.05)
                swaps.append((old, psub._consumer))

            await asyncio.wait_for(lose(), GUARD_S)
        return await real(fn, what, wait)

    monkeypatch.setattr(follow, "retrying", retrying)
    return swaps


@pytest.mark.parametrize("later", [False, True], ids=["nothing-after", "more-after"])
async def test_a_read_whose_consumer_was_recreated_before_it_asked_yields_every_message(
    conn: Connection, monkeypatch: pytest.MonkeyPatch, later: bool
) -> None:
    ours = await fill(conn, 60)
    upto = ours[-1]
    if later:
        # Messages past ``upto``: the second consumer counts them, and the read stops at the
        # first (it must still yield what the first consumer delivered through ``upto``).
        ours_later = await fill(conn, 6)
        assert ours_later[0] > upto
    swaps = recreated_before_asking(monkeypatch, conn, upto)
    got = [m[0] async for m in iter_subject(conn, SUBJECT, ours[3], upto)]
    assert len(swaps) == 1 and swaps[0][0] != swaps[0][1]  # really recreated before asking
    assert got == ours[3:]  # every message once, in order, none skipped


async def test_a_read_recreated_before_asking_with_nothing_to_read_ends(
    conn: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other side of the seam: nothing of the subject in the stretch (the first consumer
    delivered nothing; recreated from where it started): the read ends, empty."""
    await fill(conn, 9)
    start = (await conn.js.publish(OTHER, b"y", stream=conn.stream)).seq
    swaps = recreated_before_asking(monkeypatch, conn, 0)
    got = [m[0] async for m in iter_subject(conn, SUBJECT, start, start)]
    assert got == [] and len(swaps) == 1


@pytest.mark.parametrize(
    "subject", [SUBJECT, "netledger.evt.network.>", "netledger.evt.network.99"]
)
async def test_the_seams_of_a_read_that_loses_its_first_consumers(
    conn: Connection, nats_url: str, monkeypatch: pytest.MonkeyPatch, subject: str
) -> None:
    """The other seams of b301f19: a filter of several subjects, a subject with nothing in the
    stretch, a read bounded before the stream's end (more of the subject after it) — with
    the first two consumers deleted on the server before the read asks about them (404)."""
    from tests.journal.test_read_consumer_lost import Deleter, after_subscribing

    await fill(conn, 30)
    stored = [
        (m.seq, m.subject) for m in [await conn.js.get_msg(conn.stream, s) for s in range(1, 31)]
    ]
    await fill(conn, 9)  # past the read's end
    deleter = Deleter(nats_url, conn.stream)
    after_subscribing(
        monkeypatch, lambda sub: deleter.delete(sub._consumer) if len(deleter.deleted) < 2 else None
    )
    got = [(m[0], m[1]) async for m in iter_subject(conn, subject, 4, 30)]
    want = [
        (seq, s)
        for seq, s in stored
        if seq >= 4 and (s == subject or (subject.endswith(">") and s.startswith(subject[:-1])))
    ]
    assert got == want
    assert len(deleter.deleted) == 2
