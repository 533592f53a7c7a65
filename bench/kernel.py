"""Kernel: the executor next to ``ip -batch``, the no-op reconcile, command → kernel latency.

* 1,000 VXLAN networks, each with one address allocated on host ``bench-h1`` (served by another
  host, so this host needs exactly a bridge and a VXLAN link in it per network).
  ``netledger executor run --host bench-h1 --netns NS --once`` in a fresh namespace, wall time
  (process start and replaying the log included; the start is reported on its own row) vs the
  raw tools building the same kernel state in another fresh namespace (the raw limit since
  IPv6: ``ip -batch`` creating each bridge with its MAC and each VXLAN link in it, both with
  ``addrgenmode none`` and the alias, ``accept_ra`` 0 on the bridges through /proc, then the
  bridges up: :func:`same_work_texts`) — and, as before, ``ip -n NS -batch`` creating the links
  alone (bridge with forward_delay 0 / stp off, VXLAN with the VNI and port 4789 enslaved,
  alias set, all up), the ratio against it in the row's note.
* No-op reconcile: the same ``--once`` again on the populated namespace vs reading its state
  raw (``ip -d -j link`` + ``ip -j addr``).
* Latency: a running executor for ``bench-h2`` in its own namespace, already serving the 1,000
  networks (its first pass done); 200 allocations one after
  another, each in a network new to that host, timed from the request until ``ip monitor``
  shows the VXLAN link in its bridge. Raw floor: one publish-ack + one network's share of
  the ``ip -batch`` time.

Namespaces are ours (``nlb<pid><x>``), emptied in batches and deleted at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alloc import raw_sequential_occ
from benchlib import (
    NETLEDGER,
    Row,
    Rss,
    attempt,
    netledger_has,
    percentile,
    poisson_arrivals,
    run_measured_async,
    scaled,
    settle,
    stack,
)
from kernel_running import (
    HOST,
    LAT_HOST,
    NAME,
    OPEN_INTERVAL_FULL,
    OPEN_INTERVAL_SMALL,
    OPEN_RATE,
    OPEN_SWEEPS,
    executor_argv,
    executor_once,
    latency,
    open_loop,
    sweep_seconds,
)

from netledger.service.client import Client

TITLE = "Kernel: executor vs ip -batch, no-op reconcile, command → kernel latency"
VNI_BASE, LAT_VNI_BASE, OPEN_VNI_BASE = 1000, 50000, 60000


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@contextlib.contextmanager
def namespace(suffix: str) -> Iterator[str]:
    name = f"nlb{os.getpid()}{suffix}"
    ip("netns", "add", name)
    settle()  # what was torn down before is not charged to what is measured in here
    try:
        yield name
    finally:
        empty_namespace(name)
        ip("netns", "del", name, check=False)
        # the executors' state there (default --state-dir: dnsmasq files, view snapshots)
        shutil.rmtree(f"/run/netledger/{name}", ignore_errors=True)


def empty_namespace(ns: str) -> None:
    """Delete every link we made in batches first: deleting a namespace holding thousands of
    links blocks namespace creation machine-wide for a long time (KERNEL_NOTES.md)."""
    out = ip("-n", ns, "-o", "link", "show", check=False).stdout
    names = [ln.split(":")[1].strip().split("@")[0] for ln in out.splitlines() if ":" in ln]
    names = [n for n in names if n != "lo"]
    vx = [n for n in names if n.startswith("vx")]
    rest = [n for n in names if not n.startswith("vx")]
    for group in (vx, rest):
        for i in range(0, len(group), 500):
            batch = "".join(f"link del {n}\n" for n in group[i : i + 500])
            subprocess.run(
                ["ip", "-n", ns, "-force", "-batch", "-"],
                input=batch,
                text=True,
                capture_output=True,
            )


def batch_text(nets: list[dict[str, object]]) -> str:
    lines = []
    for n in nets:
        vni, br, alias = n["vni"], n["bridge"], f"netledger:{n['id']}"
        lines += [
            f"link add {br} type bridge forward_delay 0 stp_state 0",
            f"link set {br} alias {alias} up",
            f"link add vx{vni} type vxlan id {vni} dstport 4789",
            f"link set vx{vni} master {br} alias {alias} up",
        ]
    return "\n".join(lines) + "\n"


def same_work_texts(nets: list[dict[str, object]]) -> tuple[str, str, str]:
    """The kernel state the executor builds, step for step, with the raw tools: an ``ip -batch``
    creating each bridge down with its own MAC (random, locally administered) and each VXLAN
    link in it, both with ``addrgenmode none`` and the alias; ``accept_ra`` 0 on every bridge
    through /proc (a shell loop in the namespace: ``ip`` has no sysctl); an ``ip -batch``
    bringing the bridges up. What the executor does since IPv6 (issue 14): links without a
    link-local address, bridges that take no router advertisement."""
    create, sysctl, up = [], [], []
    for i, n in enumerate(nets):
        vni, br, alias = n["vni"], n["bridge"], f"netledger:{n['id']}"
        mac = (
            f"02:{(i >> 24) & 255:02x}:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}:01"
        )
        create += [
            f"link add {br} address {mac} type bridge forward_delay 0 stp_state 0",
            f"link set {br} addrgenmode none alias {alias}",
            f"link add vx{vni} type vxlan id {vni} dstport 4789",
            f"link set vx{vni} addrgenmode none",
            f"link set vx{vni} master {br} alias {alias} up",
        ]
        sysctl.append(f"echo 0 > /proc/sys/net/ipv6/conf/{br}/accept_ra")
        up.append(f"link set {br} up")
    return "\n".join(create) + "\n", "\n".join(sysctl) + "\n", "\n".join(up) + "\n"


async def same_work_seconds(ns: str, nets: list[dict[str, object]], tmp: Path) -> float:
    """Seconds for :func:`same_work_texts`' three steps in ``ns`` (each a process of its own)."""
    create, sysctl, up = same_work_texts(nets)
    (tmp / "same.create").write_text(create)
    (tmp / "same.sysctl").write_text(sysctl)
    (tmp / "same.up").write_text(up)
    total = 0.0
    for argv in (
        ["ip", "-n", ns, "-batch", str(tmp / "same.create")],
        ["ip", "netns", "exec", ns, "sh", str(tmp / "same.sysctl")],
        ["ip", "-n", ns, "-batch", str(tmp / "same.up")],
    ):
        fin = await run_measured_async(argv)
        if fin.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:5])} failed: {fin.stderr[-1000:]}")
        total += fin.seconds
    return total


def count_links(ns: str) -> int:
    return len(ip("-n", ns, "-o", "link", "show").stdout.splitlines()) - 1  # minus lo


async def create_vxlan_networks(
    admin: Client, count: int, vni_base: int, second_octet: int, label: str, network_host: str
) -> list[dict[str, object]]:
    nets: list[dict[str, object]] = []
    for start in range(0, count, 500):
        k = min(500, count - start)
        nets += await admin.create_networks(
            label=f"{label}{start}",
            cidr=f"10.{second_octet + 2 * (start // 500)}.0.0/15",
            num_networks=k,
            network_size=256,
            mode="vxlan",
            vni_start=vni_base + start,
            network_host=network_host,
        )
    return nets


async def allocate_each(
    url: str, nets: list[dict[str, object]], host: str, clients: int = 16
) -> None:
    conns = [await Client.connect(url) for _ in range(clients)]
    it = iter(nets)

    async def worker(c: Client) -> None:
        for n in it:
            await c.allocate_fixed_ip(f"{host}-{n['id']}", network_id=str(n["id"]), host=host)

    await asyncio.gather(*(worker(c) for c in conns))
    for c in conns:
        await c.close()


def _med(xs: list[float]) -> float:
    return statistics.median(xs)


def _samples(xs: list[float], unit: str = "s") -> str:
    if len(xs) == 1:
        return "1 sample"
    return f"median of {len(xs)} interleaved ({', '.join(f'{x:.3f}' for x in xs)} {unit})"


async def run(size: float, rss: Rss) -> list[Row]:
    if os.geteuid() != 0:
        raise RuntimeError("the kernel benchmark needs root (network namespaces)")
    count = scaled(1000, size, 5)
    nlat = scaled(200, size, 5)
    #: the executor --once and its raw limits: interleaved rounds (raw, raw, ours), medians
    rounds = 3 if size >= 0.1 else 1
    interval = OPEN_INTERVAL_FULL if size >= 0.5 else OPEN_INTERVAL_SMALL if size >= 0.05 else 0.3
    arrivals = poisson_arrivals(OPEN_RATE, OPEN_SWEEPS * interval)
    rows: list[Row] = []
    async with stack(NAME) as st:
        assert st.conn is not None
        admin = Client(st.conn)
        nets = await create_vxlan_networks(admin, count, VNI_BASE, 64, "k", "elsewhere")
        lat_nets = await create_vxlan_networks(admin, nlat, LAT_VNI_BASE, 100, "l", "elsewhere")
        open_nets = await create_vxlan_networks(
            admin, len(arrivals), OPEN_VNI_BASE, 140, "o", "elsewhere"
        )
        await allocate_each(st.url, nets, HOST)
        # The latency host already serves them all too: a change lands on a busy host.
        await allocate_each(st.url, nets, LAT_HOST)
        rss.note("command service", st.service_rss(), NAME)
        raw_ack = await raw_sequential_occ(st.url, max(50, nlat))
        has_executor = netledger_has("executor")
        if has_executor:
            settle()
            start = await run_measured_async([NETLEDGER, "executor", "run", "--help"])
        batch = st.tmp / "ip.batch"
        batch.write_text(batch_text(nets))
        ip_times: list[float] = []
        same_times: list[float] = []
        ours: list[float] = []
        links_ip = links_same = links = 0
        read_s = 0.0
        # Rounds of: ip -batch (links only), the raw tools building the executor's kernel state,
        # the executor --once — each in a fresh namespace. Every --once appends its ~2 host
        # events a network, so a later round's executor reads a longer share (as a host does).
        for r in range(rounds):
            last = r == rounds - 1
            with namespace(f"b{r}") as nsb:
                fin = await run_measured_async(["ip", "-n", nsb, "-batch", str(batch)])
                if fin.returncode != 0:
                    raise RuntimeError(f"ip -batch failed: {fin.stderr[-1000:]}")
                ip_times.append(fin.seconds)
                links_ip = count_links(nsb)
            with namespace(f"s{r}") as nss:
                same_times.append(await same_work_seconds(nss, nets, st.tmp))
                links_same = count_links(nss)
            if not has_executor:
                continue
            with namespace(f"e{r}") as nse:
                ours.append(await executor_once(st, nse, rss, count))
                links = count_links(nse)
                if not last:
                    continue
                t = time.perf_counter()
                ip("-n", nse, "-d", "-j", "link", "show")
                ip("-n", nse, "-j", "addr", "show")
                read_s = time.perf_counter() - t
                noop = await run_measured_async(executor_argv(st.url, HOST, nse, True))
                if noop.returncode != 0:
                    raise RuntimeError(
                        f"executor no-op --once failed ({noop.returncode}): {noop.stderr[-2000:]}"
                    )
                sweep = await attempt(
                    rows, NAME, "no-op full sweep", lambda: sweep_seconds(st, HOST, nse)
                )
        ip_s, same_s = _med(ip_times), _med(same_times)
        rows.append(
            Row(
                NAME,
                f"ip -batch: {count:,} networks ({links_ip:,} links)",
                ip_s,
                "s",
                note="information, no ratio is taken against it: plain links (link-local"
                " addresses, DAD, no own MAC), not the executor's kernel state (the raw limit"
                f" before IPv6 hardening); {_samples(ip_times)}",
            )
        )
        rows.append(
            Row(
                NAME,
                f"raw tools, the executor's kernel state: {count:,} networks ({links_same:,} links)",
                same_s,
                "s",
                baseline="raw limit",
                note="ip -batch + accept_ra via /proc + ip -batch (bench/kernel.py"
                f" same_work_texts); {_samples(same_times)}",
            )
        )
        if not has_executor:
            rows.append(
                Row(NAME, "executor", 0, "s", note="NOT RUN: no `netledger executor` command yet")
            )
            return rows
        once = _med(ours)
        rows += [
            Row(
                NAME,
                "executor: CLI process start (--help)",
                start.seconds,
                "s",
                note="included below",
            ),
            Row(
                NAME,
                f"executor --once: {count:,} networks ({links:,} links)",
                once,
                "s",
                same_s / once,
                "raw tools, the same kernel state",
                f"fresh namespace; {_samples(ours)}; a later round also reads the earlier"
                " rounds' reports (~2 events a network each: the share grows)",
            ),
            Row(
                NAME,
                f"raw state read: ip -d -j link + ip -j addr ({links:,} links)",
                read_s,
                "s",
                baseline="raw limit",
                note="1 sample",
            ),
            Row(
                NAME,
                f"executor no-op reconcile (--once process, {links:,} links)",
                noop.seconds,
                "s",
                read_s / noop.seconds,
                "raw state read",
                "process start, connect and reading its share included; 1 sample",
            ),
        ]
        if sweep is not None:
            rows.append(
                Row(
                    NAME,
                    f"executor no-op full drift sweep (running, {links:,} links)",
                    sweep,
                    "s",
                    read_s / sweep,
                    "raw state read",
                    "median periodic pass: dump links/addresses/fdb (beside the passes:"
                    " dump_ms), nft, diff everything (duration_ms): both counted",
                )
            )
        # The floor of one command reaching the kernel: one publish-ack and one network's share
        # of the raw tools building the executor's kernel state (the same baseline as --once).
        floor = 1 / raw_ack + same_s / count
        floor_name = "raw floor: publish-ack + 1 network of the raw tools' same kernel state"
        with namespace("l") as nsl:
            got = await attempt(
                rows, NAME, "command → kernel latency", lambda: latency(st, lat_nets, nsl, rss)
            )
            # Then commands arriving steadily on the same host (now serving count + nlat
            # networks), to a new executor with its sweeps and heartbeat shortened.
            opened = await attempt(
                rows,
                NAME,
                "command → kernel, open loop",
                lambda: open_loop(st, open_nets, arrivals, nsl, rss, interval),
            )
        rows.append(Row(NAME, floor_name, floor * 1000, "ms", baseline="raw limit"))
        if got is not None:
            p50, p99 = percentile(got, 50), percentile(got, 99)
            rows += [
                Row(
                    NAME,
                    f"command → kernel p50 ({len(got)} allocations)",
                    p50 * 1000,
                    "ms",
                    floor / p50,
                    "raw floor",
                    "one after another, right after the executor's first pass",
                ),
                Row(
                    NAME,
                    f"command → kernel p99 ({len(got)} allocations)",
                    p99 * 1000,
                    "ms",
                    floor / p99,
                    "raw floor",
                    "one after another, right after the executor's first pass",
                ),
            ]
        if opened is not None:
            rows += open_loop_rows(opened, floor, interval, count + nlat)
    return rows


def open_loop_rows(
    opened: tuple[list[float], dict[str, Any]], floor: float, interval: float, serving: int
) -> list[Row]:
    lat, status = opened
    first = status.get("first") or {}
    snap, snap0 = status.get("snapshot") or {}, first.get("snapshot") or {}
    run_s = float(status.get("run_s", 0.0))
    how = (
        f"{len(lat)} allocations, Poisson arrivals at {OPEN_RATE:.0f}/s over {run_s:.1f} s, each"
        f" timed from its scheduled arrival; the host serving {serving:,} networks; executor"
        f" --interval {interval:g} s and --heartbeat {interval:g} s (defaults 30 s and 60 s,"
        f" shortened so that the run spans {run_s / interval:.1f} sweep intervals); passes"
        f" {first.get('passes', '?')} -> {status.get('passes', '?')}, view snapshots written"
        f" {snap0.get('written', '?')} -> {snap.get('written', '?')}"
    )
    out = []
    for what, p in (("p50", 50), ("p99", 99), ("max", 100)):
        v = percentile(lat, p)
        out.append(
            Row(
                NAME,
                f"command → kernel {what}, open loop ({OPEN_RATE:.0f}/s)",
                v * 1000,
                "ms",
                floor / v,
                "raw floor",
                how if what == "p50" else "as above",
            )
        )
    return out


if __name__ == "__main__":
    import sys

    import runner

    runner.main(["--only", NAME, *sys.argv[1:]])
