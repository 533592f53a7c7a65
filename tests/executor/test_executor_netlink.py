"""The raw rtnetlink socket (executor/netlink.py) against the real kernel: dumps and acked
batches in a namespace of the test's own, and a reply that never comes fails the call with a
stable error instead of blocking the executor forever."""

from __future__ import annotations

import socket

import pytest
from pyroute2.netlink.rtnl import RTM_GETLINK
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from netledger.executor import nlencode
from netledger.executor.errors import KernelNoAnswer, NamespaceNotFound
from netledger.executor.netlink import RtSocket
from tests.executor.test_executor_lab import world as world

from .test_executor_lab import Lab, sh

pytestmark = pytest.mark.netns


def test_a_dump_in_a_namespace_sees_only_that_namespace(world: Lab) -> None:
    ns = world.ns("nl")
    with RtSocket(ns) as s:
        names = {m.get_attr("IFLA_IFNAME") for m in s.dump(ifinfmsg(), RTM_GETLINK)}
    assert names == {"lo"}


def test_a_missing_namespace_is_an_error_not_a_new_namespace() -> None:
    with pytest.raises(NamespaceNotFound):
        RtSocket("nlx-does-not-exist")


def test_no_answer_is_a_clear_error_not_a_hang(world: Lab) -> None:
    ns = world.ns("nl")
    s = RtSocket(ns, timeout=0.3)
    # Swap the kernel for a peer that reads the request and never answers.
    real = s.sock
    mine, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    mine.settimeout(0.3)
    s.sock = mine
    try:
        with pytest.raises(KernelNoAnswer) as err:
            list(s.dump(ifinfmsg(), RTM_GETLINK))
        assert err.value.code == "kernel_no_answer"
        assert ns in err.value.message
        # The real socket still answers afterwards (replies are matched by sequence number).
        s.sock = real
        assert any(m.get_attr("IFLA_IFNAME") == "lo" for m in s.dump(ifinfmsg(), RTM_GETLINK))
    finally:
        mine.close()
        peer.close()
        real.close()


def test_a_dump_abandoned_half_way_does_not_block_the_next(world: Lab) -> None:
    ns = world.ns("nl")
    sh(
        "ip",
        "-n",
        ns,
        "-batch",
        "-",
        input="".join(f"link add b{i} type bridge\n" for i in range(300)),
    )
    with RtSocket(ns) as s:
        first = s.dump_raw(nlencode.link_dump(), nlencode.RTM_GETLINK)
        next(first)
        first.close()  # the reader stops after one message (an exception in its loop, say)
        assert sum(1 for _ in s.dump_raw(nlencode.link_dump(), nlencode.RTM_GETLINK)) == 301
        # pyroute2's dump is read whole before it is handed out (so that one marked
        # interrupted is dumped again: test_dump_interrupted.py)
        assert len(s.dump(ifinfmsg(), RTM_GETLINK)) == 301


def test_a_batch_reports_each_failure_where_it_happened(world: Lab) -> None:
    """Only the last request of a send asks for an ack; the kernel still reports every
    failure, and each lands on its own request — in the middle of a send, at its end, and
    in a later send — while the requests around it take effect."""
    from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_NEWLINK

    from netledger.executor.netlink import Request

    ns = world.ns("nl")
    bridge = nlencode.linkinfo("bridge", nlencode.bridge_data())
    create = 0x400 | 0x200  # NLM_F_CREATE | NLM_F_EXCL

    def new(i: int, name: str) -> Request:
        return Request(nlencode.new_link(i, name, info=bridge), RTM_NEWLINK, create)

    missing = Request(nlencode.del_link(9999), RTM_DELLINK, 0)
    tolerated = Request(nlencode.del_link(9998), RTM_DELLINK, 0, ok=(19,))  # ENODEV
    reqs = [
        new(100, "nlb0"),
        missing,  # a failure in the middle of the first send
        new(101, "nlb1"),
        tolerated,
        new(100, "nlb0"),  # EEXIST: the last of the first send
        new(102, "nlb2"),
        missing,  # in the second send
        new(103, "nlb3"),
    ]
    with RtSocket(ns) as s:
        codes = s.batch(reqs, chunk_size=5)
        names = {m.get_attr("IFLA_IFNAME") for m in s.dump(ifinfmsg(), RTM_GETLINK)}
        # The socket is in step afterwards: a batch of successes only reads back clean.
        assert s.batch([new(104, "nlb4")], chunk_size=5) == [0]
    assert codes == [0, 19, 0, 0, 17, 0, 19, 0]
    assert names == {"lo", "nlb0", "nlb1", "nlb2", "nlb3"}
    assert sh("ip", "-n", ns, "link", "show", "nlb4").returncode == 0
