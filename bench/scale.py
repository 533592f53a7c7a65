"""Allocation rate in a /16 with 0 and with 50,000 addresses in use (must stay within 10%).

The 50,000 addresses are appended directly as FixedIpAllocated events in atomic batches of
1,000 (the same Appender and OCC the service uses) while the service is stopped; the service then
starts, folds them in (its hydration time is reported too), and allocates in the full /16 and in
an empty /16, interleaved, one client sequential.
"""

from __future__ import annotations

import time

from alloc import alloc_rate, raw_sequential_occ
from benchlib import Row, Rss, alternate, scaled, stack

from netledger.events.codec import Envelope
from netledger.events.types import FixedIpAllocated
from netledger.journal.append import Appender, build_messages
from netledger.journal.stream import MAX_BATCH, Connection
from netledger.service.client import Client

NAME = "scale"
TITLE = "Scale of the address space (/16)"
FULL_FILL = 50_000


async def fill_network(
    conn: Connection, network_id: str, base: str, count: int, expected: int
) -> int:
    """Append ``count`` allocations (lowest addresses first, from .2) in atomic batches."""
    a, b = (int(x) for x in base.split(".")[:2])
    app = Appender(conn)
    subject = f"netledger.evt.network.{network_id}"
    now = time.time()
    done = 0
    while done < count:
        envs = []
        for i in range(done, min(count, done + MAX_BATCH)):
            off = i + 2  # .0 network, .1 gateway, dhcp_start .2
            ev = FixedIpAllocated(
                network_id=network_id,
                address=f"{a}.{b}.{off >> 8}.{off & 255}",
                instance=f"fill-{network_id}-{i}",
                mac=f"02:16:3e:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",
                host="h1",
                project=None,
            )
            envs.append(Envelope(ev, f"fill-{network_id}-{i}", f"fill-{network_id}-{i}", now))
        expected = await app.append(build_messages(envs), {subject: expected})
        done += len(envs)
    return expected


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
        await fill_network(st.conn, full["id"], "10.11", fill, 0)
        fill_rate = fill / (time.perf_counter() - t)
        t = time.perf_counter()
        await st.start_service()
        hydrate = time.perf_counter() - t
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
        Row(NAME, f"service start, folding {fill + 2:,} events", hydrate, "s", note="hydration"),
        Row(NAME, "/16 empty, 1 client", e, "alloc/s", e / raw, "raw publish-ack OCC"),
        Row(
            NAME,
            f"/16 with {fill:,} in use, 1 client",
            f,
            "alloc/s",
            f / raw,
            "raw publish-ack OCC",
        ),
        Row(NAME, f"/16 with {fill:,} in use vs empty", f / e, "x", f / e, "/16 empty", verdict),
    ]


if __name__ == "__main__":
    import sys

    import runner

    runner.main(["--only", NAME, *sys.argv[1:]])
