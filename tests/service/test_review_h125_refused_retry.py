"""Review h125: a retry refused while the log refuses writes is answered from the log when
its first attempt landed there (service/lanes.py ``_decide_and_append``, ``_log_readable``).

A command's first attempt is stored by another replica, its answer lost; the client asks again
with the same id and reaches a replica whose log is below its storage reserve (refusing
writes) and which has not read that event yet. The replica refused it ``not_applied`` on what
it had folded (the client could only turn that into ``unknown``, service/client.py); now it
folds the log's end first — the log is readable — and answers the command's answer. Real
nats-server, real command services, a real storage watcher; the second replica's connection
runs through a relay that holds what the server sends it, so that it cannot have read the
event when the retry comes (no timing)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import msgpack
import pytest

from netledger.common.natsserver import EmbeddedNats
from netledger.events.commands import Actor
from netledger.events.errors import LogStorageFull
from netledger.journal.loghealth import LogHealth
from netledger.journal.stream import connect, ensure_stream
from netledger.ops.config import Reserve
from netledger.ops.storage import StorageWatcher
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.journal.test_append_outcome_review11 import AckDropper

#: A TCP relay to nats-server that, while not ``open``, holds what the server sends (in
#: order, nothing lost) and forwards what the client sends.
Holding = AckDropper


def allocation(command_id: str, network_id: str) -> bytes:
    return msgpack.packb(
        {
            "command_id": command_id,
            "actor": Actor(role="admin").to_wire(),
            "args": {"instance": "i-h125", "network_id": network_id, "host": "h1"},
        },
        use_bin_type=True,
    )


async def test_a_retry_refused_while_the_log_is_full_gets_the_answer_its_first_attempt_stored(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    relay = Holding(nats_server.port)
    port = await relay.start()
    first_conn = await connect(nats_server.url, name="replica-1")
    late_conn = await connect(f"nats://127.0.0.1:{port}", name="replica-2")
    await ensure_stream(first_conn)
    health = LogHealth()
    first = CommandService(first_conn)
    late = CommandService(late_conn, health=health)
    watcher: StorageWatcher | None = None
    try:
        await first.start()
        await late.start()
        [net] = await Client(first_conn).create_networks(
            label="h125", cidr="10.125.0.0/24", num_networks=1
        )
        await late.follower.catch_up()
        # The store below its reserve (a reserve above what is free): the replica refuses.
        st = os.statvfs(tmp_path)
        reserve = Reserve(nbytes=st.f_bavail * st.f_frsize + (1 << 30))
        watcher = StorageWatcher(health, late_conn, reserve=reserve, store_dir=tmp_path)
        await watcher.tick()
        assert health.refusing is not None and health.refusing.code == LogStorageFull.code
        # A command the refusing replica has not folded is refused as before (nothing of it
        # is in the log): not_applied.
        with pytest.raises(LogStorageFull) as refused:
            await late.handle("fixed_ip.allocate", allocation("h125-new", net["id"]))
        assert refused.value.details["outcome"] == "not_applied"

        relay.open.clear()  # replica-2 reads nothing more until opened
        stored = await first.handle("fixed_ip.allocate", allocation("h125-cmd", net["id"]))
        retry = asyncio.create_task(
            late.handle("fixed_ip.allocate", allocation("h125-cmd", net["id"]))
        )
        await asyncio.sleep(0)  # (its first step: answered there before, not_applied)
        relay.open.set()
        assert await retry == stored
        assert "h125-cmd" in late.seen
    finally:
        if watcher is not None:
            await watcher.close()
        await late.close()
        await first.close()
        await late_conn.close()
        await first_conn.close()
        await relay.close()
