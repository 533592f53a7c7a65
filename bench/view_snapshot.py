"""An executor's start with years of its own reports behind it: from the log vs from a snapshot.

Issue 13: an executor's start read its whole share from sequence 1, its own host subject
included — every report it ever appended. Here one host's share (``--networks`` networks with
``--instances`` instances each, some on this host) on a log that also holds ``--own`` reports of
the host on its own subject; ``HostView.start`` (what the executor's start spends on the log)
is timed:

* **log**: from sequence 1 (no snapshot: what every start did before);
* **fresh**: the same share on a log without the reports (what the share itself costs);
* **snapshot**: loading ``view.snapshot`` (executor/snapshot.py), restoring the view and reading
  the tail (``--tail`` more reports appended after the snapshot);

interleaved, median of ``--rounds``; plus the snapshot's size and the time to write it. Not part
of ``bench/run`` (a few seconds, no namespace): run it by hand.

    .venv/bin/python bench/view_snapshot.py [--own 16000] [--tail 100] [--rounds 5]

Measured 2026-12-04 (10 networks of 20 instances, 5 on this host; 2 cores, shared):

| HostView.start | ms (median) | messages read |
|---|---:|---:|
| from the log (seq 1), 16,000 own reports | 244 / 255 | 16,320 / 17,220 |
| same share, fresh log (no reports) | 23 / 24 | 220 |
| from the snapshot + tail of 100 / of 1,000 | 21 / 35 | 100 / 1,000 |

The snapshot: 8 KB, written in 8 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchlib import EmbeddedNats, free_port  # noqa: E402

from netledger.events.codec import Actor, Envelope  # noqa: E402
from netledger.events.host_events import HostAddressAdded, HostLinkCreated, HostReconciled  # noqa: E402
from netledger.executor.snapshot import ViewKind, ViewSnapshots  # noqa: E402
from netledger.executor.view import HostView  # noqa: E402
from netledger.journal.append import Appender, build_messages  # noqa: E402
from netledger.journal.stream import Connection, connect, ensure_stream  # noqa: E402
from netledger.service.client import Client  # noqa: E402
from netledger.service.service import CommandService  # noqa: E402

HOST = "bench-h1"


async def share(conn: Connection, networks: int, instances: int) -> None:
    c = Client(conn)
    nets = await c.create_networks(
        label="b", cidr="10.40.0.0/16", mode="vxlan", vni_start=3000, num_networks=networks,
        network_size=256, multi_host=True,
    )  # fmt: skip
    for n in nets:
        for i in range(instances):
            host = HOST if i % 4 == 0 else f"bench-h{2 + i % 7}"
            await c.allocate_fixed_ip(f"{n['id']}-{i}", network_id=n["id"], host=host)


async def reports(conn: Connection, n: int, tag: str) -> None:
    """``n`` reports on the host's subject, as passes leave them (links, addresses, a pass)."""
    appender = Appender(conn)
    actor = Actor(role="system", user=f"executor:{HOST}")
    envs = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            ev: HostReconciled | HostLinkCreated | HostAddressAdded = HostLinkCreated(
                HOST, f"br{i % 50}", "bridge", None, False
            )
        elif kind == 1:
            ev = HostAddressAdded(HOST, f"br{i % 50}", f"10.40.{i % 50}.1/24", None, False)
        else:
            ev = HostReconciled(HOST, i, 2, 0, 1.0)
        envs.append(Envelope(ev, f"{tag}-{i}:0", f"{tag}-{i}", time.time(), actor))
    for i in range(0, n, 1000):
        await appender.append(build_messages(envs[i : i + 1000]), {})


async def timed(fn: Callable[[], Awaitable[HostView]]) -> tuple[float, int]:
    t0 = time.perf_counter()
    v = await fn()
    dt = time.perf_counter() - t0
    assert v.follower is not None
    read = v.follower.handled
    await v.close()
    return dt, read


async def main(a: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        servers = []
        conns = []
        for name in ("aged", "fresh"):
            s = EmbeddedNats(data_dir=Path(tmp) / name, port=free_port(), sync_interval="default")
            s.start()
            servers.append(s)
            conn = await connect(s.url, name=f"bench-{name}")
            await ensure_stream(conn)
            conns.append(conn)
        aged, fresh = conns
        services = [CommandService(c) for c in conns]
        try:
            for svc in services:
                await svc.start()
            for c in conns:
                await share(c, a.networks, a.instances)
            await reports(aged, a.own, "past")
            path = str(Path(tmp) / "view.snapshot")
            snaps = ViewSnapshots(aged, path, ViewKind(HOST, True, False))

            async def from_log(conn: Connection) -> HostView:
                v = HostView(conn, HOST)
                await v.start()
                return v

            async def from_snapshot() -> HostView:
                v = HostView(aged, HOST)
                snap = await snaps.load()
                assert snap is not None
                v.restore(snap)
                await v.start()
                return v

            v = await from_log(aged)
            assert v.follower is not None
            t0 = time.perf_counter()
            size = await snaps.write(
                v.state, v.follower.position, v.follower.handled, v.snapshot_extra,
                await snaps.created(),
            )  # fmt: skip
            write_s = time.perf_counter() - t0
            networks = len(v.networks)
            await v.close()
            await reports(aged, a.tail, "tail")
            runs: dict[str, list[tuple[float, int]]] = {"log": [], "fresh": [], "snapshot": []}
            for _ in range(a.rounds):
                runs["log"].append(await timed(lambda: from_log(aged)))
                runs["fresh"].append(await timed(lambda: from_log(fresh)))
                runs["snapshot"].append(await timed(from_snapshot))
            print(
                f"host {HOST}: {networks} networks in its share, {a.own:,} own reports, then a"
                f" tail of {a.tail}; snapshot {size:,} bytes written in {write_s * 1000:.0f} ms"
                " (forked child, fsync, rename)"
            )
            print("| HostView.start | ms (median) | messages read |")
            print("|---|---:|---:|")
            labels = {
                "log": f"from the log (seq 1), {a.own:,} own reports",
                "fresh": "same share, fresh log (no reports)",
                "snapshot": f"from the snapshot + tail of {a.tail}",
            }
            for k, rs in runs.items():
                ms = statistics.median(r[0] for r in rs) * 1000
                print(f"| {labels[k]} | {ms:.0f} | {rs[0][1]:,} |")
        finally:
            for svc in services:
                await svc.close()
            for c in conns:
                await c.close()
            for s in servers:
                s.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--own", type=int, default=16_000, help="the host's own reports")
    ap.add_argument("--tail", type=int, default=100, help="reports after the snapshot")
    ap.add_argument("--networks", type=int, default=10)
    ap.add_argument("--instances", type=int, default=20, help="instances per network")
    ap.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(ap.parse_args()))
