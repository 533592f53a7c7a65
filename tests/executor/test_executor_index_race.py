"""A link another process creates while the executor applies a pass (a hypervisor's tap
device, a guest autostarting) must stay untouched: the executor names the links it creates by
an index of its own choosing in the batch's later requests (alias, addresses, ports), and that
index used to be the next one the kernel would hand out — the other link took it, the executor's
create failed, and its alias, ``addr_gen_mode`` and gateway address landed on the foreign link,
which the next pass then deleted as a stale link of ours. Found by review (rev2)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from netledger.executor.cache import KernelCache
from netledger.executor.converge import Converger
from netledger.executor.kernel import OWN_INDEX_FLOOR, Kernel, own_index_below
from netledger.executor.model import AddrSpec, HostDesired, LinkSpec
from tests.conftest import needs_root


def sh(*a: str, check: bool = True) -> str:
    return subprocess.run(a, check=check, capture_output=True, text=True).stdout


@pytest.fixture
def ns() -> Iterator[str]:
    needs_root()
    name = f"nl-race-{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", name)
    try:
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


def _racing(kernel: Kernel, ns: str, *foreign: str) -> None:
    """Before the first batch reaches the kernel, another process creates ``foreign``."""
    real = kernel.apply
    done: list[bool] = []

    def apply(ops: Any, links: Any) -> Any:
        if not done:
            done.append(True)
            sh("ip", "-n", ns, "link", "add", *foreign)
        return real(ops, links)

    kernel.apply = apply  # type: ignore[method-assign]


def test_indexes_of_own_links_count_down_from_the_top() -> None:
    top = own_index_below([])
    assert top == 2**31 - 1 > OWN_INDEX_FLOOR  # the kernel takes any index up to INT_MAX
    assert own_index_below([1, 2, 40]) == top  # the kernel's own: ignored
    assert own_index_below([1, top, top - 1]) == top - 2


def test_a_link_created_meanwhile_is_not_marked_ours_nor_deleted(ns: str) -> None:
    kernel = Kernel(ns)
    cache = KernelCache(ns, live=True)
    cache.start()
    _racing(kernel, ns, "tapvm1", "type", "veth", "peer", "name", "tapvm1p")
    try:
        conv = Converger(kernel, cache)
        desired = HostDesired(
            links=(LinkSpec("br100", "bridge", "7"),),
            addresses=(AddrSpec("br100", "10.7.0.1/24", "10.7.0.255", "7"),),
        )
        results, conflicts, _ = conv.converge(desired, full=True)
        assert all(r.ok for r in results), results
        # (its alias, set while it was down, is not notified: a conflict naming a link the
        # pass created makes it read the links anew — tests/executor/test_converge_created_link)
        assert conflicts == [], conflicts
        again, conflicts, _ = conv.converge(desired, full=True)  # the periodic full pass
        assert again == [] and conflicts == [], (again, conflicts)
        for foreign in ("tapvm1", "tapvm1p"):
            shown = sh("ip", "-n", ns, "-d", "-o", "addr", "show", "dev", foreign)
            assert "netledger:" not in sh("ip", "-n", ns, "-d", "-o", "link", "show", foreign)
            assert "10.7.0.1" not in shown, shown
        assert "10.7.0.1/24" in sh("ip", "-n", ns, "-o", "addr", "show", "dev", "br100")
    finally:
        cache.close()
        kernel.close()


def test_a_foreign_link_taking_our_name_meanwhile_is_a_conflict_not_ours(ns: str) -> None:
    kernel = Kernel(ns)
    cache = KernelCache(ns, live=True)
    cache.start()
    _racing(kernel, ns, "br100", "type", "bridge")
    try:
        conv = Converger(kernel, cache)
        desired = HostDesired(links=(LinkSpec("br100", "bridge", "7"),))
        conv.converge(desired, full=True)  # its create fails: the name is taken
        _, conflicts, _ = conv.converge(desired, full=True)
        assert "netledger:" not in sh("ip", "-n", ns, "-d", "-o", "link", "show", "br100")
        assert any("br100" in str(c) for c in conflicts), conflicts
    finally:
        cache.close()
        kernel.close()
