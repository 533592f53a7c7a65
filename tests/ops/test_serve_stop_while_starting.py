"""A Ctrl-C or SIGTERM while serve's command service folds the log stops serve there.

A start without a usable snapshot folds the whole log (seconds at 1 M events, minutes at ten
times that); serve's stop event was looked at only once the service was ready, so a stop during
the fold waited for its end. Now serve closes the service (its start is cancelled: nothing of it
left running, the catch-up child collected) and returns without saying it is ready.

Real nats-server and log; the stop is given the moment serve says it will fold (its catch-up
notice, made to come at any length here), so it lands during the fold whatever the machine's
speed — and were the fold done first, serve must stop all the same, never serve.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from netledger import serve as serve_mod
from netledger.common.natsserver import EmbeddedNats
from netledger.journal.stream import connect, ensure_stream
from netledger.ops.storage import parse_reserve
from netledger.serve import serve_forever
from netledger.service import service as service_mod
from netledger.service.snapshotter import SnapshotPolicy
from tests.service.test_catchup import _forked_children, _history


async def test_a_stop_during_the_start_stops_serve_before_it_is_ready(
    nats_server: EmbeddedNats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = await connect(nats_server.url)
    await ensure_stream(conn)
    try:
        await _history(conn, host_events=3000)  # long enough for the catch-up child
    finally:
        await conn.close()
    ready, stop = asyncio.Event(), asyncio.Event()
    told: list[tuple[int, int]] = []

    def catching_up(first: int, last: int, snapshot: int | None) -> None:
        told.append((first, last))
        stop.set()  # (serve's signal handlers set this event)

    monkeypatch.setattr(service_mod, "CATCH_UP_NOTICE", 1)
    monkeypatch.setattr(serve_mod, "_say_catching_up", catching_up)
    before = set(asyncio.all_tasks())
    await asyncio.wait_for(
        serve_forever(
            nats_url=nats_server.url,
            data_dir=tmp_path / "serve",
            port=0,
            nats_binary=None,
            sync_interval="always",
            replicas=1,
            run_projector=False,
            ready=ready,
            stop=stop,
            snapshots=SnapshotPolicy(every_events=0),
            storage_reserve=parse_reserve("1MB"),
        ),
        60,
    )
    assert told and told[0][0] == 1  # it was folding the whole log
    assert not ready.is_set()  # never said it was ready
    assert not _forked_children()  # the catch-up child collected
    left = {t for t in asyncio.all_tasks() - before if not t.done()}
    assert left == set(), left
