"""Review of the projector's reading path (hrev3): scenarios that lost, doubled or stalled.

Each test fails on the code it was written against; the docstring says what it shows.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import pytest

from netledger.common.natsserver import EmbeddedNats
from netledger.journal import stream as jstream
from netledger.journal.stream import connect, ensure_stream
from netledger.projector import runner
from netledger.projector.compare import dump
from netledger.projector.runner import Projector, project_until


@pytest.mark.parametrize("owns", [False, True], ids=["shared", "owned"])
async def test_a_resubscription_that_fails_while_nats_is_away_does_not_stall_silently(
    nats_server: EmbeddedNats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, owns: bool
) -> None:
    """A back-pressure pause drops the consumer and subscribes again from a task
    (``_restart_reading``'s ``again``). If NATS does not answer that subscribe within
    ``retrying``'s window (30 s; shortened here to 1 s), ``Unavailable`` ends the task and
    nobody sees it: no subscription, no failure reported (``wait_failed`` / ``done`` never
    return), so ``projector run`` (a daemon) follows nothing for good once NATS is back."""
    from netledger.projector.bench import publish, synthetic

    monkeypatch.setattr(runner, "retrying", functools.partial(jstream.retrying, wait=1.0))
    conn = await connect(nats_server.url, name="stall-test")
    try:
        await ensure_stream(conn)
        end = await publish(conn, synthetic(3000, seed=3))
        p = Projector(
            conn, tmp_path / "p.db", batch_size=16, queue_size=64, heartbeat=0.5,
            owns_connection=owns,
        )  # fmt: skip
        subscribe = p._subscribe
        calls = 0

        async def subscribe_while_nats_is_away(start_seq: int) -> None:
            nonlocal calls
            calls += 1
            if calls != 2:  # the first resubscription (a pause): NATS is away meanwhile
                await subscribe(start_seq)
                return
            await asyncio.to_thread(nats_server.stop)
            try:
                await subscribe(start_seq)
            finally:
                await asyncio.to_thread(nats_server.start)

        p._subscribe = subscribe_while_nats_is_away  # type: ignore[method-assign]
        await p.start()
        try:
            failed = asyncio.create_task(p.wait_failed())
            caught_up = asyncio.create_task(p.wait_for(end, None))
            await asyncio.wait({failed, caught_up}, timeout=15)
            failed.cancel()
            caught_up.cancel()
            assert calls >= 2, "no pause happened"
            # Either it read on once NATS was back, or it said it stopped: not silence.
            assert p.last_seq == end or p.failure is not None, (
                f"stalled at {p.last_seq} of {end}: no subscription, no failure reported"
                f" (resubscribe task: {p._resub})"
            )
        finally:
            await p.close()
    finally:
        await conn.close()
