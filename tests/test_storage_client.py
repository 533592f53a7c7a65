"""What the client says when no answer comes (issue 16): no service at all, or a service that
listens but does not answer while its log refuses writes."""

from __future__ import annotations

import json

import pytest

from netledger.events.client import Client
from netledger.events.errors import LogStorageFull, Unavailable
from netledger.events.loghealth import STORAGE_LOW, LogHealth
from netledger.events.stream import Connection


async def test_no_service_says_so(conn: Connection) -> None:
    c = Client(conn, timeout=0.2, deadline=0.5)
    with pytest.raises(Unavailable) as e:
        await c.request("network.list", {})
    assert "no command service is running" in e.value.message
    assert (
        "netledger.admin.cmd.network.list" in e.value.message or "network.list" in e.value.message
    )


async def test_a_silent_service_with_a_full_log_is_named(conn: Connection) -> None:
    h = LogHealth()
    h.refuse(STORAGE_LOW, LogStorageFull("1.0 MiB free in /s, below the reserve of 2.0 MiB"))

    async def silent(msg: object) -> None:
        return None  # takes the request, never answers (a stuck replica)

    async def stats(msg: object) -> None:
        body = {"endpoints": [{"data": {"log": h.as_dict()}}]}
        await msg.respond(json.dumps(body).encode())  # type: ignore[attr-defined]

    subs = [
        await conn.nc.subscribe("netledger.admin.cmd.>", cb=silent),
        await conn.nc.subscribe("$SRV.STATS.netledger", cb=stats),
    ]
    try:
        c = Client(conn, timeout=0.2, deadline=0.5)
        with pytest.raises(LogStorageFull) as e:
            await c.request("network.list", {})
        assert "did not answer network.list" in e.value.message
        assert "below the reserve" in e.value.message
        assert e.value.code == "log_storage_full"
    finally:
        for s in subs:
            await s.unsubscribe()


async def test_a_silent_service_otherwise_is_not_blamed_on_the_log(conn: Connection) -> None:
    async def silent(msg: object) -> None:
        return None

    sub = await conn.nc.subscribe("netledger.admin.cmd.>", cb=silent)
    try:
        c = Client(conn, timeout=0.2, deadline=0.5)
        with pytest.raises(Unavailable) as e:
            await c.request("network.list", {})
        assert type(e.value) is Unavailable
        assert "did not answer network.list" in e.value.message
        assert "netledger status" in e.value.message
    finally:
        await sub.unsubscribe()
