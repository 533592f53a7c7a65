"""A link the pass itself created is never reported as a foreign link's name.

The kernel does not notify an alias set while a link is down, and a bridge is created down and
marked ours then: until the notification of it coming up is read, the cache can show the new
bridge without its mark. The pass re-diffed on that and reported "a link that is not ours has
this name" for its own bridge (seen in a clean-clone run). It now reads the links anew, once,
when a conflict names a link it created — and only then: a link that was foreign before the
pass is a real conflict, reported without a dump.

The kernel and cache here are stand-ins (the notification's timing cannot be forced on a real
kernel); the rule they exercise is the converger's own.
"""

from __future__ import annotations

from typing import Any

from netledger.executor.cache import CachedState
from netledger.executor.converge import Converger
from netledger.executor.kernel import OpResult
from netledger.executor.model import CreateLink, HostDesired, LinkSpec, LinkState, Op

SPEC = LinkSpec(name="brx", kind="bridge", network_id="7")


class Kernel:
    netns = None

    def __init__(self) -> None:
        self.applied: list[Op] = []

    def apply(self, ops: list[Op], links: dict[str, int]) -> list[OpResult]:
        self.applied.extend(ops)
        return [OpResult(op) for op in ops]


class Cache:
    """Shows ``brx`` as the notifications left it: without its alias until a dump."""

    def __init__(self, exists_before: bool) -> None:
        self.exists = exists_before
        self.dumped = 0

    def settle(self) -> bool:
        return True

    def resync(self) -> None:
        self.dumped += 1

    def state(self, scope: Any = None) -> CachedState:
        if not self.exists:
            return CachedState([], [], [], 0, {})
        alias = SPEC.alias if self.dumped else None
        link = LinkState(name="brx", index=5, kind="bridge", alias=alias, up=True)
        return CachedState([link], [], [], 0, {"brx": 5})


def converger(cache: Cache, kernel: Kernel) -> Converger:
    conv = Converger(kernel, cache)  # type: ignore[arg-type]
    conv._host_known = True  # no NAT table nor sysctls to read here
    return conv


def test_a_bridge_the_pass_created_is_read_again_not_called_foreign() -> None:
    cache, kernel = Cache(exists_before=False), Kernel()
    real_apply = kernel.apply

    def apply(ops: list[Op], links: dict[str, int]) -> list[OpResult]:
        cache.exists = True  # created: the cache saw the link, not yet its alias
        return real_apply(ops, links)

    kernel.apply = apply  # type: ignore[method-assign]
    _results, conflicts, _actual = converger(cache, kernel).converge(HostDesired(links=(SPEC,)))
    assert any(isinstance(op, CreateLink) for op in kernel.applied)
    assert conflicts == []
    assert cache.dumped == 1


def test_a_link_foreign_before_the_pass_is_a_conflict_without_a_dump() -> None:
    cache, kernel = Cache(exists_before=True), Kernel()
    _results, conflicts, _actual = converger(cache, kernel).converge(HostDesired(links=(SPEC,)))
    assert [c.name for c in conflicts] == ["brx"]
    assert "not ours" in conflicts[0].reason
    assert cache.dumped == 0 and kernel.applied == []
