"""Measure applying N networks (bridge + VXLAN link + gateway address) in fresh namespaces.

    python -m netledger.executor.measure [N]

Prints the executor's first apply (read, diff, apply, read back), ``ip -batch`` doing the same
in another fresh namespace in the same run, and a no-op reconcile (read, diff). Root only. Links
are deleted in batches before the namespaces go (deleting a namespace full of links blocks the
kernel for a long time).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import uuid

from .diff import diff
from .kernel import Kernel
from .model import AddrSpec, HostDesired, LinkSpec


def desired(n: int) -> HostDesired:
    links = []
    addrs = []
    for i in range(n):
        vni = 10000 + i
        br = f"brvx{vni}"
        links.append(LinkSpec(br, "bridge", str(i + 1)))
        links.append(
            LinkSpec(
                f"vx{vni}",
                "vxlan",
                str(i + 1),
                master=br,
                vni=vni,
                parent="eth0",
                local="192.168.99.1",
                port=4789,
            )
        )
        addrs.append(
            AddrSpec(
                br, f"10.{i // 256}.{i % 256}.1/24", f"10.{i // 256}.{i % 256}.255", str(i + 1)
            )
        )
    return HostDesired(links=tuple(sorted(links)), addresses=tuple(sorted(addrs)))


def _ip(*args: str, stdin: str | None = None) -> None:
    subprocess.run(["ip", *args], input=stdin, text=True, check=True, capture_output=True)


def _fresh(name: str) -> None:
    _ip("netns", "add", name)
    _ip("-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
    _ip("-n", name, "link", "set", "eth0", "up")
    _ip("-n", name, "addr", "add", "192.168.99.1/24", "dev", "eth0")


def _teardown(name: str, d: HostDesired) -> None:
    names = [link.name for link in d.links if link.kind == "vxlan"] + [
        link.name for link in d.links if link.kind == "bridge"
    ]
    for start in range(0, len(names), 500):
        cmds = "".join(f"link del {x}\n" for x in names[start : start + 500])
        subprocess.run(
            ["ip", "-n", name, "-force", "-batch", "-"],
            input=cmds,
            text=True,
            capture_output=True,
            check=False,
        )
    _ip("netns", "del", name)


def main(n: int = 1000) -> None:
    d = desired(n)
    tag = uuid.uuid4().hex[:5]
    ns_ex, ns_ip = f"nlx-m{tag}-ex", f"nlx-m{tag}-ip"
    _fresh(ns_ex)
    _fresh(ns_ip)
    try:
        with Kernel(ns_ex) as k:
            t0 = time.perf_counter()
            links = k.read_links()
            plan = diff(d, k.read(links))
            results = k.apply(plan.ops, links)
            after = k.read()
            t1 = time.perf_counter()
            assert all(r.ok for r in results), [r for r in results if not r.ok][:3]
            assert not diff(d, after).ops
            t2 = time.perf_counter()
            noop = diff(d, k.read())
            t3 = time.perf_counter()
            assert not noop.ops
        cmds = []
        for spec in d.links:
            if spec.kind == "bridge":
                cmds.append(f"link add {spec.name} up type bridge forward_delay 0 stp_state 0")
        for spec in d.links:
            if spec.kind == "vxlan":
                cmds.append(
                    f"link add {spec.name} up master brvx{spec.vni} type vxlan id {spec.vni}"
                    f" local 192.168.99.1 dev eth0 dstport 4789"
                )
                cmds.append(f"link set {spec.name} alias {spec.alias}")
        for spec in d.links:
            if spec.kind == "bridge":
                cmds.append(f"link set {spec.name} alias {spec.alias}")
        for a in d.addresses:
            cmds.append(f"addr add {a.address} broadcast {a.broadcast} dev {a.interface}")
        with tempfile.NamedTemporaryFile("w", suffix=".batch") as f:
            f.write("\n".join(cmds) + "\n")
            f.flush()
            t4 = time.perf_counter()
            _ip("-n", ns_ip, "-batch", f.name)
            t5 = time.perf_counter()
        print(f"networks: {n} ({len(plan.ops)} operations, {2 * n} links)")
        print(f"executor first apply (read + diff + apply + read back): {t1 - t0:.2f} s")
        print(f"ip -batch, same links/aliases/addresses:               {t5 - t4:.2f} s")
        print(f"ratio: {(t1 - t0) / (t5 - t4):.1f}x")
        print(f"no-op reconcile (read + diff):                          {t3 - t2:.2f} s")
    finally:
        _teardown(ns_ex, d)
        _teardown(ns_ip, d)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
