"""What the sighting reporter reads of the kernel (executor/kernel.py ``read_bridges``,
``read_learned_macs``), in a namespace of the test's own: the bridges alone, by one dump the
kernel filters by kind, and the MACs learned on the ports of the bridges named by index."""

from __future__ import annotations

import pytest

from netledger.executor import nlencode
from netledger.executor.kernel import Kernel
from netledger.executor.model import OURS
from tests.executor.test_executor_lab import world as world

from .test_executor_lab import Lab, sh

pytestmark = pytest.mark.netns

LEARNED = "02:aa:bb:cc:dd:01"
STATIC = "02:aa:bb:cc:dd:02"


def test_a_kind_filtered_dump_asks_for_that_kind_only() -> None:
    body = nlencode.link_dump("bridge")
    assert body.startswith(nlencode.link_dump())
    assert b"bridge\0" in body


def test_bridges_alone_and_the_macs_learned_on_their_ports(world: Lab) -> None:
    ns = world.ns("sr")
    batch = "".join(
        [
            "link add brs0 type bridge\n",
            f"link set brs0 alias {OURS}n0 up\n",
            "link add brs1 type bridge\n",
            "link set brs1 up\n",
            "link add vxs0 type vxlan id 4242 dstport 4789\n",
            "link set vxs0 master brs0 up\n",
            "link add ds0 type vxlan id 4243 dstport 4789\n",
            "link set ds0 master brs1 up\n",
            "link add dx0 type vxlan id 4244 dstport 4789\n",
        ]
    )
    sh("ip", "-n", ns, "-batch", "-", input=batch)
    # An entry the bridge learned (dynamic) and a static one on the port of brs0; one learned
    # on the port of the other bridge.
    sh("bridge", "-n", ns, "fdb", "add", LEARNED, "dev", "vxs0", "master", "dynamic")
    sh("bridge", "-n", ns, "fdb", "add", STATIC, "dev", "vxs0", "master", "static")
    sh("bridge", "-n", ns, "fdb", "add", "02:aa:bb:cc:dd:03", "dev", "ds0", "master", "dynamic")
    with Kernel(ns) as k:
        bridges = k.read_bridges()
        assert sorted((x.name, x.alias) for x in bridges) == [
            ("brs0", f"{OURS}n0"),
            ("brs1", None),
        ]
        index = {x.ifindex for x in bridges if x.name == "brs0"}
        assert k.read_learned_macs(index) == {LEARNED}
        assert k.read_learned_macs(set()) == set()
