"""Review h120 of the sighting reporter's one filtered dump (executor/kernel.py
``read_bridges``, 8d0492b): with many bridges the kernel's answer comes in many parts
(NLM_F_MULTI, many receives until NLMSG_DONE), and every bridge is in it — ours and foreign,
none of the VXLAN links beside them; the MACs learned on their ports are found by the indexes
of that same read. In a namespace of the test's own."""

from __future__ import annotations

import pytest

from netledger.executor.kernel import Kernel
from netledger.executor.model import OURS, is_ours
from tests.executor.test_executor_lab import world as world

from .test_executor_lab import Lab, sh

pytestmark = pytest.mark.netns

#: bridges of each kind: their dump is far larger than one receive (a bridge's message is
#: ~2 KB, a dump's part at most a few pages)
BRIDGES = 120


def test_a_dump_of_many_bridges_in_many_parts_holds_each_once(world: Lab) -> None:
    ns = world.ns("sm")
    lines = []
    for i in range(BRIDGES):
        lines += [
            f"link add bo{i} type bridge\n",
            f"link set bo{i} alias {OURS}n{i} up\n",
            f"link add vo{i} type vxlan id {1000 + i} dstport 4789\n",
            f"link set vo{i} master bo{i} up\n",
            f"link add bf{i} type bridge\n",
            f"link add vf{i} type vxlan id {5000 + i} dstport 4789\n",
        ]
    sh("ip", "-n", ns, "-batch", "-", input="".join(lines))
    last = BRIDGES - 1
    sh("bridge", "-n", ns, "fdb", "add", "02:aa:bb:cc:00:01", "dev", "vo0", "master", "dynamic")
    sh("bridge", "-n", ns, "fdb", "add", "02:aa:bb:cc:00:02", "dev", f"vo{last}", "master",
       "dynamic")  # fmt: skip
    with Kernel(ns) as k:
        bridges = k.read_bridges()
        names = [x.name for x in bridges]
        assert len(names) == len(set(names)) == 2 * BRIDGES
        assert {x.kind for x in bridges} == {"bridge"}
        ours = {x.name: x.ifindex for x in bridges if is_ours(x.alias)}
        assert sorted(ours) == sorted(f"bo{i}" for i in range(BRIDGES))
        assert k.read_learned_macs({ours["bo0"], ours[f"bo{last}"]}) == {
            "02:aa:bb:cc:00:01",
            "02:aa:bb:cc:00:02",
        }
        assert k.read_learned_macs({ours["bo1"]}) == set()
