"""Converging the kernel on the desired state: read, diff, apply, settle — until nothing is left.

The actual state comes from the notification cache (executor/cache.py) rather than a dump per
round; after applying, :meth:`KernelCache.settle` waits for the kernel's notifications of what
was applied, and the next round reads the cache again. The NAT tables and ``ip_forward`` (both
versions) are read from the host on a *full* pass (the first, and the periodic drift sweep, which also dumps
everything again) and otherwise known from what this executor applied.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from . import nft
from .cache import KernelCache
from .diff import diff
from .errors import NotPermitted
from .incremental import Scope
from .kernel import Kernel, OpResult
from .model import (
    CreateLink,
    DeleteLink,
    DeleteNat,
    HostActual,
    HostDesired,
    NatTable,
    Plan,
    SetForwarding,
    SetNat,
)

MAX_ROUNDS = 3


class HostRead(NamedTuple):
    """The NAT tables and forwarding as read from the host."""

    nat: NatTable | None
    nat_intact: bool
    forwarding: bool
    forwarding_v6: bool


class Converger:
    def __init__(self, kernel: Kernel, cache: KernelCache) -> None:
        self.kernel = kernel
        self.cache = cache
        self.nat: NatTable | None = None
        self.nat_intact = True
        self.forwarding = False
        self.forwarding_v6 = False
        self._host_known = False
        #: the cache's change count as of the last state a pass read: later changes are not
        #: the pass's own (executor/daemon.py wakes up for them)
        self.seen_changes = 0
        #: the last scoped pass saw (in the cache) a change of a link outside its scope made
        #: while it ran: its count of changes covers it, so the daemon looks at the whole host
        self.outside = False
        #: the cache was dumped just before the next full pass (the daemon's periodic sweep
        #: dumps beside the passes, executor/daemon.py): that pass need not dump it again
        self.dumped = False
        #: how many times what the converger holds of the NAT tables and forwarding was set
        #: (read, or applied): a read made before a later one is stale
        self.host_writes = 0

    def read_host(self) -> HostRead:
        """The NAT tables and forwarding as the host has them now; kept nowhere (the periodic
        sweep reads them in a worker thread, beside the passes, and compares)."""
        nat, intact = nft.read(self.kernel.netns)
        return HostRead(
            nat, intact, self.kernel.read_forwarding(), self.kernel.read_forwarding_v6()
        )

    def holds(self) -> HostRead:
        """What the converger holds of the NAT tables and forwarding (read or applied)."""
        return HostRead(self.nat, self.nat_intact, self.forwarding, self.forwarding_v6)

    def actual(self, full: bool, scope: Scope | None = None) -> tuple[HostActual, dict[str, int]]:
        """The actual state (cut down to ``scope``) and every link's index (for applying)."""
        if full:
            if not self.dumped:
                self.cache.resync()
            self.dumped = False
        if full or not self._host_known:
            self.nat, self.nat_intact, self.forwarding, self.forwarding_v6 = self.read_host()
            self.host_writes += 1
            self._host_known = True
        links, addresses, fdb, changes, index = self.cache.state(scope)
        self.seen_changes = changes
        actual = HostActual(
            links=tuple(links),
            addresses=tuple(addresses),
            fdb=tuple(fdb),
            nat=self.nat,
            nat_intact=self.nat_intact,
            forwarding=self.forwarding,
            forwarding_v6=self.forwarding_v6,
        )
        return actual, index

    def _note(self, results: list[OpResult]) -> None:
        """What was applied to the NAT table and ip_forward is now what the host has."""
        for r in results:
            op = r.op
            if isinstance(op, SetNat | DeleteNat | SetForwarding):
                self.host_writes += 1
            if isinstance(op, SetNat | DeleteNat):
                if r.ok:
                    self.nat = op.table if isinstance(op, SetNat) else None
                    self.nat_intact = True
                else:
                    self._host_known = False  # read it again next time
            elif isinstance(op, SetForwarding):
                if not r.ok:
                    self._host_known = False
                elif op.version == 6:
                    self.forwarding_v6 = op.enabled
                else:
                    self.forwarding = op.enabled

    def converge(
        self,
        desired: HostDesired,
        full: bool = False,
        scope: Scope | None = None,
        applied: Callable[[list[OpResult]], None] | None = None,
    ) -> tuple[list[OpResult], list[Any], HostActual]:
        """Diff, apply, settle — until nothing is left to do (or MAX_ROUNDS); runs in a worker
        thread. With a ``scope``, ``desired`` holds only those networks and the actual state is
        cut down to them (executor/incremental.py). Returns what was applied, the conflicts,
        and the final actual state (within the scope). ``applied`` hears each round's results
        as soon as the kernel answered, before the state is read back (the daemon starts
        appending its report meanwhile)."""
        k = self.kernel
        results: list[OpResult] = []
        before = self.seen_changes
        self.outside = False
        actual, links = self.actual(full, scope)
        plan = diff(desired, actual)
        if not full and any(isinstance(op, DeleteLink) for op in plan.ops):
            # A link is deleted only if it is ours, and the notifications the cache lives on say
            # nothing of an alias changed on a link that is down: read the links anew first
            # (deletes are rare; a dump of 2,000 links ~0.1 s). Found by review.
            self.cache.resync()
            actual, links = self.actual(False, scope)
            plan = diff(desired, actual)
        resynced = False
        for round_no in range(MAX_ROUNDS):
            if round_no:
                plan = diff(desired, actual)
                if not resynced and _created_look_foreign(plan, results):
                    # The kernel does not notify an alias set while a link is down (a bridge
                    # is created down and marked ours then): until a notification of it
                    # coming up is read, a link this pass created can look foreign. Read the
                    # links anew, once — a real conflict is never a link the pass created.
                    resynced = True
                    self.cache.resync()
                    actual, links = self.actual(False, scope)
                    plan = diff(desired, actual)
            if not plan.ops:
                break
            round_results = k.apply(plan.ops, links)
            if any(r.errno == 1 for r in round_results):  # EPERM
                raise NotPermitted("the kernel refused a change (EPERM): run the executor as root")
            results.extend(round_results)
            self._note(round_results)
            if applied is not None:
                applied(round_results)
            if not self.cache.settle():
                self.cache.resync()  # notifications did not come in time: read the kernel
            actual, links = self.actual(False, scope)
            if all(r.ok for r in round_results):
                continue
            # Retry only what did not fail the same way again.
            if not diff(desired, actual).ops:
                break
        if scope is not None:
            self.outside = self.cache.changed_outside(before, scope)
        ok_targets = {(type(r.op), r.op.target()) for r in results if r.ok}
        # An op that failed once and succeeded in a later round is not a failure.
        results = [r for r in results if r.ok or (type(r.op), r.op.target()) not in ok_targets]
        return results, list(plan.conflicts), actual


def _created_look_foreign(plan: Plan, results: list[OpResult]) -> bool:
    """Whether ``plan`` calls a link foreign that an op of ``results`` created."""
    if not plan.conflicts:
        return False
    created = {r.op.spec.name for r in results if r.ok and isinstance(r.op, CreateLink)}
    return any(c.name in created for c in plan.conflicts)
