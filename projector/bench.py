"""Catch-up rate of the projector vs the raw read rate of the same stream, and peak memory.

    .venv/bin/python -m netledger.projector.bench [--events 100000] [--batch-size 2000]

Starts its own nats-server (temporary store), publishes a synthetic but valid stream
(:func:`synthetic`: networks, allocations, leases, deallocations, floating IPs), then in the
same run measures: the raw ordered-push-consumer read of the whole stream (no decoding), the
projector catching up from zero in this process, and ``netledger projector run --once`` in a
child process for its peak RSS (run with --events 20000 and 100000: flat memory means the two
peaks are close).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from netledger.common.peak_rss import wait_peak
from netledger.events.codec import SYSTEM, Envelope, encode
from netledger.events.types import (
    Event,
    FixedIpAllocated,
    FixedIpDeallocated,
    FixedIpLeased,
    FloatingIpAllocated,
    FloatingPoolCreated,
    NetworkCreated,
)
from netledger.journal.stream import Connection, connect, ensure_stream

ADDRESSES_PER_NETWORK = 65_000


def _network(i: int) -> NetworkCreated:
    return NetworkCreated(
        network_id=str(i), label=f"bench{i}", cidr=f"10.{i}.0.0/16", netmask="255.255.0.0",
        gateway=f"10.{i}.0.1", broadcast=f"10.{i}.255.255", dhcp_start=f"10.{i}.0.2",
        mode="flat_dhcp", vlan=None, vni=None, bridge=f"brb{i}", bridge_interface=None,
        dns1=None, dns2=None, vpn_private_address=None, vpn_public_port=None, project=None,
        multi_host=False, network_host=None, mtu=None, cidr_v6=None,
    )  # fmt: skip


def synthetic(n: int, seed: int = 0) -> Iterator[tuple[str, bytes]]:
    """``n`` encoded events that all apply cleanly: roughly 75% allocations, 12% leases,
    8% deallocations, a few floating IPs; a new /16 network every 65,000 allocations."""
    rng = random.Random(seed)
    live: list[tuple[str, str, str, str]] = []  # (network, address, instance, mac)
    nets = 0
    next_offset = 0
    floating = 0
    emitted = 0

    def env(ev: Event) -> tuple[str, bytes]:
        nonlocal emitted
        emitted += 1
        e = Envelope(
            ev,
            f"bench-{seed}-{emitted}:0",
            f"bench-{seed}-{emitted}",
            1_700_000_000.0 + emitted / 1000,
            SYSTEM,
        )
        return ev.subject(), encode(e)

    yield env(FloatingPoolCreated(pool="pub", cidr="100.64.0.0/10", public_interface=None))
    while emitted < n:
        if nets == 0 or next_offset >= ADDRESSES_PER_NETWORK:
            nets += 1
            next_offset = 2
            yield env(_network(nets))
            continue
        r = rng.random()
        if r < 0.12 and live:
            net, addr, inst, mac = live[rng.randrange(len(live))]
            yield env(FixedIpLeased(network_id=net, address=addr, mac=mac, instance=inst))
        elif r < 0.20 and live:
            net, addr, inst, mac = live.pop(rng.randrange(len(live)))
            yield env(
                FixedIpDeallocated(
                    network_id=net, address=addr, instance=inst, mac=mac, host="h1", freed=True
                )
            )
        elif r < 0.21:
            floating += 1
            yield env(
                FloatingIpAllocated(
                    pool="pub",
                    address=f"100.{64 + (floating >> 16)}.{floating >> 8 & 255}.{floating & 255}",
                    project=f"p{floating % 7}",
                )
            )
        else:
            offset = next_offset
            next_offset += 1
            addr = f"10.{nets}.{offset >> 8}.{offset & 255}"
            inst = f"i-{emitted}"
            mac = f"02:16:3e:{emitted >> 16 & 255:02x}:{emitted >> 8 & 255:02x}:{emitted & 255:02x}"
            live.append((str(nets), addr, inst, mac))
            yield env(
                FixedIpAllocated(
                    network_id=str(nets),
                    address=addr,
                    instance=inst,
                    mac=mac,
                    host=f"h{emitted % 5}",
                    project=f"p{emitted % 7}",
                )
            )


async def publish(conn: Connection, items: Iterator[tuple[str, bytes]]) -> int:
    """Publish fast (``publish_async``, up to 4,000 in flight); return the stream's last seq."""
    last = 0
    futures = []
    for subject, data in items:
        futures.append(await conn.js.publish_async(subject, data, stream=conn.stream))
        if len(futures) >= 4000:
            acks = await asyncio.gather(*futures)
            last = max(last, max(int(a.seq) for a in acks))
            futures = []
    if futures:
        acks = await asyncio.gather(*futures)
        last = max(last, max(int(a.seq) for a in acks))
    return last


async def raw_read(conn: Connection, until: int) -> float:
    """Seconds to read the whole stream with an ordered push consumer doing nothing else."""
    done = asyncio.get_running_loop().create_future()
    count = 0

    async def cb(msg: object) -> None:
        nonlocal count
        count += 1
        if count >= until and not done.done():
            done.set_result(None)

    t = time.perf_counter()
    sub = await conn.js.subscribe(
        "netledger.evt.>",
        cb=cb,
        ordered_consumer=True,
        stream=conn.stream,
        pending_msgs_limit=-1,
        pending_bytes_limit=0,
    )
    await done
    dt = time.perf_counter() - t
    await sub.unsubscribe()
    return dt


def child_rss(url: str, db: Path, batch_size: int) -> tuple[float, int]:
    """Run ``netledger projector run --once`` in a child; (seconds, peak RSS in KiB)."""
    exe = Path(sys.executable).with_name("netledger")
    t = time.perf_counter()
    proc = subprocess.Popen(
        [
            str(exe),
            "--nats",
            url,
            "projector",
            "run",
            "--once",
            "--db",
            str(db),
            "--batch-size",
            str(batch_size),
        ],
        stdout=subprocess.DEVNULL,
    )
    _, peak_kib = wait_peak(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"projector exited {proc.returncode}")
    return time.perf_counter() - t, peak_kib


async def main(events: int, batch_size: int) -> None:
    from netledger.common.natsserver import EmbeddedNats, free_port

    from .runner import Projector

    with tempfile.TemporaryDirectory() as d:
        server = EmbeddedNats(data_dir=Path(d) / "nats", port=free_port(), sync_interval="default")
        server.start()
        try:
            conn = await connect(server.url, name="projector-bench")
            await ensure_stream(conn)
            t = time.perf_counter()
            last = await publish(conn, synthetic(events))
            print(f"published {last} events in {time.perf_counter() - t:.1f}s")
            for rnd in range(2):
                raw = await raw_read(conn, last)
                db = Path(d) / f"p{rnd}.db"
                t = time.perf_counter()
                p = Projector(conn, db, batch_size=batch_size, to_seq=last)
                await p.start()
                assert await p.done() == last
                await p.close()
                proj = time.perf_counter() - t
                print(
                    f"round {rnd + 1}: raw ordered read {last / raw:,.0f} ev/s ({raw:.2f}s);"
                    f" projector catch-up {last / proj:,.0f} ev/s ({proj:.2f}s);"
                    f" ratio {raw / proj:.2f}; writer process busy {p.write_seconds:.2f}s"
                    f" in {p.batches} batches"
                )
            await conn.close()
            secs, rss_all = child_rss(server.url, Path(d) / "child.db", batch_size)
            print(
                f"child `projector run --once` on {last} events: {secs:.1f}s (with start-up),"
                f" peak RSS {rss_all / 1024:.0f} MiB"
            )
            size = (Path(d) / "p0.db").stat().st_size
            print(f"database: {size / 1e6:.1f} MB for {last} events")
        finally:
            server.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--batch-size", type=int, default=2000)
    args = ap.parse_args()
    asyncio.run(main(args.events, args.batch_size))
