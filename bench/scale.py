"""Allocation rate in a /16 with 0 and with 50,000 addresses in use (must stay within 10%).

The 50,000 addresses are appended directly as FixedIpAllocated events in atomic batches of
1,000 (the same Appender and OCC the service uses) while the service is stopped, then ~10% of
them, drawn at random, are deallocated (FixedIpDeallocated, freed: a flat network frees at
once), so the full /16 has holes all over it as a used one does and the allocations there take
freed addresses. The service (as shipped: ``sync_interval: always``, its projector, caught up
first) then starts, folds them in (its hydration time is reported too), and allocates in the
full /16 and in an empty /16, interleaved, one client sequential.
"""

from __future__ import annotations

import random
import time

from alloc import alloc_rate, raw_sequential_occ
from benchlib import SHIPPED, Row, Rss, alternate, scaled, stack

from netledger.events.codec import Envelope
from netledger.events.types import FixedIpAllocated, FixedIpDeallocated
from netledger.journal.append import Appender, build_messages
from netledger.journal.stream import MAX_BATCH, Connection, last_seq
from netledger.service.client import Client

NAME = "scale"
TITLE = "Scale of the address space (/16)"
FULL_FILL = 50_000
#: the share of the fill deallocated at random before measuring
FREED = 0.10


def _fill_ip(network_id: str, base: str, i: int) -> tuple[str, str, str]:
    """Address, instance and MAC of the ``i``-th fill allocation (from .2 up)."""
    a, b = (int(x) for x in base.split(".")[:2])
    off = i + 2  # .0 network, .1 gateway, dhcp_start .2
    return (
        f"{a}.{b}.{off >> 8}.{off & 255}",
        f"fill-{network_id}-{i}",
        f"02:16:3e:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",
    )


async def fill_network(
    conn: Connection, network_id: str, base: str, count: int, expected: int
) -> int:
    """Append ``count`` allocations (lowest addresses first, from .2) in atomic batches."""
    app = Appender(conn)
    subject = f"netledger.evt.network.{network_id}"
    now = time.time()
    done = 0
    while done < count:
        envs = []
        for i in range(done, min(count, done + MAX_BATCH)):
            address, instance, mac = _fill_ip(network_id, base, i)
            ev = FixedIpAllocated(
                network_id=network_id,
                address=address,
                instance=instance,
                mac=mac,
                host="h1",
                project=None,
            )
            envs.append(Envelope(ev, instance, instance, now))
        expected = await app.append(build_messages(envs), {subject: expected})
        done += len(envs)
    return expected


async def free_random(
    conn: Connection, network_id: str, base: str, count: int, share: float, expected: int
) -> tuple[int, int]:
    """Deallocate ``share`` of the ``count`` fill allocations, drawn at random (seeded), in
    atomic batches: (the subject's last sequence, how many were freed)."""
    picked = sorted(random.Random(7).sample(range(count), int(count * share)))
    app = Appender(conn)
    subject = f"netledger.evt.network.{network_id}"
    now = time.time()
    for start in range(0, len(picked), MAX_BATCH):
        envs = []
        for i in picked[start : start + MAX_BATCH]:
            address, instance, mac = _fill_ip(network_id, base, i)
            ev = FixedIpDeallocated(
                network_id=network_id,
                address=address,
                instance=instance,
                mac=mac,
                host="h1",
                freed=True,  # a flat network frees at once (events/decide_fixed.py)
            )
            envs.append(Envelope(ev, f"free-{instance}", f"free-{instance}", now))
        expected = await app.append(build_messages(envs), {subject: expected})
    return expected, len(picked)


async def run(size: float, rss: Rss) -> list[Row]:
    fill = scaled(FULL_FILL, size, 200)
    n = scaled(1500, size, 20)
    rounds = 3 if size >= 0.5 else 1
    async with stack(NAME) as st:
        assert st.conn is not None
        admin = Client(st.conn)
        [empty] = await admin.create_networks(
            label="empty", cidr="10.10.0.0/16", network_size=65536, mode="flat", bridge="br1"
        )
        [full] = await admin.create_networks(
            label="full", cidr="10.11.0.0/16", network_size=65536, mode="flat", bridge="br2"
        )
        await st.stop_service()
        t = time.perf_counter()
        # NetworkCreated lives on the registry subject: the network's own subject is empty (0).
        last = await fill_network(st.conn, full["id"], "10.11", fill, 0)
        fill_rate = fill / (time.perf_counter() - t)
        _, freed = await free_random(st.conn, full["id"], "10.11", fill, FREED, last)
        in_use = fill - freed
        t = time.perf_counter()
        await st.start_service()
        hydrate = time.perf_counter() - t
        await st.wait_projected(await last_seq(st.conn))
        url = st.url
        await alloc_rate(url, 1, [empty["id"]], 10)
        await alloc_rate(url, 1, [full["id"]], 10)
        e, f = await alternate(
            lambda: alloc_rate(url, 1, [empty["id"]], n),
            lambda: alloc_rate(url, 1, [full["id"]], n),
            rounds,
        )
        raw = await raw_sequential_occ(url, n)
        rss.note("command service", st.service_rss(), f"{NAME} ({fill:,} addresses folded)")
    verdict = "OK (within 10%)" if f / e >= 0.9 else "OVER 10% SLOWER"
    return [
        Row(NAME, "raw publish-ack, OCC header (sequential)", raw, "msg/s", baseline="raw limit"),
        Row(
            NAME,
            f"fill: atomic batches of {MAX_BATCH}",
            fill_rate,
            "events/s",
            note=f"{fill:,} events",
        ),
        Row(
            NAME,
            f"service start, folding {fill + freed + 2:,} events",
            hydrate,
            "s",
            note=f"hydration ({SHIPPED})",
        ),
        Row(NAME, "/16 empty, 1 client", e, "alloc/s", e / raw, "raw publish-ack OCC"),
        Row(
            NAME,
            f"/16 with {in_use:,} in use ({freed:,} freed at random), 1 client",
            f,
            "alloc/s",
            f / raw,
            "raw publish-ack OCC",
            f"{fill:,} allocated, then {freed:,} deallocated: the allocations take freed holes",
        ),
        Row(
            NAME,
            f"/16 with {in_use:,} in use vs empty",
            f / e,
            "x",
            f / e,
            "/16 empty",
            verdict,
        ),
    ]


if __name__ == "__main__":
    import sys

    import runner

    runner.main(["--only", NAME, *sys.argv[1:]])
