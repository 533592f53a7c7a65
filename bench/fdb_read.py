"""Diagnostic, by hand (not in ``bench/run``): the CPU of the sighting reporter's FDB read.

    .venv/bin/python bench/fdb_read.py [--networks 1200] [--rounds 9]

In a namespace holding what an executor serving ``--networks`` VXLAN networks holds
(bench/sweep_dump.py ``populate``: each network's bridge and VXLAN link, a gateway address, a
flood entry toward a peer), ``Kernel.read_learned_macs`` over every bridge — what each poll of
the sighting reporter reads (executor/sightings.py) — against the same read decoding every
entry before looking at it (the way before Dec 7, twelfth session), interleaved; the thread's
CPU and wall per read, medians over the rounds. Both must give the same MACs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from kernel import namespace
from sweep_dump import populate

from netledger.executor import nlencode, nlparse
from netledger.executor.kernel import (
    AF_BRIDGE,
    FLOOD_MAC,
    NTF_SELF,
    NUD_NOARP,
    NUD_PERMANENT,
    RTM_GETNEIGH,
    Kernel,
)


def decoding_every_entry(k: Kernel, index: set[int]) -> set[str]:
    out: set[str] = set()
    for d, a, b in k.sock.dump_raw(nlencode.neigh_dump(AF_BRIDGE), RTM_GETNEIGH):
        n = nlparse.neigh(d, a, b)
        if n.state & (NUD_PERMANENT | NUD_NOARP) or n.flags & NTF_SELF:
            continue
        if n.master in index and n.lladdr and n.lladdr != FLOOD_MAC:
            out.add(n.lladdr.lower())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--networks", type=int, default=1200)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, namespace("fdb") as ns:
        populate(ns, args.networks, Path(tmp))
        k = Kernel(ns)
        index = {x.ifindex for x in k.read_bridges()}
        entries = sum(1 for _ in k.sock.dump_raw(nlencode.neigh_dump(AF_BRIDGE), RTM_GETNEIGH))
        ways: dict[str, Callable[[], set[str]]] = {
            "every entry decoded": lambda: decoding_every_entry(k, index),
            "read_learned_macs": lambda: k.read_learned_macs(index),
        }
        took: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
        for r in range(args.rounds):
            for name, way in list(ways.items())[:: 1 if r % 2 else -1]:
                c, t = time.thread_time(), time.monotonic()
                way()
                took[name].append(((time.thread_time() - c) * 1000, (time.monotonic() - t) * 1000))
        assert ways["every entry decoded"]() == ways["read_learned_macs"]()
        print(f"{args.networks:,} networks: {len(index):,} bridges, {entries:,} FDB entries")
        for name, v in took.items():
            cpu = statistics.median(x[0] for x in v)
            wall = statistics.median(x[1] for x in v)
            print(
                f"  {name}: CPU {cpu:.1f} ms (min {min(x[0] for x in v):.1f}), wall {wall:.1f} ms"
            )


if __name__ == "__main__":
    main()
