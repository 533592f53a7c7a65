"""``host retire`` end to end on a real nats-server with a real command service: refused while
the host holds an address, then recorded; every executor's view — reading its share, or the
whole log, or starting later — drops the host's VTEP from its flood entries and its
``--network-host`` role from who serves what, and builds the same desired state either way; a
host that announces itself again is back everywhere."""

from __future__ import annotations

import pytest

from netledger.events.errors import NetledgerError
from netledger.executor.view import HostView
from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.executor.test_executor_share import HOSTS, NETWORK_HOST, announce, config, desired, views


def vteps(v: HostView) -> set[str]:
    return {f.dst for f in desired(v).fdb}


async def test_a_retired_host_leaves_every_view_and_comes_back_when_it_announces(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    for h in HOSTS:
        await announce(conn, h, 0)
    (vx,) = await c.create_networks(
        label="vx", cidr="10.81.0.0/24", mode="vxlan", vni_start=810, multi_host=True
    )
    (fl,) = await c.create_networks(
        label="fl", cidr="10.82.0.0/24", mode="flat_dhcp", bridge="br82"
    )
    for i, h in enumerate(["h1", "h2", "h3"]):
        await c.allocate_fixed_ip(f"v{i}", network_id=vx["id"], host=h)
    await c.allocate_fixed_ip("f1", network_id=fl["id"], host="h1")  # served by h4
    shared, whole = await views(conn, True), await views(conn, False)
    every = [*shared.values(), *whole.values()]
    try:
        assert config("h2").vtep_address in vteps(shared["h1"])
        assert shared["h1"].state.network_hosts == {NETWORK_HOST}

        with pytest.raises(NetledgerError) as info:
            await c.request("host.retire", {"host": "h2"})
        assert info.value.code == "host_in_use"
        with pytest.raises(NetledgerError) as info:
            await c.request("host.retire", {"host": "h9"})
        assert info.value.code == "host_not_found"

        await c.deallocate_fixed_ip("v1", network_id=vx["id"])
        assert await c.request("host.retire", {"host": "h2"}) == {"retired": "h2"}
        # The network host holds no address: retired, its networks lose their server.
        assert await c.request("host.retire", {"host": NETWORK_HOST}) == {"retired": NETWORK_HOST}
        assert "h2" not in service.state.sightings and not service.state.network_hosts
        for v in every:
            await v.sync()
        for h in ("h1", "h3"):
            assert "h2" not in shared[h].book.announced, h
            assert not shared[h].state.network_hosts, h
            assert desired(shared[h]) == desired(whole[h]), h
        late = HostView(conn, "h1", share=True)  # reads announcements, then retirements
        await late.start()
        try:
            assert set(late.book.announced) == {"h1", "h3"}
            assert desired(late) == desired(whole["h1"])
        finally:
            await late.close()

        # h2's executor starts again: it announces itself, and is back everywhere.
        await announce(conn, "h2", 1)
        for v in every:
            await v.sync()
        assert "h2" in shared["h1"].book.announced and not shared["h1"].state.retired("h2")
        assert desired(shared["h1"]) == desired(whole["h1"])
        again = HostView(conn, "h3", share=True)
        await again.start()
        try:
            assert set(again.book.announced) == {"h1", "h2", "h3"}
            assert desired(again) == desired(whole["h3"])
        finally:
            await again.close()
        # ... and may be retired again (a retirement is decided on the fold: no
        # allocation there).
        assert await c.request("host.retire", {"host": "h2"}) == {"retired": "h2"}
        await whole["h1"].sync()
        assert "h2" not in whole["h1"].book.announced
    finally:
        for v in every:
            await v.close()
