"""The open loop's driver (bench/alloc_open.py ``_drive``) holds only the requests in flight
(a list of every task made its generation-2 collections walk ~15,000 done tasks, stalls charged
to the requests due meanwhile): each request still gets its latency, and one that fails still
fails the run — also when it failed long before the last arrival."""

from __future__ import annotations

import asyncio
import gc
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "bench"))

from alloc_open import _drive


async def test_every_request_gets_its_latency_and_only_those_in_flight_are_held() -> None:
    # The last arrival a second after the others: the driver sleeps till it, so every earlier
    # request has returned and its done callback has run before the last is started — and
    # before the driver's closing gather, which holds what is in flight then (a driver behind
    # its schedule gathered requests that were done by the last one's check: CI under load).
    times = [i * 0.001 for i in range(199)] + [1.2]
    lanes = [i % 4 for i in range(200)]
    seen: list[int] = []
    gate = asyncio.Event()

    async def send(i: int, lane: int) -> None:
        assert lane == lanes[i]
        seen.append(i)
        if i == 199:
            # The last arrival: every earlier request has returned (it awaited nothing) and
            # its task is no longer held by anything (it was, by the driver's list, till the end).
            gc.collect()  # (a task no longer held but not yet collected is no one's)
            done = [o for o in gc.get_objects() if isinstance(o, asyncio.Task) and o.done()]
            assert done == []
            gate.set()

    latencies = await _drive(times, lanes, send)
    assert gc.get_freeze_count() == 0  # (frozen for the arrivals only)
    assert gate.is_set()
    assert sorted(seen) == list(range(200))
    assert len(latencies) == 200 and all(x >= 0 for x in latencies)


async def test_a_request_that_failed_early_fails_the_run() -> None:
    times = [i * 0.001 for i in range(50)]

    async def send(i: int, lane: int) -> None:
        if i == 2:
            raise RuntimeError("request 2 failed")

    with pytest.raises(RuntimeError, match="request 2 failed"):
        await _drive(times, [0] * 50, send)
    assert gc.get_freeze_count() == 0
