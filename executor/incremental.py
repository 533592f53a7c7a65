"""A pass that looks only at what changed. Pure: no I/O.

After an event touches networks ``N``, the executor recomputes their fragments
(executor/fragments.py) and diffs only what belongs to them — their links (as desired now and
as desired before: a link that goes must be seen), the links the kernel has with their
ownership mark, the addresses and flood entries on those links, their floating /32s — plus the
host-wide NAT table and ``ip_forward``. :func:`narrow` cuts the actual state down to that
:class:`Scope`, and the ordinary diff (executor/diff.py) runs on the two small halves: the same
rules, a cost that follows the change. Networks in the flat modes share a bridge and the
physical interface with others: a change there takes a full pass (as does the first pass, the
periodic sweep, and a change that concerns every network: an announcement, a new pool).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from msgspec.structs import replace

from netledger.events.state import State

from .fragments import Fragment, HostConfig, assemble, fixed_space, fragments, nat_table
from .hosts import HostBook
from .model import OURS, HostActual, HostDesired, LinkSpec, NatTable


@dataclass(frozen=True)
class Scope:
    networks: frozenset[str]
    #: link names desired now or before by those networks
    links: frozenset[str]
    #: addresses (interface, cidr) desired now or before by those networks
    addresses: frozenset[tuple[str, str]]
    #: links only looked at (their existence), never changed here: the physical and public
    #: interfaces, and the interface each of those networks' links hangs from (a VLAN network's
    #: own ``bridge_interface``)
    support: frozenset[str]


def scope_of(
    old: dict[str, Fragment], new: dict[str, Fragment], networks: set[str], cfg: HostConfig
) -> Scope:
    frags = [*old.values(), *new.values()]
    return Scope(
        networks=frozenset(networks),
        links=frozenset(link.name for f in frags for link in f.links()),
        addresses=frozenset(a.key for f in frags for a in f.addresses()),
        support=frozenset(
            x
            for x in (
                cfg.physical_interface,
                cfg.public_interface,
                *(link.parent for f in frags for link in f.links()),
                *(f.enslaved.interface for f in frags if f.enslaved is not None),
            )
            if x
        ),
    )


def needs_full(old: dict[str, Fragment], new: dict[str, Fragment]) -> bool:
    """A shared bridge (flat modes) among the networks: only a full pass sees all its users."""
    return any(f.shared for f in (*old.values(), *new.values()))


def network_of(alias: str | None) -> str | None:
    """The network a link is marked as belonging to (its alias ``netledger:<id>``)."""
    return alias[len(OURS) :] if alias and alias.startswith(OURS) else None


def owned(name: str, alias: str | None, scope: Scope) -> bool:
    """Whether a link belongs to the networks of ``scope``: desired by them now or before, or
    marked as one of theirs."""
    return name in scope.links or network_of(alias) in scope.networks


def narrow(actual: HostActual, scope: Scope) -> HostActual:
    """``actual`` cut down to ``scope``: what the diff of those networks may look at (the
    cache applies the same rule before building anything: executor/cache.py)."""
    mine = {link.name for link in actual.links if owned(link.name, link.alias, scope)}
    links = tuple(link for link in actual.links if link.name in mine or link.name in scope.support)
    addresses = tuple(
        a for a in actual.addresses if a.interface in mine or a.key in scope.addresses
    )
    fdb = tuple(f for f in actual.fdb if f[0] in mine)
    return HostActual(
        links=links,
        addresses=addresses,
        fdb=fdb,
        nat=actual.nat,
        nat_intact=actual.nat_intact,
        forwarding=actual.forwarding,
        forwarding_v6=actual.forwarding_v6,
    )


class Fragments:
    """Every network's fragment as of the last pass, and how many of them serve IPv4 / IPv6
    (``ip_forward`` follows them): an incremental pass replaces a few fragments without
    copying or scanning the host's thousand others."""

    def __init__(self, frags: dict[str, Fragment]) -> None:
        self.frags = frags
        self.served4 = sum(1 for f in frags.values() if f.served4)
        self.served6 = sum(1 for f in frags.values() if f.served6)
        #: every link name the fragments name (theirs, the interfaces they hang from or put
        #: addresses on), counted: what a change of a link not ours must touch to matter
        self.names: Counter[str] = Counter(n for f in frags.values() for n in link_names(f))

    def served_after(self, updates: dict[str, Fragment | None]) -> tuple[bool, bool]:
        """Whether any network serves IPv4 / IPv6 once ``updates`` are made."""
        n4, n6 = self.served4, self.served6
        for k, new in updates.items():
            old = self.frags.get(k)
            if old is not None:
                n4 -= old.served4
                n6 -= old.served6
            if new is not None:
                n4 += new.served4
                n6 += new.served6
        return n4 > 0, n6 > 0

    def update(self, updates: dict[str, Fragment | None]) -> None:
        """Make ``updates`` (None: the network has no fragment any more)."""
        names = self.names
        for k, new in updates.items():
            old = self.frags.pop(k, None)
            if old is not None:
                self.served4 -= old.served4
                self.served6 -= old.served6
                for n in link_names(old):
                    names[n] -= 1
                    if names[n] <= 0:
                        del names[n]
            if new is not None:
                self.frags[k] = new
                self.served4 += new.served4
                self.served6 += new.served6
                names.update(link_names(new))


def link_names(f: Fragment) -> list[str]:
    """The links a fragment names: its own, the interface its segment hangs from or it
    enslaves, the interfaces of its addresses (the public interface for floating IPs)."""
    out = [link.name for link in f.links()]
    out += [link.parent for link in f.links() if link.parent]
    if f.enslaved is not None:
        out.append(f.enslaved.interface)
    out += [a.interface for a in f.addresses()]
    return out


class Watched:
    """The links not ours whose changes matter to this host's executor (``in``): the host's
    physical and public interfaces and whatever a network's fragment names. Any other link
    that is not ours — a hypervisor's tap coming and going, plugged into our bridge or not —
    changes nothing the executor makes: its notifications need no pass (each was a diff of
    the whole host: ~30 ms of CPU at 300 networks, for every tap of every instance started)."""

    def __init__(self, cfg: HostConfig, frags: Fragments) -> None:
        self.host = frozenset(x for x in (cfg.physical_interface, cfg.public_interface) if x)
        self.frags = frags

    def __contains__(self, name: object) -> bool:
        return name in self.host or name in self.frags.names


@dataclass(frozen=True)
class PassPlan:
    """What one pass diffs, and what the executor keeps of it for the next."""

    #: the whole host's desired state, or — with a scope — that of the touched networks (plus
    #: the host-wide NAT table and ip_forward)
    desired: HostDesired
    scope: Scope | None
    #: every network's fragment after this pass (a full plan), or the fragments of the touched
    #: networks only (an incremental one: ``updates``, None for a network now without one)
    fragments: Fragments | None
    updates: dict[str, Fragment | None] | None
    #: the host's NAT table
    nat: NatTable
    #: the desired state of the same networks before (where an object that goes came from)
    prev: HostDesired | None
    #: the desired state changed since the last pass
    changed: bool
    #: dnsmasq bridges to look at (None: all)
    bridges: set[str] | None


def full_plan(
    state: State,
    book: HostBook,
    cfg: HostConfig,
    old: dict[str, Fragment] | None,
    dirty: set[str] | None = None,
    nat: NatTable | None = None,
) -> PassPlan:
    """Every network. With ``dirty`` (and ``old``), only those fragments are recomputed — a
    pass after the kernel changed behind our back diffs everything, but nothing in the log
    changed beyond ``dirty``. ``nat``: the NAT table of the last pass — ``prev``'s, as an
    incremental plan has it (computed from ``old`` instead, it held the registry's fixed
    ranges as they are now: a set the registry moved looked unchanged, and writing it to
    the kernel looked like a repair of drift)."""
    if dirty is not None and old is not None:
        frags = {k: v for k, v in old.items() if k not in dirty}
        frags.update(fragments(state, book, cfg, only=dirty))
    else:
        frags = fragments(state, book, cfg)
    desired = assemble(frags, state, cfg)
    prev = assemble(old, state, cfg, nat=nat) if old is not None else None
    return PassPlan(
        desired=desired,
        scope=None,
        fragments=Fragments(frags),
        updates=None,
        nat=desired.nat,
        prev=prev,
        changed=prev is not None and prev != desired,
        bridges=None,
    )


def incremental_plan(
    state: State,
    book: HostBook,
    cfg: HostConfig,
    before: Fragments,
    dirty: set[str],
    nat: NatTable | None = None,
) -> PassPlan:
    """Only the networks in ``dirty`` (a full plan when one of them shares its bridge)."""
    new = fragments(state, book, cfg, only=dirty)
    frags = before.frags
    old = {n: frags[n] for n in dirty if n in frags}
    if needs_full(old, new):
        return full_plan(state, book, cfg, frags, nat=nat)
    updates = {n: new.get(n) for n in dirty}
    space = fixed_space(state, cfg.fixed_range)
    nat_before = nat if nat is not None else nat_table(frags.values(), cfg, space)
    moved = any(
        (o.floating, o.fixed_range, o.routed6) != (n.floating, n.fixed_range, n.routed6)
        for o, n in _pairs(old, new)
    )
    # A network created anywhere widens the fixed ranges the table holds (every network's):
    # the same tuple object while the registry is unchanged, so the check costs nothing then.
    grown = nat_before.fixed_ranges is not space and nat_before.fixed_ranges not in ((), space)
    if moved or grown:  # the host-wide NAT table is rebuilt from every network's fragment
        after = [f for k, f in frags.items() if k not in dirty] + list(new.values())
        nat_now = nat_table(after, cfg, space)
    else:
        nat_now = nat_before
    serves4, serves6 = before.served_after(updates)
    desired = replace(
        assemble(new, state, cfg, nat=nat_now), forwarding=serves4, forwarding_v6=serves6
    )
    return PassPlan(
        desired=desired,
        scope=scope_of(old, new, dirty, cfg),
        fragments=None,
        updates=updates,
        nat=nat_now,
        prev=assemble(old, state, cfg, nat=nat_before),
        changed=old != new or nat_now != nat_before,
        bridges={f.bridge.name for f in (*old.values(), *new.values())},
    )


_NONE = Fragment("", LinkSpec("", "bridge", None))


def _pairs(old: dict[str, Fragment], new: dict[str, Fragment]) -> list[tuple[Fragment, Fragment]]:
    return [(old.get(k, _NONE), new.get(k, _NONE)) for k in set(old) | set(new)]
