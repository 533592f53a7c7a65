"""The periodic sweep's check of the whole host, made in slices a change can come between.

The drift sweep diffs the whole host as the first pass does: every network's desired state
recomputed from the fold, against the kernel cache its dump has just refreshed, with the NAT
tables and forwarding read from the host, and the log's record of the host checked against
it. At 1,200 networks that is ~25 ms of Python; made in one piece, a change that came meanwhile
waited for all of it (the open loop's tail: p99 71.5 ms against a 13 ms median). So
:func:`check_steps` is that computation in steps (executor/slices.py), which the daemon runs
on the event loop in slices of ~2 ms, and a change's pass runs between two slices.

A slice reads the fold and the cache as they are when it runs, so by the end of the check some
of what it read is stale: a change's pass between two slices changed the fold and the kernel of
its networks. Every such pass names what it looked at — its scope (executor/incremental.py),
or the whole host — and :func:`left` drops what the check found there: that pass diffed it on
a later view (the incremental path wins). The NAT tables and forwarding are host-wide: their
read counts only if nothing set them after it. What is left is what the whole diff finds now.
The check never acts on it: when anything is left — an operation, a record to fix, a network
whose desired state is not the one the passes keep — the daemon runs the whole pass at once on
a fresh view (the sweep as it was before, rare: it means drift). A sweep that finds nothing,
the usual one, ends there.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from netledger.events.host_events import (
    HostAddressAdded,
    HostAddressRemoved,
    HostEvent,
    HostFdbAdded,
    HostFdbRemoved,
    HostLinkCreated,
    HostLinkRemoved,
)
from netledger.events.state import State

from . import fragments as fr
from .cache import CachedState
from .converge import HostRead
from .diff import diff_steps
from .fragments import Fragment, HostConfig, assemble_steps
from .host_report import record_fixes_steps
from .hosts import HostBook
from .incremental import Scope, network_of
from .model import (
    AddAddress,
    AddFdb,
    Conflict,
    CreateLink,
    DeleteAddress,
    DeleteFdb,
    DeleteLink,
    Enslave,
    HostActual,
    HostDesired,
    LinkState,
    Op,
    Plan,
    ReloadDhcp,
    SetLink,
    StartDhcp,
    StopDhcp,
)
from .slices import Slicing, Steps


@dataclass
class Touched:
    """What the passes of changes made while a sweep ran looked at: their scopes."""

    everything: bool = False
    networks: set[str] = field(default_factory=set)
    links: set[str] = field(default_factory=set)
    addresses: set[tuple[str, str]] = field(default_factory=set)

    def add(self, scope: Scope | None) -> None:
        """A pass's scope (None: it diffed the whole host)."""
        if scope is None:
            self.everything = True
            return
        self.networks |= scope.networks
        self.links |= scope.links
        self.addresses |= scope.addresses

    def __bool__(self) -> bool:
        return self.everything or bool(self.networks or self.links or self.addresses)


@dataclass(frozen=True)
class Check:
    """What the sweep's check found, each part as of the step that computed it."""

    desired: HostDesired
    actual: HostActual
    plan: Plan
    #: the log's record of the host against ``actual`` (executor/host_report.py)
    fixes: list[HostEvent]
    #: networks whose desired state is not the one the passes keep
    differs: frozenset[str]


def check_steps(
    state: State,
    book: HostBook,
    cfg: HostConfig,
    kept: dict[str, Fragment],
    host: HostRead,
    cached: Steps[CachedState],
) -> Steps[Check]:
    """The whole pass's diff, in steps: every network's fragment (one a step, compared with
    the one ``kept`` by the passes then), the host's desired state, the cache modelled
    (``cached``: its steps), the diff, the record's fixes. ``host``: the NAT tables and
    forwarding as read."""
    vteps = book.vteps()  # an announcement makes a pass of the whole host: ``everything``
    ids = list(state.networks)
    fresh: dict[str, Fragment] = {}
    differs: set[str] = set()
    for nid in ids:
        yield
        n = state.networks.get(nid)
        # through the module: a test makes this slow on purpose
        f = None if n is None else fr.fragment(state, n, book, cfg, vteps)
        if f is not None:
            fresh[nid] = f
        if f != kept.get(nid):
            differs.add(nid)
    yield
    differs |= kept.keys() - set(ids)
    desired = yield from assemble_steps(fresh, state, cfg)
    links, addresses, fdb, _, _ = yield from cached
    actual = HostActual(
        links=tuple(links),
        addresses=tuple(addresses),
        fdb=tuple(fdb),
        nat=host.nat,
        nat_intact=host.nat_intact,
        forwarding=host.forwarding,
        forwarding_v6=host.forwarding_v6,
    )
    plan = yield from diff_steps(desired, actual)
    follows = not cfg.fixed_range  # the NAT set is the registry's (as the whole pass says)
    fixes = yield from record_fixes_steps(cfg.host, book, desired, [], actual, follows)
    return Check(desired, actual, plan, fixes, frozenset(differs))


@dataclass(frozen=True)
class Swept:
    """A sweep up to its verdict: its check, the NAT tables and forwarding it read (when the
    converger's ``host_writes`` was ``since``), what dnsmasq would need (nothing done), how the
    check was sliced."""

    check: Check
    read: HostRead
    since: int
    dhcp: tuple[Op, ...]
    slicing: Slicing
    #: monotonic time the sweep's work after its dump began
    started: float


@dataclass(frozen=True)
class Left:
    """What a sweep found that no change's pass looked at since."""

    ops: tuple[Op, ...]
    fixes: tuple[HostEvent, ...]
    differs: frozenset[str]
    conflicts: tuple[Conflict, ...]
    #: the NAT tables or forwarding are not what the converger holds
    host_drift: bool = False

    @property
    def work(self) -> bool:
        return bool(self.ops or self.fixes or self.differs or self.host_drift)


def left(swept: Swept, touched: Touched, writes: int, holds: HostRead) -> Left:
    """``swept``'s findings without those on what ``touched`` names, and without those on the
    NAT tables and forwarding unless nothing set them after they were read (``writes``: the
    converger's ``host_writes`` now; ``holds``: what it holds of them)."""
    check = swept.check
    valid = writes == swept.since
    near = _Near(check.actual, touched)
    ops = tuple(op for op in (*check.plan.ops, *swept.dhcp) if not near.op(op, valid))
    fixes = tuple(e for e in check.fixes if not near.fix(e, valid))
    conflicts = tuple(c for c in check.plan.conflicts if not near.link(c.name))
    differs = frozenset() if touched.everything else check.differs - touched.networks
    return Left(ops, fixes, differs, conflicts, host_drift=valid and swept.read != holds)


class _Near:
    """Whether a finding is on what a change's pass looked at."""

    def __init__(self, actual: HostActual, touched: Touched) -> None:
        self.t = touched
        self._links = actual.links  # sorted: by name first

    def link(self, name: str | None) -> bool:
        """Whether a pass looked at link ``name``: by its name, or by the network its alias
        marks it as one of (found in the check's links by bisection: the verdict is taken at
        once, its cost must not follow the host's size)."""
        t = self.t
        if t.everything:
            return True
        if not t or name is None:
            return False
        if name in t.links:
            return True
        links = self._links
        i = bisect.bisect_left(links, name, key=_link_name)
        return i < len(links) and links[i].name == name and network_of(links[i].alias) in t.networks

    def net(self, network_id: str | None) -> bool:
        return self.t.everything or (network_id is not None and network_id in self.t.networks)

    def op(self, op: Op, host_valid: bool) -> bool:
        if isinstance(op, CreateLink | SetLink):
            return self.link(op.spec.name) or self.net(op.spec.network_id)
        if isinstance(op, DeleteLink):
            return self.link(op.name) or self.net(op.network_id)
        if isinstance(op, Enslave):
            s = op.spec
            return self.link(s.master) or self.link(s.interface) or self.net(s.network_id)
        if isinstance(op, AddAddress):
            s2 = op.spec
            return self.addr(s2.interface, s2.address) or self.net(s2.network_id)
        if isinstance(op, DeleteAddress):
            return self.addr(op.interface, op.address) or self.net(op.network_id)
        if isinstance(op, AddFdb):
            return self.link(op.spec.interface) or self.net(op.spec.network_id)
        if isinstance(op, DeleteFdb):
            return self.link(op.interface)
        if isinstance(op, StartDhcp | ReloadDhcp):
            return self.link(op.spec.bridge)
        if isinstance(op, StopDhcp):
            return self.link(op.bridge) or self.net(op.network_id)
        return not host_valid  # the NAT tables, forwarding

    def addr(self, interface: str, address: str) -> bool:
        return (interface, address) in self.t.addresses or self.link(interface)

    def fix(self, e: HostEvent, host_valid: bool) -> bool:
        if isinstance(e, HostLinkCreated):
            return self.link(e.name) or self.net(e.network_id)
        if isinstance(e, HostLinkRemoved):
            return self.link(e.name)
        if isinstance(e, HostAddressAdded):
            return self.addr(e.interface, e.address) or self.net(e.network_id)
        if isinstance(e, HostAddressRemoved):
            return self.addr(e.interface, e.address)
        if isinstance(e, HostFdbAdded | HostFdbRemoved):
            return self.link(e.interface)
        return not host_valid  # the NAT tables, forwarding


def _link_name(x: LinkState) -> str:
    return x.name
