"""Review hrev17: an IPv6 VTEP announced in another notation than the kernel's.

A ``HostAnnounced`` written before ``--vtep-address`` was checked and normalized (the option
type ``IP_ADDRESS``) may hold any text netaddr reads as IPv6 (``FD00::2``, ``fd00:0::2``):
``HostBook.vteps`` lets it through (it is an address), the peers' flood entries toward it are
desired in that text, and the kernel reports them in its own (``fd00::2``). The diff then finds
the entry it has stale and the one it wants missing, at every pass: delete, add, delete...
"""

from __future__ import annotations

import pytest

from netledger.executor.desired import HostConfig, build
from netledger.executor.diff import diff
from netledger.executor.model import DeleteFdb, HostActual

from .test_executor_desired import alloc, ann, book_for, fold, network


@pytest.mark.parametrize("vtep", ["FD00::2", "fd00:0::2", "fd00::0002"])
def test_a_vtep_in_another_notation_does_not_make_the_flood_entry_stale(vtep: str) -> None:
    st, an = fold(
        network("1", "10.0.1.0/24", "vxlan", vni=5001, bridge="brvx5001", network_host="c1"),
        alloc("1", "10.0.1.2", "a", "c1"),
        alloc("1", "10.0.1.3", "b", "c2"),
        ann("c1", "fd00::1"),
        ann("c2", vtep),
    )
    cfg = HostConfig(host="c1", physical_interface="eth0", vtep_address="fd00::1")
    desired = build(st, book_for("c1", an), cfg)
    # what the kernel reports for the entry the executor added toward c2 (inet_ntop's text)
    actual = HostActual(fdb=(("vx5001", "fd00::2"),))
    stale = [op for op in diff(desired, actual).ops if isinstance(op, DeleteFdb)]
    assert stale == [], f"the flood entry toward {vtep} is removed (and added again) every pass"
    assert [f.dst for f in desired.fdb] == ["fd00::2"]
