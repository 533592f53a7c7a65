"""The peer: OVN northd's IPAM next to netledger, one allocation at a time.

OVN (Debian ``ovn-central``): an NB and an SB ovsdb-server and ovn-northd, on unix sockets in a
temporary folder (not the system services). One logical switch with
``other_config:subnet=10.0.0.0/16``; E ports with ``addresses=dynamic`` are added in bulk, then
M ports one at a time — ``ovn-nbctl --wait=sb lsp-add ... -- lsp-set-addresses ... dynamic``
followed by reading ``dynamic_addresses`` back — for E = 1,000 and 5,000. netledger does the same
M one-at-a-time allocations (client waits for the answer, which carries the address) in a /16
with E addresses already in use. The OVN client is the ``ovn-nbctl`` binary, a process per call
as its users script it; its own floor (a read-only call) is reported beside it.

Both sides run the whole time and are measured the same way: at each size ROUNDS runs of M on
each side, interleaved (OVN, netledger, OVN, ...), each after the machine is idle again
(``settle``), medians reported. **The peer figure** (the netledger row's ratio) is netledger's
rate over OVN's ``--wait=sb`` call alone — generous to OVN: its read-back of the address, a
second process, is left out; the add + read back rate is shown on its own row.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from alloc import alloc_rate
from benchlib import Row, Rss, Stack, scaled, settle, stack, vmhwm_mb
from scale import fill_network

from netledger.service.client import Client

NAME = "peer_ovn"
TITLE = "Peer: OVN northd IPAM vs netledger, one allocation at a time"
SCHEMAS = Path("/usr/share/ovn")


#: runs of m allocations at each size, on each side, interleaved (the medians are reported):
#: OVN's m allocations take seconds, ours a tenth of one, so one run is at the mercy of a
#: moment's noise (65x-107x over the runs of one week when netledger's was one run)
ROUNDS = 3


def ovn_available() -> bool:
    return all(shutil.which(b) for b in ("ovn-northd", "ovsdb-server", "ovsdb-tool", "ovn-nbctl"))


class Ovn:
    """NB + SB ovsdb-server and ovn-northd as our own children, on unix sockets in ``d``."""

    def __init__(self, d: Path) -> None:
        self.d = d
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {
            **os.environ,
            **{f"{p}_{k}DIR": str(d) for p in ("OVS", "OVN") for k in ("RUN", "LOG", "DB")},
        }
        self.nb = f"unix:{d}/nb.sock"
        self.wait_call_s = 0.0

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.d / f"{name}.out", "wb")
        self.procs[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.d,
        )
        log.close()

    def start(self) -> None:
        for db in ("nb", "sb"):
            subprocess.run(
                [
                    "ovsdb-tool",
                    "create",
                    str(self.d / f"{db}.db"),
                    str(SCHEMAS / f"ovn-{db}.ovsschema"),
                ],
                check=True,
                env=self.env,
            )
            self._spawn(
                f"{db}-ovsdb",
                [
                    "ovsdb-server",
                    str(self.d / f"{db}.db"),
                    f"--remote=punix:{self.d}/{db}.sock",
                    f"--unixctl={self.d}/{db}.ctl",
                    f"--log-file={self.d}/{db}.log",
                    "-vconsole:off",
                    f"--pidfile={self.d}/{db}.pid",
                    "--no-chdir",
                ],
            )
        self._wait_socket("nb.sock")
        self._wait_socket("sb.sock")
        self._spawn(
            "northd",
            [
                "ovn-northd",
                f"--ovnnb-db={self.nb}",
                f"--ovnsb-db=unix:{self.d}/sb.sock",
                f"--unixctl={self.d}/northd.ctl",
                f"--log-file={self.d}/northd.log",
                "-vconsole:off",
                f"--pidfile={self.d}/northd.pid",
                "--no-chdir",
            ],
        )
        self.nbctl(
            "--wait=sb",
            "ls-add",
            "sw0",
            "--",
            "set",
            "logical_switch",
            "sw0",
            "other_config:subnet=10.0.0.0/16",
        )

    def _wait_socket(self, name: str) -> None:
        deadline = time.monotonic() + 20
        while not (self.d / name).exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"ovsdb-server did not create {name}")
            time.sleep(0.02)

    def nbctl(self, *args: str) -> str:
        p = subprocess.run(
            ["ovn-nbctl", f"--db={self.nb}", "--timeout=120", *args],
            capture_output=True,
            text=True,
            env=self.env,
        )
        if p.returncode != 0:
            raise RuntimeError(f"ovn-nbctl {' '.join(args[:4])}...: {p.stderr.strip()}")
        return p.stdout.strip()

    def add_bulk(self, names: list[str], chunk: int = 500) -> None:
        for i in range(0, len(names), chunk):
            cmds: list[str] = ["--wait=sb"]
            for nm in names[i : i + chunk]:
                cmds += ["--", "lsp-add", "sw0", nm, "--", "lsp-set-addresses", nm, "dynamic"]
            self.nbctl(*cmds)

    def add_one(self, nm: str) -> str:
        """One port, waiting until northd has given it an address; returns that address."""
        t = time.perf_counter()
        self.nbctl("--wait=sb", "lsp-add", "sw0", nm, "--", "lsp-set-addresses", nm, "dynamic")
        self.wait_call_s += time.perf_counter() - t
        while True:
            got = self.nbctl("--bare", "get", "logical_switch_port", nm, "dynamic_addresses").strip(
                '"'
            )
            if got:
                return got
            time.sleep(0.001)

    def rate_one_at_a_time(self, prefix: str, m: int) -> tuple[float, float]:
        """(allocations/s including the read-back, allocations/s of the ``--wait=sb`` calls
        alone: the generous figure for OVN, without its second client process)."""
        self.wait_call_s = 0.0
        t = time.perf_counter()
        for i in range(m):
            self.add_one(f"{prefix}{i}")
        return m / (time.perf_counter() - t), m / self.wait_call_s

    def noop_rate(self, m: int) -> float:
        t = time.perf_counter()
        for _ in range(m):
            self.nbctl("--bare", "get", "logical_switch", "sw0", "name")
        return m / (time.perf_counter() - t)

    def rss_mb(self) -> float:
        return sum(vmhwm_mb(p.pid) for p in self.procs.values())

    def stop(self) -> None:
        for p in reversed(list(self.procs.values())):
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()


@dataclass
class Sizes:
    """Each side's runs of m one-at-a-time allocations at one size (ROUNDS each, interleaved)."""

    ovn_full: list[float] = field(default_factory=list)  # add + read back
    ovn_wait: list[float] = field(default_factory=list)  # the --wait=sb call alone
    ours: list[float] = field(default_factory=list)


async def netledger_networks(st: Stack, existing: list[int]) -> dict[int, str]:
    """A /16 per size, ``e`` addresses in use in it (appended while the service is stopped)."""
    assert st.conn is not None
    admin = Client(st.conn)
    nets = {}
    for k, e in enumerate(existing):
        [net] = await admin.create_networks(
            label=f"e{e}",
            cidr=f"10.{20 + k}.0.0/16",
            network_size=65536,
            mode="flat",
            bridge=f"br{k}",
        )
        nets[e] = net["id"]
    await st.stop_service()
    for k, e in enumerate(existing):
        await fill_network(st.conn, nets[e], f"10.{20 + k}", e, 0)
    await st.start_service()
    return nets


async def both_sides(
    existing: list[int], m: int, rss: Rss
) -> tuple[dict[int, Sizes], float, float]:
    """OVN and netledger side by side, both running the whole time: at each size ROUNDS runs of
    m allocations one at a time on each side, interleaved (OVN, netledger, OVN, ...), each after
    the machine is idle again; every measured address stays (a size grows by m a run, alike on
    both sides). Returns the runs per size, the OVN client's floor and OVN's peak RSS."""
    with tempfile.TemporaryDirectory(prefix="nl-bench-ovn-") as d:
        ovn = Ovn(Path(d))
        try:
            await asyncio.to_thread(ovn.start)
            async with stack(NAME) as st:
                nets = await netledger_networks(st, existing)
                runs: dict[int, Sizes] = {}
                have = 0
                for e in existing:
                    await asyncio.to_thread(ovn.add_bulk, [f"f{i}" for i in range(have, e)])
                    await asyncio.to_thread(ovn.add_one, f"w{e}")  # warm-up, both sides
                    await alloc_rate(st.url, 1, [nets[e]], 1)
                    got = runs[e] = Sizes()
                    for r in range(ROUNDS):
                        await asyncio.to_thread(settle)
                        full, wait = await asyncio.to_thread(
                            ovn.rate_one_at_a_time, f"m{e}-{r}-", m
                        )
                        got.ovn_full.append(full)
                        got.ovn_wait.append(wait)
                        await asyncio.to_thread(settle)
                        got.ours.append(await alloc_rate(st.url, 1, [nets[e]], m))
                    have = e + ROUNDS * m + 1  # the next size starts from here
                rss.note("command service", st.service_rss(), NAME)
            noop = await asyncio.to_thread(ovn.noop_rate, m)
            return runs, noop, ovn.rss_mb()
        finally:
            await asyncio.to_thread(ovn.stop)


def _runs(xs: list[float]) -> str:
    return ", ".join(f"{x:,.1f}" if x < 100 else f"{x:,.0f}" for x in xs)


async def run(size: float, rss: Rss) -> list[Row]:
    if not ovn_available():
        raise RuntimeError(
            "OVN is not installed: apt-get install -y ovn-central (see bench/README.md)"
        )
    existing = [scaled(1000, size, 20), scaled(5000, size, 50)]
    m = scaled(200, size, 5)
    runs, noop, ovn_rss = await both_sides(existing, m, rss)
    how = f"median of {ROUNDS} runs of {m}, interleaved with the other side's"
    rows = [
        Row(
            NAME,
            "ovn-nbctl read-only call (OVN client floor)",
            noop,
            "calls/s",
            note="a process per call",
        )
    ]
    for e in existing:
        got = runs[e]
        full, wait, ours = (
            statistics.median(got.ovn_full),
            statistics.median(got.ovn_wait),
            statistics.median(got.ours),
        )
        rows += [
            Row(
                NAME,
                f"OVN northd, {e:,} ports exist, {m} one at a time",
                full,
                "alloc/s",
                full / noop,
                "ovn-nbctl floor",
                f"add + read back of the address; {how} ({_runs(got.ovn_full)})",
            ),
            Row(
                NAME,
                f"OVN northd, {e:,} ports, --wait=sb call only",
                wait,
                "alloc/s",
                wait / noop,
                "ovn-nbctl floor",
                f"generous to OVN (no read-back); the peer figure's baseline; {how}"
                f" ({_runs(got.ovn_wait)})",
            ),
            Row(
                NAME,
                f"netledger, {e:,} in use, {m} one at a time",
                ours,
                "alloc/s",
                ours / wait,
                "OVN --wait=sb only",
                f"the peer figure: x OVN's --wait=sb call alone (the address not read back);"
                f" {how} ({_runs(got.ours)})",
            ),
        ]
    rows.append(Row(NAME, "OVN nb+sb ovsdb-server + northd peak RSS", ovn_rss, "MB"))
    return rows


if __name__ == "__main__":
    import sys

    import runner

    runner.main(["--only", NAME, *sys.argv[1:]])
