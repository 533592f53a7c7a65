"""A log that goes back (store restored from an older copy) stops readers loudly."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from netledger.events.client import Client
from netledger.events.errors import LogRegression, Unavailable
from netledger.events.service import CommandService
from netledger.events.stream import check_regression, connect, ensure_stream, last_seq
from netledger.natsserver import EmbeddedNats, free_port


def test_check_regression_pure() -> None:
    check_regression(10, 10)
    check_regression(11, 10)
    with pytest.raises(LogRegression) as e:
        check_regression(9, 10)
    assert e.value.details == {"stream_last_seq": 9, "seen_seq": 10}
    assert "9" in e.value.message and "10" in e.value.message


async def test_service_stops_when_the_store_is_restored_from_an_old_copy(tmp_path: Path) -> None:
    port = free_port()
    server = EmbeddedNats(data_dir=tmp_path / "nats", port=port, sync_interval="always")
    server.start()
    conn = await connect(server.url)
    svc: CommandService | None = None
    try:
        await ensure_stream(conn)
        svc = CommandService(conn, reap_interval=None)
        svc.watch_interval = 0.3
        await svc.start()
        c = Client(conn)
        c.deadline = 5.0
        [net] = await c.create_networks(label="n", cidr="10.6.0.0/24", mode="flat")
        await c.allocate_fixed_ip("i-1", network_id=net["id"])
        # Take a copy of the store (server stopped so the copy is consistent).
        server.stop()
        shutil.copytree(tmp_path / "nats" / "jetstream", tmp_path / "old-store")
        server.start()
        await asyncio.sleep(0.5)
        for k in range(2, 6):
            await c.allocate_fixed_ip(f"i-{k}", network_id=net["id"])
        seen = await last_seq(conn)
        # Restore the old copy under the running service.
        server.stop()
        shutil.rmtree(tmp_path / "nats" / "jetstream")
        shutil.copytree(tmp_path / "old-store", tmp_path / "nats" / "jetstream")
        server.start()
        assert svc.failed is not None
        err = await asyncio.wait_for(svc.failed, 30)
        assert isinstance(err, LogRegression)
        assert err.details["seen_seq"] == seen
        assert err.details["stream_last_seq"] < seen
        # It no longer decides anything: nothing is appended to the old log.
        before = await last_seq(conn)
        with pytest.raises(Unavailable):
            await c.allocate_fixed_ip("i-9", network_id=net["id"])
        assert await last_seq(conn) == before
    finally:
        if svc is not None:
            await svc.close()
        await conn.close()
        server.stop()
