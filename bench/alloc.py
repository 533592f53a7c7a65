"""Allocation throughput against the raw JetStream limits measured in the same run.

    .venv/bin/python bench/alloc.py [--n 2000] [--clients 16] [--json]

Starts its own nats-server (temporary store) and one command-service process, then measures:
raw sequential publish-ack with the OCC header, raw ``publish_async``, and netledger
allocations (one client sequential; N concurrent clients on one network; N clients over N
networks; a /16 with 0 and with many addresses in use).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from netledger.events.client import Client  # noqa: E402
from netledger.events.codec import Envelope, encode  # noqa: E402
from netledger.events.stream import connect, ensure_stream  # noqa: E402
from netledger.events.types import FixedIpAllocated  # noqa: E402
from netledger.natsserver import EmbeddedNats, free_port  # noqa: E402

NETLEDGER = str(Path(sys.executable).parent / "netledger")


def _payload(i: int) -> bytes:
    ev = FixedIpAllocated(network_id="raw", address=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
                          instance=f"i-{i}", mac="02:16:3e:00:00:01", host="h1", project="p1")
    return encode(Envelope(ev, f"raw-{i}", f"raw-{i}", time.time()))


async def raw_sequential_occ(url: str, n: int) -> float:
    conn = await connect(url)
    seq = 0
    t = time.perf_counter()
    for i in range(n):
        ack = await conn.js.publish("netledger.evt.network.rawocc", _payload(i), headers={
            "Nats-Expected-Last-Subject-Sequence": str(seq), "Nats-Msg-Id": f"ro-{i}"})
        seq = ack.seq
    dt = time.perf_counter() - t
    await conn.close()
    return n / dt


async def raw_async(url: str, n: int) -> float:
    conn = await connect(url)
    t = time.perf_counter()
    futs = []
    for i in range(n):
        futs.append(await conn.js.publish_async("netledger.evt.network.rawasync", _payload(i),
                                                headers={"Nats-Msg-Id": f"ra-{i}"}))
    await conn.js.publish_async_completed()
    dt = time.perf_counter() - t
    await conn.close()
    return n / dt


async def alloc_rate(url: str, clients: int, per_network: list[str], n: int, prefix: str) -> float:
    conns = [await Client.connect(url) for _ in range(clients)]
    counter = iter(range(n))

    async def worker(k: int) -> None:
        c = conns[k]
        for i in counter:
            await c.allocate_fixed_ip(f"{prefix}-{i}", network_id=per_network[k % len(per_network)], host="h1")

    t = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(clients)))
    dt = time.perf_counter() - t
    for c in conns:
        await c.close()
    return n / dt


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


async def main(n: int, clients: int, fill: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="nl-bench-"))
    server = EmbeddedNats(data_dir=tmp / "nats", port=free_port(), sync_interval="default")
    server.start()
    svc = None
    try:
        conn = await connect(server.url)
        await ensure_stream(conn)
        svc = subprocess.Popen([NETLEDGER, "--nats", server.url, "serve", "--no-projector"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert svc.stdout and "ready" in svc.stdout.readline()
        admin = Client(conn)
        out: dict[str, float] = {}
        out["raw_publish_ack_occ"] = await raw_sequential_occ(server.url, n)
        out["raw_publish_async"] = await raw_async(server.url, n * 4)
        [one] = await admin.create_networks(label="seq", cidr="10.0.0.0/16", network_size=65536, mode="flat", bridge="br1")
        out["alloc_1_client"] = await alloc_rate(server.url, 1, [one["id"]], n, "s")
        [shared] = await admin.create_networks(label="conc", cidr="10.1.0.0/16", network_size=65536, mode="flat", bridge="br2")
        out[f"alloc_{clients}_clients_1_network"] = await alloc_rate(server.url, clients, [shared["id"]], n * 2, "c")
        many = await admin.create_networks(label="many", cidr="10.2.0.0/16", num_networks=clients, network_size=4096, mode="vxlan")
        out[f"alloc_{clients}_clients_{clients}_networks"] = await alloc_rate(server.url, clients, [m["id"] for m in many], n * 2, "m")
        if fill:
            [big] = await admin.create_networks(label="fill", cidr="10.3.0.0/16", network_size=65536, mode="flat", bridge="br3")
            out["alloc_16_empty"] = await alloc_rate(server.url, 1, [big["id"]], n, "e")
            await alloc_rate(server.url, clients, [big["id"]], fill, "f")
            out[f"alloc_16_with_{fill}_in_use"] = await alloc_rate(server.url, 1, [big["id"]], n, "g")
        out["service_peak_rss_mb"] = rss_kb(svc.pid) / 1024
        await conn.close()
        return out
    finally:
        if svc is not None:
            svc.terminate()
            svc.wait(10)
        server.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--fill", type=int, default=0, help="addresses to put in use for the scale test")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    res = asyncio.run(main(a.n, a.clients, a.fill))
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        for k, v in res.items():
            print(f"{k:40s} {v:10.0f}")
        base1, baseN = res["raw_publish_ack_occ"], res["raw_publish_async"]
        print(f"ratio 1 client / raw publish-ack(OCC): {res['alloc_1_client'] / base1:.2f}")
        for k, v in res.items():
            if k.startswith(f"alloc_{a.clients}_clients"):
                print(f"ratio {k} / raw publish_async: {v / baseN:.2f}")
    os._exit(0)
