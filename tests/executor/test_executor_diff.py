"""The diff, tested against a model of the kernel with hypothesis.

``simulate`` applies operations the way the kernel does (deleting a bridge releases its members
and drops their addresses; creating a link that exists fails); the properties: after applying
the plan, a second diff is empty; nothing that is not ours is ever deleted or changed (except
the physical interface being enslaved, which is what flat mode asks for).
"""

from __future__ import annotations

import msgspec
import netaddr
from hypothesis import given, settings
from hypothesis import strategies as st

from netledger.executor.diff import address_is_ours, diff
from netledger.executor.model import (
    AddAddress,
    AddFdb,
    AddrSpec,
    AddrState,
    CreateLink,
    DeleteAddress,
    DeleteFdb,
    DeleteLink,
    DeleteNat,
    Enslave,
    EnslaveSpec,
    FdbSpec,
    HostActual,
    HostDesired,
    LinkSpec,
    LinkState,
    NatTable,
    Op,
    SetForwarding,
    SetLink,
    SetNat,
)


class KernelRefused(AssertionError):
    pass


def simulate(actual: HostActual, ops: tuple[Op, ...]) -> HostActual:
    links = {link.name: link for link in actual.links}
    addrs = {a.key: a for a in actual.addresses}
    fdb = set(actual.fdb)
    nat, intact, fwd = actual.nat, actual.nat_intact, actual.forwarding
    next_index = max((link.index for link in actual.links), default=1) + 1
    for op in ops:
        if isinstance(op, DeleteAddress):
            addrs.pop((op.interface, op.address), None)
        elif isinstance(op, DeleteFdb):
            fdb.discard((op.interface, op.dst))
        elif isinstance(op, DeleteLink):
            if links.pop(op.name, None) is None:
                raise KernelRefused(f"delete of missing {op.name}")
            addrs = {k: a for k, a in addrs.items() if a.interface != op.name}
            fdb = {f for f in fdb if f[0] != op.name}
            for n, link in list(links.items()):
                if link.master == op.name:
                    links[n] = msgspec.structs.replace(link, master=None)
        elif isinstance(op, CreateLink):
            s = op.spec
            if s.name in links:
                raise KernelRefused(f"{s.name} exists")
            if s.master is not None and s.master not in links:
                raise KernelRefused(f"master {s.master} missing")
            if s.parent is not None and s.parent not in links:
                raise KernelRefused(f"parent {s.parent} missing")
            links[s.name] = LinkState(
                name=s.name,
                index=next_index,
                kind=s.kind,
                alias=s.alias,
                master=s.master,
                up=True,
                mtu=s.mtu or 1500,
                vni=s.vni,
                vlan=s.vlan,
                parent=s.parent,
                local=s.local,
                port=s.port,
                stp=0 if s.kind == "bridge" else None,
                forward_delay=0 if s.kind == "bridge" else None,
            )
            next_index += 1
        elif isinstance(op, SetLink):
            s = op.spec
            cur = links.get(s.name)
            if cur is None or (not cur.ours and "alias" not in op.changes):
                raise KernelRefused(f"set on missing or foreign {s.name}")
            if s.master is not None and s.master not in links:
                raise KernelRefused(f"master {s.master} missing")
            links[s.name] = msgspec.structs.replace(
                cur,
                up=True,
                master=s.master,
                mtu=s.mtu or cur.mtu,
                alias=s.alias,
                stp=0 if s.kind == "bridge" else cur.stp,
                forward_delay=0 if s.kind == "bridge" else cur.forward_delay,
            )
        elif isinstance(op, Enslave):
            cur = links.get(op.spec.interface)
            if cur is None or op.spec.master not in links:
                raise KernelRefused("enslave of missing link")
            links[cur.name] = msgspec.structs.replace(cur, master=op.spec.master, up=True)
        elif isinstance(op, AddAddress):
            if op.spec.interface not in links:
                raise KernelRefused(f"no link {op.spec.interface}")
            if op.spec.key in addrs:
                raise KernelRefused(f"address {op.spec.key} exists")
            addrs[op.spec.key] = AddrState(op.spec.interface, op.spec.address, op.spec.broadcast)
        elif isinstance(op, AddFdb):
            if op.spec.interface not in links:
                raise KernelRefused(f"no link {op.spec.interface}")
            fdb.add(op.spec.key)
        elif isinstance(op, SetNat):
            nat, intact = op.table, True
        elif isinstance(op, DeleteNat):
            nat, intact = None, True
        elif isinstance(op, SetForwarding):
            fwd = op.enabled
        else:  # pragma: no cover
            raise AssertionError(op)
    return HostActual(
        links=tuple(sorted(links.values())),
        addresses=tuple(sorted(addrs.values())),
        fdb=tuple(sorted(fdb)),
        nat=nat,
        nat_intact=intact,
        forwarding=fwd,
    )


# --- strategies -----------------------------------------------------------------------------

BRIDGES = ["br1", "br2", "br3", "brvx7"]
SEGS = ["vx1", "vx2", "vlan3", "vx7"]
PHYS = ["eth0", "eth1"]
FOREIGN = ["lo", "veth-a", "virbr0"]
ALL_NAMES = BRIDGES + SEGS + PHYS + FOREIGN
FLOATING = "203.0.113.0/28"


@st.composite
def desired_states(draw: st.DrawFn) -> HostDesired:
    bridges = draw(st.lists(st.sampled_from(BRIDGES), unique=True, max_size=4))
    links: list[LinkSpec] = []
    addrs: list[AddrSpec] = []
    fdb: list[FdbSpec] = []
    enslaved: list[EnslaveSpec] = []
    for i, b in enumerate(bridges):
        nid = str(i + 1)
        links.append(LinkSpec(b, "bridge", nid, mtu=draw(st.sampled_from([None, 1450]))))
        if draw(st.booleans()):
            addrs.append(AddrSpec(b, f"10.0.{i}.1/24", f"10.0.{i}.255", nid))
        kind = draw(st.sampled_from(["vxlan", "vlan", "flat"]))
        if kind == "vxlan":
            name = f"vx{i + 1}"
            links.append(
                LinkSpec(
                    name,
                    "vxlan",
                    nid,
                    master=b,
                    vni=i + 1,
                    parent="eth0",
                    local=draw(st.sampled_from(["192.168.0.1", None])),
                    port=4789,
                )
            )
            for peer in draw(
                st.lists(st.sampled_from(["192.168.0.2", "192.168.0.3"]), unique=True)
            ):
                fdb.append(FdbSpec(name, peer, nid))
        elif kind == "vlan":
            links.append(LinkSpec(f"vlan{i + 1}", "vlan", nid, master=b, vlan=i + 1, parent="eth0"))
        elif not any(e.interface == "eth1" for e in enslaved):
            enslaved.append(EnslaveSpec("eth1", b, nid))
    floating = draw(st.lists(st.integers(1, 14), unique=True, max_size=3))
    for f in floating:
        addrs.append(AddrSpec("eth0", f"203.0.113.{f}/32", None, "1"))
    nat = NatTable()
    if floating or addrs:
        nat = NatTable(
            floating=tuple((f"203.0.113.{f}", f"10.0.0.{f + 10}") for f in sorted(floating)),
            fixed_ranges=("10.0.0.0/24",),
            snat_to=draw(st.sampled_from([None, "192.0.2.1"])),
        )
    return HostDesired(
        links=tuple(sorted(links)),
        addresses=tuple(sorted(addrs)),
        fdb=tuple(sorted(fdb)),
        enslaved=tuple(enslaved),
        nat=nat,
        forwarding=bool(addrs),
        floating_ranges=(FLOATING,),
    )


@st.composite
def actual_states(draw: st.DrawFn) -> HostActual:
    # The physical interfaces exist on every host; anything else may or may not be there.
    names = ["eth0", "eth1", *draw(st.lists(st.sampled_from(ALL_NAMES), unique=True))]
    names = list(dict.fromkeys(names))
    links: list[LinkState] = []
    for idx, name in enumerate(names, start=2):
        phys_or_foreign = name in PHYS or name in FOREIGN
        alias = (
            None
            if phys_or_foreign
            else draw(
                st.sampled_from([None, "netledger:1", "netledger:2", "netledger:", "someone-else"])
            )
        )
        kind = draw(st.sampled_from(["bridge", "vxlan", "vlan", "veth", None]))
        links.append(
            LinkState(
                name=name,
                index=idx,
                kind=kind,
                alias=alias,
                master=draw(st.sampled_from([None, *[n for n in names if n != name]])),
                up=draw(st.booleans()),
                mtu=draw(st.sampled_from([1500, 1450])),
                vni=draw(st.sampled_from([None, 1, 2, 3])),
                vlan=draw(st.sampled_from([None, 3])),
                parent=draw(st.sampled_from([None, "eth0"])),
                local=draw(st.sampled_from([None, "192.168.0.1"])),
                port=draw(st.sampled_from([None, 4789])),
                stp=draw(st.sampled_from([None, 0, 1])),
                forward_delay=draw(st.sampled_from([None, 0, 1500])),
            )
        )
    present = [link.name for link in links]
    addrs = {}
    for _ in range(draw(st.integers(0, 6))):
        iface = draw(st.sampled_from(present))
        addr = draw(
            st.sampled_from(
                [
                    "10.0.0.1/24",
                    "10.0.1.1/24",
                    "203.0.113.3/32",
                    "203.0.113.5/32",
                    "198.51.100.1/24",
                    "203.0.113.7/24",
                ]
            )
        )
        bcast = draw(st.sampled_from([None, "10.0.0.255", "10.0.1.255"]))
        addrs[(iface, addr)] = AddrState(iface, addr, bcast)
    ours_vx = [link.name for link in links if link.ours and link.name.startswith("vx")]
    fdb = set()
    if ours_vx:
        for _ in range(draw(st.integers(0, 3))):
            fdb.add(
                (
                    draw(st.sampled_from(ours_vx)),
                    draw(st.sampled_from(["192.168.0.2", "192.168.0.9"])),
                )
            )
    nat_choice = draw(st.sampled_from(["none", "other", "broken"]))
    nat = None if nat_choice == "none" else NatTable(floating=(("203.0.113.9", "10.0.0.9"),))
    return HostActual(
        links=tuple(sorted(links)),
        addresses=tuple(sorted(addrs.values())),
        fdb=tuple(sorted(fdb)),
        nat=nat,
        nat_intact=nat_choice != "broken",
        forwarding=draw(st.booleans()),
    )


# --- properties ---------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(desired_states(), actual_states())
def test_applying_the_diff_yields_the_desired_state(
    desired: HostDesired, actual: HostActual
) -> None:
    plan = diff(desired, actual)
    after = simulate(actual, plan.ops)
    again = diff(desired, after)
    assert again.ops == (), again.ops
    blocked = {c.name for c in plan.conflicts}
    have = after.link_map()
    for spec in desired.links:
        if spec.name in blocked:
            continue
        link = have[spec.name]
        assert link.ours and link.identity() == spec.identity() and link.up
        assert link.master == spec.master
    keys = {a.key for a in after.addresses}
    for a in desired.addresses:
        if a.interface not in blocked and a.interface in have:
            assert a.key in keys
    assert set(after.fdb) >= {f.key for f in desired.fdb if f.interface not in blocked}
    assert after.nat == (None if desired.nat.empty else desired.nat)


@settings(max_examples=400, deadline=None)
@given(desired_states(), actual_states())
def test_foreign_objects_are_never_deleted_or_changed(
    desired: HostDesired, actual: HostActual
) -> None:
    plan = diff(desired, actual)
    links = actual.link_map()
    floating = [netaddr.IPNetwork(FLOATING)]
    enslaved = {e.interface for e in desired.enslaved}
    for op in plan.ops:
        if isinstance(op, DeleteLink):
            assert links[op.name].ours
        elif isinstance(op, SetLink):
            assert links[op.spec.name].ours
        elif isinstance(op, CreateLink):
            assert op.spec.name not in links or links[op.spec.name].ours
        elif isinstance(op, DeleteAddress):
            a = next(a for a in actual.addresses if a.key == (op.interface, op.address))
            assert address_is_ours(a, links, floating)
        elif isinstance(op, DeleteFdb):
            assert links[op.interface].ours
        elif isinstance(op, Enslave):
            assert op.spec.interface in enslaved
            cur = links[op.spec.interface]
            assert cur.master is None or cur.master == op.spec.master or links[cur.master].ours
    after = simulate(actual, plan.ops)
    have = after.link_map()
    for link in actual.links:
        if not link.ours and link.name not in enslaved:
            # Untouched, except that a bridge of ours going away releases its members.
            now = have[link.name]
            assert msgspec.structs.replace(now, master=link.master) == link


def test_foreign_link_with_the_bridge_name_is_a_conflict() -> None:
    desired = HostDesired(
        links=(
            LinkSpec("br1", "bridge", "1"),
            LinkSpec("vx1", "vxlan", "1", master="br1", vni=1, port=4789),
        ),
        addresses=(AddrSpec("br1", "10.0.0.1/24", "10.0.0.255", "1"),),
    )
    actual = HostActual(links=(LinkState("br1", 5, "bridge", alias=None, up=True),))
    plan = diff(desired, actual)
    assert plan.ops == ()
    assert {c.name for c in plan.conflicts} == {"br1", "vx1"}


def test_a_noop_diff_is_empty_and_a_down_bridge_is_repaired() -> None:
    spec = LinkSpec("br1", "bridge", "1")
    desired = HostDesired(links=(spec,))
    good = LinkState("br1", 5, "bridge", alias="netledger:1", up=True, stp=0, forward_delay=0)
    assert diff(desired, HostActual(links=(good,))).ops == ()
    down = msgspec.structs.replace(good, up=False, stp=1)
    assert diff(desired, HostActual(links=(down,))).ops == (SetLink(spec, ("up", "stp")),)


def test_a_vxlan_link_with_another_vni_is_replaced_and_its_entries_re_added() -> None:
    br = LinkSpec("br1", "bridge", "1")
    vx = LinkSpec("vx1", "vxlan", "1", master="br1", vni=1, port=4789)
    desired = HostDesired(links=(br, vx), fdb=(FdbSpec("vx1", "192.168.0.2", "1"),))
    actual = HostActual(
        links=(
            LinkState("br1", 5, "bridge", alias="netledger:1", up=True, stp=0, forward_delay=0),
            LinkState(
                "vx1", 6, "vxlan", alias="netledger:1", master="br1", up=True, vni=9, port=4789
            ),
        ),
        fdb=(("vx1", "192.168.0.2"),),
    )
    ops = diff(desired, actual).ops
    assert ops == (
        DeleteLink("vx1", "vxlan", "1", "replaced"),
        CreateLink(vx),
        AddFdb(FdbSpec("vx1", "192.168.0.2", "1")),
    )
