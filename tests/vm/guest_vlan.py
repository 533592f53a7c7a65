"""802.1Q checks of the executor's vlan mode; run as root on a kernel with ``8021q``.

Runs inside the VM of :mod:`tests.vm.harness` (or directly on a host whose kernel has 8021q),
without pytest: every check is recorded in a JSON file that ``tests/executor/test_vlan_vm.py`` asserts
on. Python is ~30x slower in the VM, so everything happens in this one process: an embedded
nats-server, the command service, the executor of two hosts (in-process, ``once``), and the
traffic checks (ICMP from raw sockets, no ping binary needed).

The world: two "hosts" (namespaces ``nlv-h1``/``nlv-h2``) joined by a veth pair that is each
host's physical interface ``eth1``; two projects with one vlan network each; four instance
stand-ins (``nlv-i1``..``nlv-i4``: a namespace with ``eth0`` holding the allocated MAC and
address, its peer enslaved to the network's bridge on the instance's host).

Usage: ``python tests/vm/guest_vlan.py --out results.json``. Exit 0 when every check passed.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
PREFIX = "nlv-"
HOSTS = {"h1": f"{PREFIX}h1", "h2": f"{PREFIX}h2"}
PHYS = "eth1"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

#: (instance, project, host); alpha and beta each have one instance on each host.
INSTANCES = (
    ("i1", "alpha", "h1"),
    ("i2", "alpha", "h2"),
    ("i3", "beta", "h1"),
    ("i4", "beta", "h2"),
)
PROJECTS = {
    "alpha": {"cidr": "10.51.0.0/24", "vlan_start": 151},
    "beta": {"cidr": "10.52.0.0/24", "vlan_start": 152},
}
#: An address of alpha's subnet put on a beta instance: unreachable from alpha only if the VLANs
#: really separate the two (same subnet, so no routing could explain a failure).
INTRUDER = "10.51.0.250"
#: ... and one on the other beta instance, to show the intruder address does answer in beta.
INTRUDER_PEER = "10.51.0.249"


class Results:
    def __init__(self) -> None:
        self.checks: dict[str, dict[str, Any]] = {}
        self.timings: dict[str, float] = {}
        self.info: dict[str, Any] = {}
        self.t0 = time.monotonic()

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        t = time.monotonic()
        try:
            yield
        finally:
            self.timings[name] = round(time.monotonic() - t, 2)

    def check(self, name: str, ok: bool, **detail: Any) -> bool:
        self.checks[name] = {"ok": bool(ok), **detail}
        print(f"{'PASS' if ok else 'FAIL'} {name} {detail if not ok else ''}", flush=True)
        return bool(ok)

    def error(self, name: str, exc: BaseException) -> None:
        self.check(name, False, error=f"{type(exc).__name__}: {exc}", tb=traceback.format_exc())

    def dump(self, path: Path) -> None:
        self.timings["total"] = round(time.monotonic() - self.t0, 2)
        data = {
            "ok": bool(self.checks) and all(c["ok"] for c in self.checks.values()),
            "checks": self.checks,
            "timings": self.timings,
            "info": self.info,
        }
        tmp = path.with_suffix(".part")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        tmp.rename(path)


# --- namespaces -------------------------------------------------------------------------------


def in_ns(ns: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a thread that entered namespace ``ns`` (setns is per thread)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {ns}")
            finally:
                os.close(fd)
            box["v"] = fn()
        except BaseException as exc:
            box["e"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box["v"]  # type: ignore[no-any-return]


def ip_batch(lines: list[str], ns: str | None = None) -> None:
    argv = ["ip", *(["-n", ns] if ns else []), "-batch", "-"]
    p = subprocess.run(argv, input="\n".join(lines) + "\n", capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {p.stderr.strip()}\n" + "\n".join(lines))


def ip_text(ns: str, *args: str) -> str:
    return subprocess.run(
        ["ip", "-n", ns, *args], capture_output=True, text=True, check=False
    ).stdout


def our_namespaces() -> list[str]:
    try:
        return sorted(n for n in os.listdir("/run/netns") if n.startswith(PREFIX))
    except FileNotFoundError:
        return []


def cleanup() -> None:
    for ns in our_namespaces():
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


# --- ICMP ---------------------------------------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ping(ns: str, dst: str, timeout: float) -> bool:
    try:
        return _ping(ns, dst, timeout)
    except OSError as exc:
        print(f"ping {dst} from {ns}: {exc}", flush=True)
        return False


def _ping(ns: str, dst: str, timeout: float) -> bool:
    """ICMP echo from namespace ``ns`` to ``dst``: True on a reply within ``timeout`` seconds.
    Requests are resent every 0.5 s (the first one may wait for ARP)."""

    def go() -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
            ident = (os.getpid() + threading.get_ident()) & 0xFFFF
            deadline = time.monotonic() + timeout
            seq = 0
            next_send = 0.0
            while (now := time.monotonic()) < deadline:
                if now >= next_send:
                    seq += 1
                    hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"netledger-vlan"
                    pkt = hdr[:2] + struct.pack("!H", _checksum(hdr)) + hdr[4:]
                    s.sendto(pkt, (dst, 0))
                    next_send = now + 0.5
                s.settimeout(max(0.01, min(next_send, deadline) - time.monotonic()))
                try:
                    data, addr = s.recvfrom(2048)
                except TimeoutError:
                    continue
                ihl = (data[0] & 0x0F) * 4
                typ, _code, _ck, rid, _rseq = struct.unpack_from("!BBHHH", data, ihl)
                if addr[0] == dst and typ == 0 and rid == ident:
                    return True
            return False

    return in_ns(ns, go)


# --- the world ------------------------------------------------------------------------------


def check_kernel_vlan(r: Results, ipr_cls: Any) -> None:
    """pyroute2 alone: a kind='vlan' link exists on this kernel (else nothing below can)."""
    ns = f"{PREFIX}probe"
    ip_batch([f"netns add {ns}"])
    try:

        def probe() -> dict[str, Any]:
            with ipr_cls() as ipr:
                ipr.link("add", ifname="d0", kind="dummy")
                d0 = ipr.link_lookup(ifname="d0")[0]
                ipr.link("add", ifname="d0.7", kind="vlan", link=d0, vlan_id=7)
                (link,) = ipr.get_links(ipr.link_lookup(ifname="d0.7")[0])
                data = link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
                return {
                    "vlan_id": data.get_attr("IFLA_VLAN_ID"),
                    "link": link.get_attr("IFLA_LINK"),
                }

        got = in_ns(ns, probe)
        r.check("kernel_8021q", got["vlan_id"] == 7, **got)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def build_hosts() -> None:
    lines = [f"netns add {ns}" for ns in HOSTS.values()]
    lines += [f"netns add {PREFIX}{i}" for i, _, _ in INSTANCES]
    lines += [
        f"link add {PREFIX}p1 type veth peer name {PREFIX}p2",
        f"link set {PREFIX}p1 netns {HOSTS['h1']}",
        f"link set {PREFIX}p2 netns {HOSTS['h2']}",
    ]
    for inst, _, host in INSTANCES:
        lines += [
            f"link add {PREFIX}t{inst} type veth peer name {PREFIX}e{inst}",
            f"link set {PREFIX}t{inst} netns {HOSTS[host]}",
            f"link set {PREFIX}e{inst} netns {PREFIX}{inst}",
        ]
    ip_batch(lines)
    for n, ns in enumerate(HOSTS.values(), 1):
        ip_batch(
            ["link set lo up", f"link set {PREFIX}p{n} name {PHYS}", f"link set {PHYS} up"], ns
        )


def plug_instances(allocs: dict[str, dict[str, Any]], bridges: dict[str, str]) -> None:
    for inst, project, host in INSTANCES:
        a = allocs[inst]
        ip_batch([f"link set {PREFIX}t{inst} master {bridges[project]} up"], HOSTS[host])
        ip_batch(
            [
                "link set lo up",
                f"link set {PREFIX}e{inst} name eth0 address {a['mac']}",
                f"addr add {a['address']}/24 dev eth0",
                "link set eth0 up",
            ],
            f"{PREFIX}{inst}",
        )


def link_view(ipr_cls: Any, ns: str) -> dict[str, dict[str, Any]]:
    """Every link of ``ns``: kind, vlan id, lower device, master, up, index, alias."""

    def read() -> dict[str, dict[str, Any]]:
        with ipr_cls() as ipr:
            links = ipr.get_links()
        names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in links}
        out = {}
        for m in links:
            info = m.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
            data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
            out[m.get_attr("IFLA_IFNAME")] = {
                "index": m["index"],
                "kind": kind,
                "vlan_id": data.get_attr("IFLA_VLAN_ID") if kind == "vlan" and data else None,
                "lower": names.get(m.get_attr("IFLA_LINK")) if kind == "vlan" else None,
                "master": names.get(m.get_attr("IFLA_MASTER")),
                "up": bool(m["flags"] & 1),
                "alias": m.get_attr("IFLA_IFALIAS"),
                "rx_packets": _rx_packets(m),
            }
        return out

    return in_ns(ns, read)


def _rx_packets(m: Any) -> int | None:
    stats = m.get_attr("IFLA_STATS64")
    return int(stats["rx_packets"]) if stats is not None else None


# --- the log and the executor -------------------------------------------------------------


async def run_scenario(r: Results, ipr_cls: Any, tmp: Path) -> None:
    from netledger.common.natsserver import EmbeddedNats, free_port
    from netledger.executor.daemon import run_executor
    from netledger.executor.desired import HostConfig
    from netledger.executor.options import Options
    from netledger.journal.stream import connect, ensure_stream
    from netledger.service.client import Client
    from netledger.service.service import CommandService

    server = EmbeddedNats(data_dir=tmp / "nats", port=free_port(), sync_interval="default")
    with r.timed("nats_start"):
        server.start(timeout=120)
    conn = svc = None
    try:
        conn = await connect(server.url, name="vlan-vm")
        await ensure_stream(conn)
        svc = CommandService(conn)
        await svc.start()
        client = Client(conn)
        nets: dict[str, dict[str, Any]] = {}
        with r.timed("log_setup"):
            for project, p in PROJECTS.items():
                res = await client.request(
                    "network.create",
                    {
                        "label": f"net-{project}",
                        "cidr": p["cidr"],
                        "mode": "vlan",
                        "vlan_start": p["vlan_start"],
                        "project": project,
                        "network_host": "h1",
                    },
                )
                nets[project] = res["networks"][0]
            allocs = {}
            for inst, project, host in INSTANCES:
                allocs[inst] = await client.request(
                    "fixed_ip.allocate", {"instance": inst, "project": project, "host": host}
                )
        r.info["networks"] = nets
        r.info["allocations"] = allocs
        bridges = {p: n["bridge"] for p, n in nets.items()}
        vlans = {p: n["vlan"] for p, n in nets.items()}

        async def executor_pass(host: str) -> Any:
            cfg = HostConfig(host=host, physical_interface=PHYS)
            return await run_executor(conn, cfg, Options(netns=HOSTS[host]), once=True)

        first: dict[str, Any] = {}
        for host in HOSTS:
            with r.timed(f"executor_first_{host}"):
                try:
                    rep = await executor_pass(host)
                    first[host] = {"changes": rep.changes, "conflicts": rep.conflicts}
                    r.check(f"executor_first_{host}", rep.changes > 0 and not rep.conflicts,
                            **first[host])  # fmt: skip
                except Exception as exc:
                    r.error(f"executor_first_{host}", exc)

        # Links: vlan<N> over eth1 with the network's VLAN id, enslaved into br<N>, both up.
        before = {}
        for host, ns in HOSTS.items():
            view = link_view(ipr_cls, ns)
            before[host] = view
            r.info[f"ip_d_link_{host}"] = ip_text(ns, "-d", "link", "show")
            for project in PROJECTS:
                vname, bname = f"vlan{vlans[project]}", bridges[project]
                v, b = view.get(vname), view.get(bname)
                ok = (
                    v is not None
                    and b is not None
                    and v["kind"] == "vlan"
                    and v["vlan_id"] == vlans[project]
                    and v["lower"] == PHYS
                    and v["master"] == bname
                    and v["up"]
                    and b["kind"] == "bridge"
                    and b["up"]
                )
                # The same facts as iproute2 prints them (an independent reading).
                text = ip_text(ns, "-d", "link", "show", "dev", vname)
                ok = ok and f"vlan protocol 802.1Q id {vlans[project]} " in text
                ok = ok and f"{vname}@{PHYS}:" in text and f"master {bname} " in text
                r.check(f"links_{host}_{project}", ok, vlan_link=v, bridge=b, ip_d_link=text)

        # Traffic: tagged across the "wire" within a VLAN; nothing across VLANs.
        with r.timed("plug_instances"):
            plug_instances(allocs, bridges)
        addr = {i: a["address"] for i, a in allocs.items()}
        with r.timed("traffic"):
            r.check("ping_alpha_h1_to_h2", ping(f"{PREFIX}i1", addr["i2"], 15), dst=addr["i2"])
            r.check("ping_beta_h1_to_h2", ping(f"{PREFIX}i3", addr["i4"], 15), dst=addr["i4"])
            gw = nets["alpha"]["gateway"]
            r.check("ping_alpha_h2_to_gateway_on_h1", ping(f"{PREFIX}i2", gw, 15), dst=gw)
            # Same subnet, other VLAN: only the 802.1Q separation can make this fail.
            ip_batch([f"addr add {INTRUDER}/24 dev eth0"], f"{PREFIX}i4")
            ip_batch([f"addr add {INTRUDER_PEER}/24 dev eth0"], f"{PREFIX}i3")
            positive = ping(f"{PREFIX}i3", INTRUDER, 15)  # beta -> beta: the address works
            leaked = ping(f"{PREFIX}i1", INTRUDER, 4)
            r.check("intruder_reachable_in_own_vlan", positive, dst=INTRUDER)
            r.check("no_traffic_across_vlans", not leaked, dst=INTRUDER)
        after_traffic = link_view(ipr_cls, HOSTS["h2"])
        rx = {p: (after_traffic.get(f"vlan{vlans[p]}") or {}).get("rx_packets") for p in PROJECTS}
        r.check("tagged_frames_received_on_h2", all((x or 0) > 0 for x in rx.values()), rx=rx)

        # Idempotence: a second pass on each host changes nothing, links keep their indexes.
        for host, ns in HOSTS.items():
            with r.timed(f"executor_second_{host}"):
                try:
                    rep = await executor_pass(host)
                    view = link_view(ipr_cls, ns)
                    same = {
                        k: (v["index"], v["kind"], v["master"], v["vlan_id"])
                        for k, v in view.items()
                        if k.startswith(("vlan", "br"))
                    } == {
                        k: (v["index"], v["kind"], v["master"], v["vlan_id"])
                        for k, v in before[host].items()
                        if k.startswith(("vlan", "br"))
                    }
                    r.check(f"executor_second_noop_{host}", rep.changes == 0 and same,
                            changes=rep.changes, links_unchanged=same)  # fmt: skip
                except Exception as exc:
                    r.error(f"executor_second_noop_{host}", exc)
    finally:
        if svc is not None:
            await svc.close()
        if conn is not None:
            await conn.close()
        server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--force", action="store_true", help="run the scenario without 8021q (debugging)"
    )
    args = ap.parse_args()
    r = Results()
    r.info["kernel"] = os.uname().release
    r.info["in_vm"] = os.environ.get("NETLEDGER_IN_VM") == "1"
    if os.geteuid() != 0:
        r.check("root", False, error="needs root (network namespaces)")
        r.dump(args.out)
        return 1
    with r.timed("import_pyroute2"):
        from pyroute2 import IPRoute
    cleanup()
    tmp = Path(tempfile.mkdtemp(prefix="nlv-"))
    try:
        try:
            check_kernel_vlan(r, IPRoute)
        except Exception as exc:
            r.error("kernel_8021q", exc)
        if r.checks["kernel_8021q"]["ok"] or args.force:
            try:
                with r.timed("build_hosts"):
                    build_hosts()
                with r.timed("scenario"):
                    asyncio.run(run_scenario(r, IPRoute, tmp))
            except Exception as exc:
                r.error("scenario", exc)
    finally:
        cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
        r.dump(args.out)
    return 0 if all(c["ok"] for c in r.checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
