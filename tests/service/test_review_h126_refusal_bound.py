"""Review h126: a command refused while the log refuses writes waits for the log's end once,
not once per lane round (service/lanes.py ``_decide_and_append``, h125's put-off refusal).

Readable by the service's own account (the store below its reserve, the connection up), the
log may still not answer: a server stalled on its full disk, a stream without its leader. Each
refused command then waited out REFUSAL_CATCH_UP_S in its round — and a lane decides one
command a round (all but allocations): the N-th command refused in a lane was answered after
N waits, past the issue's "within a few seconds" (issue 16) and, with a dozen, past the
client's deadline. Now a refusal waits at most REFUSAL_CATCH_UP_S from its request. Real
nats-server, a real storage watcher; the service's connection runs through a relay that holds
what the server sends (``Holding``: the connection stays up, nothing is read). No timing: the
test counts the catch-ups that waited out their bound."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import msgpack
import pytest

from netledger.common.natsserver import EmbeddedNats
from netledger.events.commands import Actor
from netledger.events.errors import LogStorageFull, NetworkNotFound
from netledger.journal.loghealth import LogHealth
from netledger.journal.stream import connect, ensure_stream
from netledger.ops.config import Reserve
from netledger.ops.storage import StorageWatcher
from netledger.service import lanes
from netledger.service.service import CommandService
from tests.service.test_review_h125_refused_retry import Holding

GAVE_UP = "refusal not checked against the log's end"
#: the refusal's bound here (5 s as shipped, waited out once a test): still well past ``gap``,
#: so the later commands have some of their own bound left when the first's wait gives up
BOUND_S = 2.0


def creation(command_id: str, n: int) -> bytes:
    return msgpack.packb(
        {
            "command_id": command_id,
            "actor": Actor(role="admin").to_wire(),
            "args": {"label": f"h126-{n}", "cidr": f"10.126.{n}.0/24", "num_networks": 1},
        },
        use_bin_type=True,
    )


@pytest.mark.parametrize("gap", [0.0, 0.3])
async def test_refusals_queued_in_one_lane_wait_for_an_unanswering_log_once(
    nats_server: EmbeddedNats,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    gap: float,
) -> None:
    """``gap``: the later two asked that long after the first — each had that much of its own
    bound left when the first's wait gave up, and waited it again before 2860960."""
    monkeypatch.setattr(lanes, "REFUSAL_CATCH_UP_S", BOUND_S)
    relay = Holding(nats_server.port)
    port = await relay.start()
    conn = await connect(f"nats://127.0.0.1:{port}", name="h126")
    await ensure_stream(conn)
    health = LogHealth()
    svc = CommandService(conn, health=health)
    watcher: StorageWatcher | None = None
    try:
        await svc.start()
        st = os.statvfs(tmp_path)
        reserve = Reserve(nbytes=st.f_bavail * st.f_frsize + (1 << 30))
        watcher = StorageWatcher(health, conn, reserve=reserve, store_dir=tmp_path)
        await watcher.tick()
        assert health.refusing is not None and health.refusing.code == LogStorageFull.code

        relay.open.clear()  # the server answers nothing more: the log's end cannot be read
        assert conn.nc.is_connected
        caplog.set_level(logging.WARNING, logger="netledger.service")

        # Three creations: the registry lane decides one a round, so three rounds.
        async def create(n: int) -> Any:
            await asyncio.sleep(gap if n else 0.0)
            return await svc.handle("network.create", creation(f"h126-{n}", n))

        answers = await asyncio.gather(*(create(n) for n in range(3)), return_exceptions=True)
        assert not relay.open.is_set()  # answered without the log having been read
        for a in answers:
            assert isinstance(a, LogStorageFull), a
        waits = [r for r in caplog.records if r.getMessage().startswith(GAVE_UP)]
        # One wait for the three (asked together): the first round's; the next rounds'
        # commands had waited their bound in the lane already.
        assert len(waits) == 1, [r.getMessage() for r in waits]
    finally:
        relay.open.set()
        if watcher is not None:
            await watcher.close()
        await svc.close()
        await conn.close()
        await relay.close()


def deletion(command_id: str, network_id: str) -> bytes:
    return msgpack.packb(
        {
            "command_id": command_id,
            "actor": Actor(role="admin").to_wire(),
            "args": {"network_id": network_id},
        },
        use_bin_type=True,
    )


async def test_not_found_refusals_queued_in_one_lane_wait_for_an_unanswering_log_once(
    nats_server: EmbeddedNats, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for a refusal on the state ("not found"), checked against the log's end before
    it is answered (review h107) whatever the log's health: with the log not answering, three
    deletions of networks that do not exist — the registry lane decides one a round — waited
    three bounds (15 s) before the newest put-off refusal's queue time was compared with the
    last give-up; now the first round's wait is the only one."""
    monkeypatch.setattr(lanes, "REFUSAL_CATCH_UP_S", BOUND_S)
    relay = Holding(nats_server.port)
    port = await relay.start()
    conn = await connect(f"nats://127.0.0.1:{port}", name="h126-nf")
    await ensure_stream(conn)
    svc = CommandService(conn)
    try:
        await svc.start()
        relay.open.clear()  # the server answers nothing more: the log's end cannot be read
        assert conn.nc.is_connected
        caplog.set_level(logging.WARNING, logger="netledger.service")
        answers = await asyncio.gather(
            *(svc.handle("network.delete", deletion(f"nf-{n}", str(900 + n))) for n in range(3)),
            return_exceptions=True,
        )
        assert not relay.open.is_set()  # answered without the log having been read
        for a in answers:
            assert isinstance(a, NetworkNotFound), a
        waits = [r for r in caplog.records if r.getMessage().startswith(GAVE_UP)]
        assert len(waits) == 1, [r.getMessage() for r in waits]
        # A refusal asked after that give-up has not seen the log not answer: it is checked
        # (one more wait), not refused on what the replica holds at once.
        late = await asyncio.gather(
            svc.handle("network.delete", deletion("nf-late", "999")), return_exceptions=True
        )
        assert isinstance(late[0], NetworkNotFound), late
        waits = [r for r in caplog.records if r.getMessage().startswith(GAVE_UP)]
        assert len(waits) == 2, [r.getMessage() for r in waits]
    finally:
        relay.open.set()
        await svc.close()
        await conn.close()
        await relay.close()
