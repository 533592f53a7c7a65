"""Review hrev83 (issue 13: costs follow change, not age): dnsmasq's log in the executor's
state dir grows with every DHCP renewal, forever.

The executor starts dnsmasq with ``--log-facility=DIR/BR.log`` (executor/dhcp.py) and nothing
ever rotates, truncates or caps that file while the bridge is served (it is removed only with
the bridge). dnsmasq logs every DHCP packet there, one ~90-byte line each: a renewal — the
client's own clock, every half lease time, no change to anything — is a DHCPREQUEST and a
DHCPACK line (~180 bytes); the udhcpc run here asks from scratch, DISCOVER to ACK (~360 bytes).
A bridge of 250 instances on the default day-long leases renews ~500 times a day (~90 KB a
day, ~33 MB a year); the default state dir is /run, a tmpfs: RAM, for as long as the network
lives. Here one instance asks for its unchanged lease again and again: the log of events
stays as it is and the state dir grows with each request. Real nats-server, command service, executor (--once), dnsmasq and a
busybox udhcpc client in namespaces (root), all removed at the end.

Fixed: dnsmasq runs with ``--quiet-dhcp --quiet-dhcp6 --quiet-ra`` (no line per packet; its
errors still logged) and the lease script throws away the answer of a renewal of a lease
already reported (executor/dhcpplan.py); the executor rotates a log past ``LOG_CAP``
(executor/dhcp.py: test_dhcp_log_cap_netns.py)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest

from netledger.journal.stream import Connection, last_seq
from netledger.service.client import Client

from .dhcp_helpers import DhcpLab, dhcp_lab, wait_for_event

FIRST, THEN = 2, 8


@pytest.fixture
def world() -> Iterator[DhcpLab]:
    with dhcp_lab() as the_lab:
        yield the_lab


@pytest.mark.netns
async def test_renewals_of_an_unchanged_lease_do_not_grow_the_state_dir(
    world: DhcpLab, conn: Connection, service: Any, nats_url: str
) -> None:
    h = world.ns("h")
    c = Client(conn)
    [net] = await c.create_networks(
        label="renew", cidr="10.83.0.0/24", mode="flat_dhcp", bridge="brrenew", network_host="h"
    )
    nid, bridge = net["id"], net["bridge"]
    a = await c.allocate_fixed_ip("vm-a", network_id=nid, host="h")
    await asyncio.to_thread(world.run, nats_url, "h", h)
    guest = world.guest(h, bridge, "va", a["mac"])
    log = os.path.join(world.dhcp_dir("h"), f"{bridge}.log")

    sizes: dict[int, tuple[int, int]] = {}
    for k in range(1, THEN + 1):
        got = await asyncio.to_thread(world.dhcp, guest)  # the same lease, asked for again
        assert got is not None and got["ip"] == a["address"], got
        if k == 1:  # the first lease is in the log; later renewals change nothing there
            await wait_for_event(
                conn,
                f"netledger.evt.network.{nid}",
                lambda e: e.TYPE == "FixedIpLeased" and e.address == a["address"],
            )
        if k in (FIRST, THEN):
            size = await asyncio.to_thread(os.path.getsize, log)
            sizes[k] = (size, await last_seq(conn))
    (log_a, seq_a), (log_b, seq_b) = sizes[FIRST], sizes[THEN]
    per_renewal = (log_b - log_a) / (THEN - FIRST)
    # (the renewals' lease-script runs may append nothing: the lease is the log's already)
    assert seq_b == seq_a, f"renewals appended {seq_b - seq_a} events"
    # Flat would be 0 bytes per renewal; a bound well below one log line each.
    assert per_renewal < 16, f"{bridge}.log {log_a} -> {log_b} bytes: {per_renewal:.0f} per renewal"
