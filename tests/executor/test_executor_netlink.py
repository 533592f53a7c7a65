"""The raw rtnetlink socket (executor/netlink.py) against the real kernel: dumps and acked
batches in a namespace of the test's own, and a reply that never comes fails the call with a
stable error instead of blocking the executor forever."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from pyroute2.netlink.rtnl import RTM_GETLINK
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from netledger.executor.errors import KernelNoAnswer, NamespaceNotFound
from netledger.executor.netlink import RtSocket

from .test_executor_lab import Lab, lab, sh

pytestmark = pytest.mark.netns


@pytest.fixture
def world() -> Iterator[Lab]:
    with lab() as the_lab:
        yield the_lab


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
        first = s.dump(ifinfmsg(), RTM_GETLINK)
        next(first)
        first.close()  # the reader stops after one message (an exception in its loop, say)
        assert len(list(s.dump(ifinfmsg(), RTM_GETLINK))) == 301
