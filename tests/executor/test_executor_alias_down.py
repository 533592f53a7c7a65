"""An incremental pass deletes a link only if it is still ours: the kernel's notifications say
nothing of an alias changed on a link that is down (``netdev_state_change`` is a no-op for
it), so the cache an incremental pass reads kept calling a link ours after an operator
re-labelled it, and the pass deleted it. It now reads the links anew before a delete. Found by
review (rev2)."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from netledger.executor.cache import KernelCache
from netledger.executor.converge import Converger
from netledger.executor.incremental import Scope
from netledger.executor.kernel import Kernel
from netledger.executor.model import HostDesired
from tests.conftest import needs_root


def sh(*a: str) -> str:
    return subprocess.run(a, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def ns() -> Iterator[str]:
    needs_root()
    name = f"nl-alias-{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", name)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_a_down_link_relabelled_meanwhile_is_not_deleted(ns: str) -> None:
    sh("ip", "-n", ns, "link", "add", "br100", "type", "bridge")
    sh("ip", "-n", ns, "link", "set", "br100", "alias", "netledger:7")
    cache = KernelCache(ns, live=True)
    cache.start()
    try:
        # an operator takes the (down) bridge over
        sh("ip", "-n", ns, "link", "set", "br100", "alias", "operator-owned")
        time.sleep(0.2)
        cache.settle()
        with Kernel(ns) as k:
            conv = Converger(k, cache)
            # an incremental pass for network 7, which wants br100 no more
            scope = Scope(frozenset({"7"}), frozenset({"br100"}), frozenset(), frozenset())
            results, _, _ = conv.converge(HostDesired(), full=False, scope=scope)
        assert results == [], results
        assert "br100" in sh("ip", "-n", ns, "-o", "link")
    finally:
        cache.close()


def test_a_link_still_ours_is_deleted_by_an_incremental_pass(ns: str) -> None:
    sh("ip", "-n", ns, "link", "add", "br100", "type", "bridge")
    sh("ip", "-n", ns, "link", "set", "br100", "alias", "netledger:7")
    cache = KernelCache(ns, live=True)
    cache.start()
    try:
        with Kernel(ns) as k:
            conv = Converger(k, cache)
            scope = Scope(frozenset({"7"}), frozenset({"br100"}), frozenset(), frozenset())
            results, _, _ = conv.converge(HostDesired(), full=False, scope=scope)
        assert [type(r.op).__name__ for r in results] == ["DeleteLink"] and results[0].ok
        assert "br100" not in sh("ip", "-n", ns, "-o", "link")
    finally:
        cache.close()
