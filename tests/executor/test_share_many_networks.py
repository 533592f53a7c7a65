"""A host serving hundreds of networks reads its share — not every network — and folds what a
whole-log reader folds (issue 13.3). Real nats-server, real command service.

The cloud: 400 multi-host VXLAN networks and 200 single-host ones naming no host. ``h1`` has an
instance in 200 of the multi-host networks, ``h2`` in 300 (100 shared with h1) and in 50 of the
single-host ones (served by ``h4``, run with ``--network-host``). A view of h1 and one of h4
started on that history read exactly the events on their subjects (the base subjects and their
networks'), no other and none twice; then h1 joins 30 more networks, one at a time and as a
burst, while both follow — and they still match a whole-log view's desired state and still read
exactly their subjects' events.
"""

from __future__ import annotations

import asyncio
from typing import Any

from netledger.events.ids import EVENT_PREFIX, network_subject
from netledger.executor.desired import HostConfig, build
from netledger.executor.view import HostView
from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService

HOSTS = ["h1", "h2", "h3", "h4"]


def config(host: str) -> HostConfig:
    return HostConfig(
        host=host,
        physical_interface="eth1",
        public_interface="pub0",
        network_host=host == "h4",
        vtep_address=f"192.0.2.{HOSTS.index(host) + 1}",
        snat_address="198.51.100.1",
    )


def desired(v: HostView) -> Any:
    return build(v.state, v.book, config(v.host))


async def subject_counts(conn: Connection) -> dict[str, int]:
    info = await conn.js.stream_info(conn.stream, subjects_filter=f"{EVENT_PREFIX}.>")
    return dict(info.state.subjects or {})


def events_on(counts: dict[str, int], subjects: list[str]) -> int:
    """Events on ``subjects`` (filters: a trailing ``>`` matches a prefix)."""
    exact = {s for s in subjects if not s.endswith(">")}
    prefixes = [s[:-1] for s in subjects if s.endswith(">")]
    return sum(c for s, c in counts.items() if s in exact or any(s.startswith(p) for p in prefixes))


async def allocate_all(c: Client, pairs: list[tuple[str, str, str]]) -> None:
    """(instance, network, host) allocations, 16 in flight."""
    sem = asyncio.Semaphore(16)

    async def one(inst: str, nid: str, host: str) -> None:
        async with sem:
            await c.allocate_fixed_ip(inst, network_id=nid, host=host)

    await asyncio.gather(*(one(*p) for p in pairs))


async def test_a_host_of_200_networks_reads_only_its_share(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    multi = await c.request(
        "network.create",
        {"label": "m", "cidr": "10.0.0.0/16", "mode": "vxlan", "num_networks": 400,
         "network_size": 16, "vni_start": 1000, "multi_host": True},
    )  # fmt: skip
    single = await c.request(
        "network.create",
        {"label": "s", "cidr": "10.1.0.0/16", "mode": "vxlan", "num_networks": 200,
         "network_size": 16, "vni_start": 5000, "multi_host": False},
    )  # fmt: skip
    m = [n["id"] for n in multi["networks"]]
    s = [n["id"] for n in single["networks"]]
    await allocate_all(
        c,
        [(f"a{i}", m[i], "h1") for i in range(200)]
        + [(f"b{i}", m[i], "h2") for i in range(100, 400)]
        + [(f"c{i}", s[i], "h2") for i in range(50)],
    )
    for i in range(100, 110):  # others come and go in h1's networks
        await c.request("fixed_ip.deallocate", {"instance": f"b{i}"})

    views: dict[str, HostView] = {}
    try:
        for key, host, share in (("h1", "h1", True), ("h4", "h4", True),
                                 ("h1-whole", "h1", False), ("h4-whole", "h4", False)):  # fmt: skip
            v = HostView(conn, host, network_host=host == "h4", share=share)
            await v.start()
            views[key] = v
        h1, h4 = views["h1"], views["h4"]
        assert len(h1.networks) == 200 and not h1.every
        # h4 serves the 200 single-host networks (it reads them whether in use or not)
        assert h4.networks == set(s) and not h4.every
        await check(conn, views)

        # Live: h1 joins 30 more networks, ten one by one, twenty in a burst.
        for i in range(200, 210):
            await c.allocate_fixed_ip(f"a{i}", network_id=m[i], host="h1")
            await asyncio.sleep(0.02)
        await allocate_all(c, [(f"a{i}", m[i], "h1") for i in range(210, 230)])
        await c.allocate_fixed_ip("c-late", network_id=s[60], host="h3")
        await check(conn, views)
        assert len(h1.networks) == 230 and not h1.every
        # (the base: the registry, the announcements and their index, the retirements, its host
        # and placement)
        assert h1.follower is not None and len(h1.follower.subjects) == 6 + 230
    finally:
        for v in views.values():
            await v.close()


async def check(conn: Connection, views: dict[str, HostView]) -> None:
    """Caught up: each share view builds what the whole-log view builds, and has read exactly
    the events on its subjects — the base and every network it followed — once each."""
    for v in views.values():
        await v.sync()
    counts = await subject_counts(conn)
    total = sum(counts.values())
    for host in ("h1", "h4"):
        v, whole = views[host], views[f"{host}-whole"]
        assert desired(v) == desired(whole), host
        assert v.follower is not None and whole.follower is not None
        share = events_on(counts, v.share.subjects(v.networks))
        assert v.follower.handled == share, (host, v.follower.handled, share, total)
        assert whole.follower.handled == total
        # none of the other networks' events (h1: 200 of h2's networks; h4: all 400 multi-host)
        others = [network_subject(n) for n in v.state.networks if n not in v.networks]
        spared = events_on(counts, others)
        assert spared >= 200 and v.follower.handled <= total - spared
