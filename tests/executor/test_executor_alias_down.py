"""An incremental pass deletes a link only if it is still ours: the kernel's notifications say
nothing of an alias changed on a link that is down (``netdev_state_change`` is a no-op for
it), so the cache an incremental pass reads kept calling a link ours after an operator
re-labelled it, and the pass deleted it. It now reads the links anew before a delete. Found by
review (rev2)."""

from __future__ import annotations

import time

from netledger.executor.cache import KernelCache
from netledger.executor.converge import Converger
from netledger.executor.incremental import Scope
from netledger.executor.kernel import Kernel, OpResult
from netledger.executor.model import HostDesired
from tests.executor.test_executor_index_race import ns as ns
from tests.executor.test_executor_index_race import sh


def _our_down_bridge(ns: str) -> KernelCache:
    """A bridge of network 7's made by us (its alias), down; the cache of the namespace."""
    sh("ip", "-n", ns, "link", "add", "br100", "type", "bridge")
    sh("ip", "-n", ns, "link", "set", "br100", "alias", "netledger:7")
    cache = KernelCache(ns, live=True)
    cache.start()
    return cache


def _incremental_pass_for_7(ns: str, cache: KernelCache) -> list[OpResult]:
    """An incremental pass for network 7, which wants br100 no more."""
    with Kernel(ns) as k:
        scope = Scope(frozenset({"7"}), frozenset({"br100"}), frozenset(), frozenset())
        results, _, _ = Converger(k, cache).converge(HostDesired(), full=False, scope=scope)
    return results


def test_a_down_link_relabelled_meanwhile_is_not_deleted(ns: str) -> None:
    cache = _our_down_bridge(ns)
    try:
        # an operator takes the (down) bridge over
        sh("ip", "-n", ns, "link", "set", "br100", "alias", "operator-owned")
        time.sleep(0.2)
        cache.settle()
        results = _incremental_pass_for_7(ns, cache)
        assert results == [], results
        assert "br100" in sh("ip", "-n", ns, "-o", "link")
    finally:
        cache.close()


def test_a_link_still_ours_is_deleted_by_an_incremental_pass(ns: str) -> None:
    cache = _our_down_bridge(ns)
    try:
        results = _incremental_pass_for_7(ns, cache)
        assert [type(r.op).__name__ for r in results] == ["DeleteLink"] and results[0].ok
        assert "br100" not in sh("ip", "-n", ns, "-o", "link")
    finally:
        cache.close()
