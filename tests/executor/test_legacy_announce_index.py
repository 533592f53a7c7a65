"""Announcements stored before the announcement subjects existed, through an upgrade: the
command service points at each host's latest one that is on its host subject only
(``LegacyAnnouncementIndexed``: service/legacy_pointers.py), once, whichever replicas start; a
share view fetches what is pointed at and builds what a whole-log view builds (VTEPs and the
``--network-host`` role) — believing a pointer only where it leads to that host's own
announcement, never back to an older one. Real nats-server, real command services.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from netledger.events.codec import Actor, Envelope, encode
from netledger.events.host_events import HostAnnounced
from netledger.events.ids import LEGACY_ANNOUNCEMENTS, host_subject
from netledger.events.placement_events import LegacyAnnouncementIndexed
from netledger.executor.view import HostView
from netledger.journal.stream import Connection, connect
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.executor.test_executor_share import HOSTS, _all, config, desired, views
from tests.executor.test_legacy_announce_review20 import indexed
from tests.ops.test_auth import Secured
from tests.ops.test_auth import secured as secured  # the fixtures: real nats-server, auth on
from tests.ops.test_auth import svc as svc


async def publish(conn: Connection, ev: Any, subject: str, eid: str) -> int:
    env = Envelope(ev, eid, eid, time.time(), Actor(role="system"))
    ack = await conn.js.publish(subject, encode(env), stream=conn.stream)
    return int(ack.seq)


async def legacy(conn: Connection, host: str, vtep: str | None = None) -> int:
    """An announcement as executors before the announcement subjects wrote it."""
    cfg = config(host)
    ev = HostAnnounced(host, vtep or cfg.vtep_address, "eth1", "pub0", cfg.network_host)
    return await publish(conn, ev, host_subject(host), f"old-{host}-{time.monotonic_ns()}")


async def announce(conn: Connection, host: str, vtep: str) -> int:
    cfg = config(host)
    ev = HostAnnounced(host, vtep, "eth1", "pub0", cfg.network_host)
    return await publish(conn, ev, ev.subject(), f"new-{host}-{time.monotonic_ns()}")


async def pointers(conn: Connection) -> list[tuple[str, int]]:
    return [
        (e.host, e.seq) for _, e in await _all(conn) if isinstance(e, LegacyAnnouncementIndexed)
    ]


async def old_cloud(conn: Connection) -> None:
    """Networks and instances on every host (a vxlan multi-host network, a single-host one
    naming no host: served by the ``--network-host`` host, h4)."""
    svc = CommandService(conn)
    await svc.start()
    try:
        c = Client(conn)
        [vx] = await c.create_networks(
            label="vx", cidr="10.79.0.0/24", mode="vxlan", vni_start=790, multi_host=True,
            project="p1",
        )  # fmt: skip
        [flat] = await c.create_networks(
            label="fl", cidr="10.80.0.0/24", mode="flat_dhcp", bridge="br80", project="p2"
        )
        for i, h in enumerate(HOSTS):
            await c.allocate_fixed_ip(f"v{i}", network_id=vx["id"], host=h)
        await c.allocate_fixed_ip("f1", network_id=flat["id"], host="h1")
    finally:
        await svc.close()


async def test_replicas_starting_on_an_old_stream_point_once_then_share_views_agree(
    conn: Connection,
) -> None:
    await old_cloud(conn)
    h1 = await legacy(conn, "h1")
    await legacy(conn, "h2", "192.0.2.99")
    h2_latest = await legacy(conn, "h2")  # only the newest is pointed at
    await legacy(conn, "h3")
    await announce(conn, "h3", "192.0.2.33")  # h3 re-announced already: nothing to point at
    h4 = await legacy(conn, "h4")  # the network host

    # The upgrade: two replicas start together; a third start later writes nothing.
    a, b = CommandService(conn), CommandService(conn)
    await asyncio.gather(a.start(), b.start())
    try:
        want = [("h1", h1), ("h2", h2_latest), ("h4", h4)]
        assert sorted(await pointers(conn)) == want
        assert not a.state.legacy_announced and not b.state.legacy_announced
        async with CommandService(conn):
            pass
        assert sorted(await pointers(conn)) == want

        shared, whole = await views(conn, True), await views(conn, False)
        try:
            for h in HOSTS:
                assert desired(shared[h]) == desired(whole[h]), h
                assert shared[h].book.announced == whole[h].book.announced, h
                assert shared[h].state.network_hosts == whole[h].state.network_hosts == {"h4"}
                assert not shared[h].state.legacy_announced, h
            fdb = {f.dst for f in desired(shared["h1"]).fdb}
            assert fdb == {config("h2").vtep_address, "192.0.2.33", config("h4").vtep_address}

            # An executor not yet upgraded restarts with another VTEP while the replicas
            # run: pointed at as soon as they read it; a share view reading on learns it.
            s = await legacy(conn, "h2", "192.0.2.22")
            await indexed(conn, {"h2"})
            assert ("h2", s) in await pointers(conn)
            await shared["h1"].sync()
            await whole["h1"].sync()
            assert "192.0.2.22" in {f.dst for f in desired(shared["h1"]).fdb}
            assert desired(shared["h1"]) == desired(whole["h1"])
            # ... and a view starting from the start of the log too.
            late = HostView(conn, "h1")
            await late.start()
            try:
                assert desired(late) == desired(whole["h1"])
                assert late.follower is not None and whole["h1"].follower is not None
                assert late.follower.handled < whole["h1"].follower.handled
            finally:
                await late.close()
        finally:
            for v in [*shared.values(), *whole.values()]:
                await v.close()
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_a_pointer_is_believed_only_to_its_hosts_own_latest_announcement(
    conn: Connection, service: CommandService
) -> None:
    """Pointers the service did not write as it does (an admin's, a bug's): to a message that
    is no announcement, to another host's, beyond the stream, to an announcement older than one
    read since — none changes what a share view builds, none stops it."""
    c = Client(conn)
    [net] = await c.create_networks(
        label="px", cidr="10.81.0.0/24", mode="vxlan", vni_start=810, multi_host=True,
        project="p1",
    )  # fmt: skip
    for h in ("h1", "h2", "h3"):
        await c.allocate_fixed_ip(f"i-{h}", network_id=net["id"], host=h)
    old_h2 = await legacy(conn, "h2", "192.0.2.98")
    await announce(conn, "h2", "192.0.2.2")  # read by every share: newer than the pointer
    old_h3 = await legacy(conn, "h3")
    await indexed(conn, {"h3"})  # (h2's too, if the service read it before h2 re-announced)
    alloc = next(s for s, e in await _all(conn) if getattr(e, "instance", None) == "i-h1")
    bogus = [
        LegacyAnnouncementIndexed("h1", alloc),  # a network's event
        LegacyAnnouncementIndexed("h1", old_h3),  # h3's announcement, said to be h1's
        LegacyAnnouncementIndexed("h2", old_h2),  # older than what h2 announced since
        LegacyAnnouncementIndexed("h1", 10**9),  # beyond the stream
        LegacyAnnouncementIndexed("h.>", old_h3),  # no host id
    ]
    for i, ev in enumerate(bogus):
        await publish(conn, ev, LEGACY_ANNOUNCEMENTS, f"bogus-{i}")
    shared = HostView(conn, "h1", share=True)
    whole = HostView(conn, "h1", share=False)
    try:
        await shared.start()
        await whole.start()
        assert desired(shared) == desired(whole)
        assert {f.dst for f in desired(shared).fdb} == {"192.0.2.2", config("h3").vtep_address}
        assert "h1" not in shared.book.announced
        assert shared.settled()
    finally:
        await shared.close()
        await whole.close()


async def test_under_auth_the_service_points_and_an_executor_fetches(
    secured: Secured, svc: Any
) -> None:
    """With the credentials of ``netledger auth init``: h2's executor announces on its own
    subject (as older code did), the service (which may not write announcements) points at it,
    and h1's executor, with its own credentials, reads the pointer and fetches the message.
    (What a view does with it is tested above: a whole share view is not started here, its
    start costs a minute under auth — every subject it reads waits for a consumer delete that
    readers may not send.)"""
    _conn, _ = svc
    h2 = await connect(secured.url, name="executor-h2", **secured.creds["executor-h2"])
    h1 = await connect(secured.url, name="executor-h1", **secured.creds["executor-h1"])
    try:
        seq = await legacy(h2, "h2")
        await indexed(h1, {"h2"})
        view = HostView(h1, "h1")
        view._indexed = {"h2": seq}
        await view._read_indexed()
        assert view.book.announced["h2"].vtep_address == config("h2").vtep_address
        assert view.book.vteps() == {"h2": config("h2").vtep_address}
    finally:
        await h1.close()
        await h2.close()
