"""diff(desired, actual) -> the ordered operations that make the kernel match. Pure.

Ownership is the one safety rule: a link is removed or changed only if its ifalias starts with
``netledger:``; an address is removed only from one of our links, or when it is a /32 inside a
floating pool; flood entries are read from our VXLAN links only; the NAT table is our own. A
desired object that would need to touch something else (a foreign link holding the bridge's
name, a missing physical interface) becomes a :class:`Conflict`, never an operation.

Order: removals first (addresses, flood entries, links), then bridges, their member links,
repairs, enslaving, addresses, flood entries, NAT, forwarding — each step only needs what the
previous ones made.

:func:`diff_steps` is the same computation in steps (executor/slices.py: it yields every
``ITEMS`` objects, its indexes and sorts are made in steps too), so that the periodic sweep
diffs the whole host on the event loop in slices a change can come between. Its inputs are
immutable values: the result is the same however it is sliced.
"""

from __future__ import annotations

import netaddr

from .desired import MAX_IFNAME
from .model import (
    ADDR_GEN_NONE,
    AddAddress,
    AddFdb,
    AddrSpec,
    AddrState,
    Conflict,
    CreateLink,
    DeleteAddress,
    DeleteFdb,
    DeleteLink,
    DeleteNat,
    Enslave,
    FdbSpec,
    HostActual,
    HostDesired,
    LinkSpec,
    LinkState,
    Op,
    Plan,
    SetForwarding,
    SetLink,
    SetNat,
)
from .slices import ITEMS, Steps, complete, index_steps, sorted_steps


def link_changes(spec: LinkSpec, link: LinkState, moved_masters: set[str]) -> tuple[str, ...]:
    """The mutable properties of one of our links that differ from the spec."""
    changes: list[str] = []
    if not link.up:
        changes.append("up")
    if link.master != spec.master or (spec.master is not None and spec.master in moved_masters):
        changes.append("master")
    if spec.mtu is not None and link.mtu != spec.mtu:
        changes.append("mtu")
    if link.alias != spec.alias:
        changes.append("alias")
    if spec.kind == "bridge":
        if link.stp != 0:
            changes.append("stp")
        if link.forward_delay != 0:
            changes.append("forward_delay")
    if link.addr_gen_mode is not None and link.addr_gen_mode != ADDR_GEN_NONE:
        # made by an older executor: the kernel gave it a link-local address (and a compute
        # host's bridge a SLAAC address in the tenant's /64); our links get none
        changes.append("addr_gen_mode")
    if spec.kind == "bridge" and link.accept_ra:
        # addr_gen_mode none stops the link-local address only: from a router advertisement
        # (the network host's, or any instance's, on the tenant's segment) the kernel still
        # configures a SLAAC address on the bridge — a host reachable inside the tenant's
        # /64. Our bridges take none (their ports hand every frame to the bridge: no IPv6 of
        # their own runs on what they receive).
        changes.append("accept_ra")
    return tuple(changes)


def address_is_ours(
    addr: AddrState, links: dict[str, LinkState], floating: list[netaddr.IPNetwork]
) -> bool:
    link = links.get(addr.interface)
    if link is not None and link.ours:
        return True
    ip = netaddr.IPNetwork(addr.address)
    return ip.prefixlen == 32 and any(ip.ip in r for r in floating)


def diff(desired: HostDesired, actual: HostActual) -> Plan:
    return complete(diff_steps(desired, actual))


def diff_steps(desired: HostDesired, actual: HostActual) -> Steps[Plan]:
    """:func:`diff` in steps."""
    act = yield from index_steps(actual.links, _name)
    want = yield from index_steps(desired.links, _name)
    conflicts: list[Conflict] = []
    blocked: set[str] = set()

    for i, spec in enumerate(desired.links):
        if not i % ITEMS:
            yield
        cur = act.get(spec.name)
        if len(spec.name) > MAX_IFNAME:
            conflicts.append(Conflict(spec.name, f"name longer than {MAX_IFNAME} characters"))
            blocked.add(spec.name)
        elif cur is not None and not cur.ours:
            conflicts.append(Conflict(spec.name, "a link that is not ours has this name"))
            blocked.add(spec.name)
    for i, spec in enumerate(desired.links):
        if not i % ITEMS:
            yield
        if spec.kind == "bridge" or spec.name in blocked:
            continue
        if spec.master in blocked:
            conflicts.append(Conflict(spec.name, f"its bridge {spec.master} is blocked"))
            blocked.add(spec.name)
        elif spec.parent and spec.parent not in act:
            conflicts.append(Conflict(spec.name, f"physical interface {spec.parent} is missing"))
            blocked.add(spec.name)

    # --- links that go: ours and no longer desired, or desired with another identity
    gone: set[str] = set()
    del_links: list[Op] = []
    for i, link in enumerate(actual.links):
        if not i % ITEMS:
            yield
        if not link.ours:
            continue
        wanted = want.get(link.name)
        if wanted is None:
            del_links.append(DeleteLink(link.name, link.kind, _nid(link.alias), "stale"))
            gone.add(link.name)
        elif wanted.name not in blocked and link.identity() != wanted.identity():
            del_links.append(DeleteLink(link.name, link.kind, wanted.network_id, "replaced"))
            gone.add(link.name)
    # Member links before bridges: a bridge going takes nothing of ours down with it first.
    del_links.sort(key=lambda op: (isinstance(op, DeleteLink) and op.kind == "bridge", op.target()))

    # --- links that come or get repaired
    created: set[str] = set()
    creates: list[Op] = []
    repairs: list[Op] = []
    bridges_first = yield from sorted_steps(desired.links, key=_bridges_first)
    for i, spec in enumerate(bridges_first):
        if not i % ITEMS:
            yield
        if spec.name in blocked:
            continue
        cur = act.get(spec.name)
        if cur is None or spec.name in gone:
            creates.append(CreateLink(spec))
            created.add(spec.name)
            continue
        changes = link_changes(spec, cur, gone | created)
        if changes:
            repairs.append(SetLink(spec, changes))
    moved = gone | created

    enslaves: list[Op] = []
    for i, e in enumerate(desired.enslaved):
        if not i % ITEMS:
            yield
        if e.master in blocked:
            continue
        cur = act.get(e.interface)
        if cur is None:
            conflicts.append(Conflict(e.interface, "physical interface is missing"))
            continue
        if cur.ours:
            conflicts.append(Conflict(e.interface, "the physical interface is one of our links"))
            continue
        if cur.master == e.master and cur.up and e.master not in moved:
            continue
        master = act.get(cur.master) if cur.master else None
        if cur.master is None or cur.master == e.master or (master is not None and master.ours):
            enslaves.append(Enslave(e))
        else:
            conflicts.append(Conflict(e.interface, f"enslaved to {cur.master}, which is not ours"))

    # --- addresses
    yield
    floating = [netaddr.IPNetwork(r) for r in desired.floating_ranges]
    want_addr = yield from index_steps(desired.addresses, _key)
    have_addr = yield from index_steps(actual.addresses, _key)
    del_addr: list[Op] = []
    for i, a in enumerate(actual.addresses):
        if not i % ITEMS:
            yield
        if a.interface in gone or not address_is_ours(a, act, floating):
            continue
        w = want_addr.get(a.key)
        if w is None:
            del_addr.append(DeleteAddress(a.interface, a.address, None, "stale"))
        elif w.interface not in blocked and w.broadcast and a.broadcast != w.broadcast:
            del_addr.append(DeleteAddress(a.interface, a.address, w.network_id, "replaced"))
    add_addr: list[Op] = []
    for i, w in enumerate(desired.addresses):
        if not i % ITEMS:
            yield
        if w.interface in blocked:
            continue
        if w.interface not in want and w.interface not in act:
            conflicts.append(Conflict(w.interface, f"interface for {w.address} is missing"))
            continue
        h = have_addr.get(w.key)
        if h is None or w.interface in moved or (w.broadcast and h.broadcast != w.broadcast):
            add_addr.append(AddAddress(w))

    # --- flood entries (read from our VXLAN links only)
    want_fdb = yield from index_steps(desired.fdb, _key)
    have_fdb = set(actual.fdb)
    del_fdb: list[Op] = []
    have_sorted = yield from sorted_steps(have_fdb)
    for i, (iface, dst) in enumerate(have_sorted):
        if not i % ITEMS:
            yield
        if iface not in gone and (iface, dst) not in want_fdb:
            del_fdb.append(DeleteFdb(iface, dst, "stale"))
    add_fdb: list[Op] = []
    for i, f in enumerate(desired.fdb):
        if not i % ITEMS:
            yield
        if f.interface not in blocked and (f.interface in moved or f.key not in have_fdb):
            add_fdb.append(AddFdb(f))

    # --- NAT: the whole table or nothing
    nat: list[Op] = []
    if desired.nat.empty:
        if actual.nat is not None or not actual.nat_intact:
            nat.append(DeleteNat())
    elif actual.nat != desired.nat or not actual.nat_intact:
        nat.append(SetNat(desired.nat, was=actual.nat if actual.nat_intact else None))

    fwd: list[Op] = [SetForwarding(True)] if desired.forwarding and not actual.forwarding else []
    if desired.forwarding_v6 and not actual.forwarding_v6:
        fwd.append(SetForwarding(True, version=6))

    ops = (
        *del_addr,
        *del_fdb,
        *del_links,
        *creates,
        *repairs,
        *enslaves,
        *add_addr,
        *add_fdb,
        *nat,
        *fwd,
    )
    return Plan(ops=tuple(ops), conflicts=tuple(conflicts))


def _bridges_first(s: LinkSpec) -> tuple[bool, str]:
    return (s.kind != "bridge", s.name)


def _name(x: LinkSpec | LinkState) -> str:
    return x.name


def _key(x: AddrSpec | AddrState | FdbSpec) -> tuple[str, str]:
    return x.key


def _nid(alias: str | None) -> str | None:
    from .model import OURS

    if alias and alias.startswith(OURS):
        return alias[len(OURS) :] or None
    return None
