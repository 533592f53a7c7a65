"""Network deciders: create, delete, disassociate, list and show networks.

Also the dict shape a network takes in answers (:func:`network_dict`), which the command service
uses too. Creating a network is the longest rule in the domain (address blocks, VLANs, VNIs and
bridges that must not collide), hence a module of its own: the range is split around the
networks and pools in use as nova-network did (:func:`free_blocks`), and the size of each
network, when not given, is nova's too (:func:`chosen_network_size`). docs/domain.md says how.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from typing import Any

import netaddr

from .commands import (
    DEFAULT_NETWORK_SIZE,
    MIN_NETWORK_SIZE,
    V6_PREFIXLEN,
    NetworkCreate,
    NetworkDelete,
    NetworkDisassociate,
    NetworkList,
    NetworkShow,
    Request,
)
from .decide_common import Decision, Pending, authorize, live_network
from .errors import (
    DuplicateBridge,
    DuplicateVlan,
    DuplicateVni,
    InvalidField,
    LimitExceeded,
    NetworkInUse,
    NetworkNotAssociated,
    NetworkNotFound,
    NetworkOverlap,
    ProjectHasNetwork,
    RangeExhausted,
    RangeTooSmall,
    VlanOutOfRange,
    VniOutOfRange,
)
from .ids import SEGMENT_LINK_NAME
from .state import NetworkState, State
from .types import Event, NetworkAssociated, NetworkCreated, NetworkDeleted, NetworkDisassociated

MAX_VNI = (1 << 24) - 1
DEFAULT_FLAT_BRIDGE = "br100"
#: Addresses in one IPv6 network (a /64).
V6_BLOCK = 1 << (128 - V6_PREFIXLEN)


def network_dict(n: NetworkCreated, project: str | None = None) -> dict[str, Any]:
    d = n.to_data()
    d["id"] = d.pop("network_id")
    # Both names: `show networks` (the projection) calls it network_id, as every other answer
    # naming a network does; `id` stays (a contract).
    d["network_id"] = d["id"]
    d["project"] = project if project is not None else n.project
    return d


def network_state_dict(n: NetworkState) -> dict[str, Any]:
    d = network_dict(n.net, n.project)
    d["project"] = n.project
    d["in_use"] = n.in_use()
    d["capacity"] = n.capacity()
    return d


def chosen_network_size(cmd: NetworkCreate) -> tuple[int | None, str | None]:
    """The size of each network, and a notice when it was capped.

    Given: that size. Not given: nova's rule (nova-manage and the os-networks API extension),
    the range divided by the number of networks, capped at the default (256) with a notice
    ("Subnet(s) too large, defaulting to /24"). **fix**: below the cap nova took the size of
    the whole range, so a /24 split in 4 was refused; here it is rounded down to a power of
    two (a /24 in 3 gives 64 each). May return less than MIN_NETWORK_SIZE (the decider refuses).
    None for IPv6-only networks (each is a /64).
    """
    if cmd.network_size is not None:
        return cmd.network_size, None
    if cmd.cidr is None:
        return None, None
    rng = netaddr.IPNetwork(cmd.cidr)
    share = rng.size // cmd.num_networks
    size = 1 << (share.bit_length() - 1) if share else 0
    if size <= DEFAULT_NETWORK_SIZE:
        return size, None
    prefix = 32 - (DEFAULT_NETWORK_SIZE.bit_length() - 1)
    return DEFAULT_NETWORK_SIZE, (
        f"network_size not given: {cmd.cidr} split in {cmd.num_networks} would give networks of"
        f" {size} addresses; defaulting to {DEFAULT_NETWORK_SIZE} (/{prefix}). Give network_size"
        " (--network-size) to override."
    )


def network_create_answer(cmd: NetworkCreate, created: Sequence[NetworkCreated]) -> dict[str, Any]:
    """The answer to a network create: the networks (each with its ``network_size``), the size
    chosen, whether it was computed, and the notices. Also right for a retry of a create that
    already landed (it depends only on the command and the events)."""
    size, notice = chosen_network_size(cmd)
    return {
        "networks": [
            {
                **network_dict(e),
                "network_size": netaddr.IPNetwork(e.cidr).size if e.cidr is not None else None,
            }
            for e in created
        ],
        "network_size": size,
        "network_size_computed": cmd.network_size is None and cmd.cidr is not None,
        "notices": [notice] if notice else [],
    }


def merged_intervals(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive ``(first, last)`` address intervals, sorted and merged into disjoint ones."""
    out: list[tuple[int, int]] = []
    for first, last in sorted(intervals):
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return out


def free_blocks(
    first: int, last: int, size: int, count: int, taken: Sequence[tuple[int, int]]
) -> list[int]:
    """The first addresses of the first ``count`` blocks of ``size`` addresses in
    ``first..last`` (``first`` aligned on ``size``) that overlap no interval of ``taken``
    (sorted, disjoint, inclusive); all the free blocks there are when fewer.

    nova walked the range block by block; this jumps over a taken interval to the next aligned
    block after it, so a /8 in use inside the range costs one step, not 2^22. O(count + taken).
    """
    starts: list[int] = []
    cursor = first
    j = 0
    while len(starts) < count and cursor + size - 1 <= last:
        while j < len(taken) and taken[j][1] < cursor:
            j += 1
        if j < len(taken) and taken[j][0] <= cursor + size - 1:
            # ``first`` is aligned on ``size`` and so is every block: align up from the end.
            cursor = (taken[j][1] // size + 1) * size
            continue
        starts.append(cursor)
        cursor += size
    return starts


def _block(start: int, size: int) -> netaddr.IPNetwork:
    return netaddr.IPNetwork(f"{netaddr.IPAddress(start, 4)}/{32 - (size.bit_length() - 1)}")


def _broadcast(block: netaddr.IPNetwork) -> str:
    return str(block.broadcast if block.broadcast is not None else block[-1])


def _block6(start: int) -> netaddr.IPNetwork:
    return netaddr.IPNetwork(f"{netaddr.IPAddress(start, 6)}/{V6_PREFIXLEN}")


def _check_range_not_inside(cmd: NetworkCreate, rng: netaddr.IPNetwork, state: State) -> None:
    """A range inside (or equal to) a network or pool in use has no free subnet at all: name
    the holder (nova: "cidr already in use", "conflicts with existing supernet")."""
    for n in state.live_networks():
        if n.ipnet is None:
            continue
        if n.ipnet.first <= rng.first and rng.last <= n.ipnet.last:
            how = "is" if n.ipnet.size == rng.size else "lies inside"
            raise NetworkOverlap(
                f"{cmd.cidr} {how} network {n.network_id} ({n.ipnet})",
                cidr=cmd.cidr,
                network_id=n.network_id,
            )
    for name, p in state.pools.items():
        if p.ipnet.first <= rng.first and rng.last <= p.ipnet.last:
            raise NetworkOverlap(
                f"{cmd.cidr} lies inside floating IP pool {name} ({p.ipnet})",
                cidr=cmd.cidr,
                pool=name,
            )


def _walk(
    rng: netaddr.IPNetwork, block: int, count: int, holders: list[tuple[netaddr.IPNetwork, str]]
) -> tuple[list[int], str]:
    """The first ``count`` free blocks of ``block`` addresses in ``rng`` around what
    ``holders`` (prefix, who) hold, and the holders met there, named for an error."""
    inside = sorted(
        ((net, who) for net, who in holders if net.first <= rng.last and rng.first <= net.last),
        key=lambda h: h[0].first,
    )
    taken = merged_intervals((net.first, net.last) for net, _ in inside)
    starts = free_blocks(rng.first, rng.last, block, count, taken)
    named = ", ".join(f"{who} ({net})" for net, who in inside[:4])
    more = f" and {len(inside) - 4} more" if len(inside) > 4 else ""
    return starts, named + more


def _split(cmd: NetworkCreate, size: int, rng: netaddr.IPNetwork, state: State) -> list[int]:
    """nova's split (``_validate_cidrs``): walk the range in blocks of ``size``, skip every
    block that overlaps a network in use (larger, equal or smaller) or a floating IP pool, take
    the first ``num_networks`` free ones; refuse when fewer are free."""
    _check_range_not_inside(cmd, rng, state)
    holders = [
        (n.ipnet, f"network {n.network_id}") for n in state.live_networks() if n.ipnet is not None
    ]
    holders += [(p.ipnet, f"floating IP pool {name}") for name, p in state.pools.items()]
    starts, in_use = _walk(rng, size, cmd.num_networks, holders)
    if len(starts) < cmd.num_networks:
        raise RangeExhausted(
            f"{cmd.cidr} has {len(starts)} free subnet(s) of {size} addresses,"
            f" {cmd.num_networks} requested (in use there: {in_use})",
            cidr=cmd.cidr,
            network_size=size,
            requested=cmd.num_networks,
            found=len(starts),
        )
    return starts


def _split_v6(cmd: NetworkCreate, state: State) -> list[int]:
    """The same split for IPv6, one /64 per network: walk ``cidr_v6`` /64 by /64 from its
    first, skip every /64 that overlaps a prefix in use (a live network's ``cidr_v6``, served
    or only recorded by older code), take the first ``num_networks``. Refused: a prefix that
    holds fewer /64s than networks (``range_too_small``), one that is or lies inside a prefix
    in use (``network_overlap``), too few free /64s (``range_exhausted``). **fix**: nova took
    /64 number *i* of the flag's range for network *i* whatever was in use, so a second create
    with the same range handed out the same /64s again."""
    assert cmd.cidr_v6 is not None
    rng = netaddr.IPNetwork(cmd.cidr_v6)
    held = 1 << (V6_PREFIXLEN - rng.prefixlen)
    if cmd.num_networks > held:
        raise RangeTooSmall(
            f"{cmd.cidr_v6} holds {held} /{V6_PREFIXLEN}(s), too few for {cmd.num_networks}"
            " networks",
            cidr=cmd.cidr_v6,
        )
    holders = [
        (netaddr.IPNetwork(n.net.cidr_v6), f"network {n.network_id}")
        for n in state.live_networks()
        if n.net.cidr_v6 is not None
    ]
    for net, who in holders:
        if net.first <= rng.first and rng.last <= net.last:
            how = "is" if net.size == rng.size else "lies inside"
            raise NetworkOverlap(
                f"{cmd.cidr_v6} {how} the IPv6 prefix of {who} ({net})",
                cidr=cmd.cidr_v6,
                network_id=who.split()[-1],
            )
    starts, in_use = _walk(rng, V6_BLOCK, cmd.num_networks, holders)
    if len(starts) < cmd.num_networks:
        raise RangeExhausted(
            f"{cmd.cidr_v6} has {len(starts)} free /{V6_PREFIXLEN}(s), {cmd.num_networks}"
            f" requested (in use there: {in_use})",
            cidr=cmd.cidr_v6,
            prefixlen=V6_PREFIXLEN,
            requested=cmd.num_networks,
            found=len(starts),
        )
    return starts


def _check_v4_size(cmd: NetworkCreate, size: int, rng: netaddr.IPNetwork) -> None:
    if size < MIN_NETWORK_SIZE:
        raise RangeTooSmall(
            f"{cmd.cidr} holds {rng.size} addresses, too few for {cmd.num_networks} networks"
            f" of at least {MIN_NETWORK_SIZE}",
            cidr=cmd.cidr,
        )
    if size > rng.size or cmd.num_networks * size > rng.size:
        raise RangeTooSmall(
            f"{cmd.cidr} holds {rng.size} addresses, too few for {cmd.num_networks} networks"
            f" of {size}",
            cidr=cmd.cidr,
        )
    if size < (8 if cmd.mode == "vlan" else 4):
        raise RangeTooSmall(f"network_size {size} leaves no usable address", cidr=cmd.cidr)


def decide_network_create(state: State, req: Request, pending: Pending) -> Decision:
    cmd = req.command
    assert isinstance(cmd, NetworkCreate)
    rng = netaddr.IPNetwork(cmd.cidr) if cmd.cidr is not None else None
    if cmd.project is not None and cmd.num_networks != 1:
        raise InvalidField("project can only be given when creating one network", field="project")
    if cmd.project is not None and cmd.project in state.project_networks:
        held = state.project_networks[cmd.project]
        raise ProjectHasNetwork(
            f"project {cmd.project} already holds network {held}",
            project=cmd.project,
            network_id=held,
        )
    size, _ = chosen_network_size(cmd)
    if rng is not None:
        assert size is not None
        _check_v4_size(cmd, size, rng)
    vpn = cmd.mode == "vlan"
    if cmd.mode == "vlan":
        last = cmd.vlan_start + cmd.num_networks - 1
        if cmd.vlan_start < 1 or last > 4094:
            raise VlanOutOfRange(
                f"VLAN ids {cmd.vlan_start}..{last} fall outside 1..4094", vlan_start=cmd.vlan_start
            )
    if cmd.mode == "vlan" and cmd.vpn_start + cmd.num_networks - 1 > 65535:
        raise LimitExceeded(
            f"VPN ports {cmd.vpn_start}..{cmd.vpn_start + cmd.num_networks - 1} exceed 65535",
            field="vpn_start",
        )
    if cmd.mode == "vxlan":
        last = cmd.vni_start + cmd.num_networks - 1
        if cmd.vni_start < 1 or last > MAX_VNI:
            raise VniOutOfRange(
                f"VNIs {cmd.vni_start}..{last} fall outside 1..{MAX_VNI}", vni_start=cmd.vni_start
            )
    starts = _split(cmd, size, rng, state) if rng is not None and size is not None else []
    starts6 = _split_v6(cmd, state) if cmd.cidr_v6 is not None else []
    live = list(state.live_networks())
    used_vlans = {n.net.vlan: n.network_id for n in live if n.net.vlan is not None}
    used_vnis = {n.net.vni: n.network_id for n in live if n.net.vni is not None}
    bridges: dict[str, NetworkState] = {n.net.bridge: n for n in live}
    events: list[Event] = []
    created: list[NetworkCreated] = []
    # Numbered over the networks created, as nova's ``index`` (the skipped blocks take no VLAN,
    # VNI, VPN port or label suffix). nova also added the count of networks in its database and
    # silently moved past a VLAN in use; a VLAN, VNI or bridge in use is refused here instead.
    for i in range(cmd.num_networks):
        block = _block(starts[i], size) if starts and size is not None else None
        block6 = _block6(starts6[i]) if starts6 else None
        vlan = cmd.vlan_start + i if cmd.mode == "vlan" else None
        vni = cmd.vni_start + i if cmd.mode == "vxlan" else None
        if vlan is not None and vlan in used_vlans:
            free = _free_run(used_vlans, cmd.num_networks, cmd.vlan_start, 4094)
            raise DuplicateVlan(
                f"VLAN {vlan} is used by network {used_vlans[vlan]}"
                + (f" (--vlan-start {free} is free for {cmd.num_networks})" if free else ""),
                vlan=vlan,
                free_start=free,
            )
        if vni is not None and vni in used_vnis:
            free = _free_run(used_vnis, cmd.num_networks, cmd.vni_start, MAX_VNI)
            raise DuplicateVni(
                f"VNI {vni} is used by network {used_vnis[vni]}"
                + (f" (--vni-start {free} is free for {cmd.num_networks})" if free else ""),
                vni=vni,
                free_start=free,
            )
        if cmd.mode == "vlan":
            bridge = (
                f"{cmd.bridge}{vlan}"
                if cmd.bridge and cmd.num_networks > 1
                else cmd.bridge or f"br{vlan}"
            )
        elif cmd.mode == "vxlan":
            bridge = (
                f"{cmd.bridge}{vni}"
                if cmd.bridge and cmd.num_networks > 1
                else cmd.bridge or f"brvx{vni}"
            )
        else:
            bridge = cmd.bridge or DEFAULT_FLAT_BRIDGE
        if len(bridge) > 15:
            raise InvalidField(
                f"bridge name {bridge!r} is longer than 15 characters", field="bridge"
            )
        if SEGMENT_LINK_NAME.fullmatch(bridge):
            # The executors name a network's VXLAN / VLAN link so (executor/fragments.py):
            # a bridge of that name would be taken for (or replaced by) one of them on a host
            # serving both networks (found by review).
            raise InvalidField(
                f"bridge name {bridge!r} is the name of a VXLAN or VLAN link (vx<VNI>,"
                " vlan<N>): choose another",
                field="bridge",
            )
        holder = bridges.get(bridge)
        if holder is not None and not (
            cmd.mode.startswith("flat") and holder.net.mode.startswith("flat")
        ):
            raise DuplicateBridge(
                f"bridge {bridge} is used by network {holder.network_id}", bridge=bridge
            )
        ev = NetworkCreated(
            network_id=str(state.next_network_number + i),
            label=cmd.label if cmd.num_networks == 1 else f"{cmd.label}_{i}",
            cidr=None if block is None else str(block),
            netmask=None if block is None else str(block.netmask),
            gateway=None if block is None else str(block[1]),
            broadcast=None if block is None else _broadcast(block),
            dhcp_start=None if block is None else str(block[3] if vpn else block[2]),
            mode=cmd.mode,
            vlan=vlan,
            vni=vni,
            bridge=bridge,
            bridge_interface=cmd.bridge_interface,
            dns1=cmd.dns1,
            dns2=cmd.dns2,
            vpn_private_address=str(block[2]) if vpn and block is not None else None,
            vpn_public_port=cmd.vpn_start + i if vpn else None,
            project=cmd.project,
            multi_host=cmd.multi_host,
            network_host=cmd.network_host,
            mtu=cmd.mtu,
            cidr_v6=None if block6 is None else str(block6),
            gateway_v6=None if block6 is None else str(block6[1]),
            ipv6_mode=None if block6 is None else cmd.ipv6_mode,
        )
        events.append(ev)
        created.append(ev)
        if cmd.project is not None:
            # Also on the project's subject: its OCC check is what keeps a concurrent first-use
            # assignment from giving the project a second network.
            events.append(NetworkAssociated(network_id=ev.network_id, project=cmd.project))
    return Decision(events, network_create_answer(cmd, created))


def _check_network_empty(n: NetworkState) -> None:
    if n.fixed:
        raise NetworkInUse(
            f"network {n.network_id} has {len(n.fixed)} address(es) in use", network_id=n.network_id
        )


def decide_network_delete(state: State, req: Request, pending: Pending) -> Decision:
    cmd = req.command
    assert isinstance(cmd, NetworkDelete)
    n = live_network(state, cmd.network_id)
    _check_network_empty(n)
    if n.project is not None:
        raise NetworkInUse(
            f"network {n.network_id} is associated with project {n.project}: disassociate first",
            network_id=n.network_id,
            project=n.project,
        )
    return Decision([NetworkDeleted(network_id=n.network_id)], {"deleted": n.network_id})


def decide_network_disassociate(state: State, req: Request, pending: Pending) -> Decision:
    cmd = req.command
    assert isinstance(cmd, NetworkDisassociate)
    n = live_network(state, cmd.network_id)
    if n.project is None:
        raise NetworkNotAssociated(
            f"network {n.network_id} has no project", network_id=n.network_id
        )
    _check_network_empty(n)
    return Decision(
        [NetworkDisassociated(network_id=n.network_id, project=n.project)],
        {"network_id": n.network_id, "project": None, "was": n.project},
    )


def _visible(req: Request, n: NetworkState) -> bool:
    """What a member may see (nova's ``project_only="allow_none"``): its project's networks
    and those no project holds; an admin (or the system) sees all."""
    return req.actor.role in ("admin", "system") or n.project in (None, req.actor.project)


def decide_network_list(state: State, req: Request, pending: Pending) -> Decision:
    cmd = req.command
    assert isinstance(cmd, NetworkList)
    if cmd.project is not None:
        authorize(req.actor, cmd.project, f"project {cmd.project}'s networks")
    nets = [
        network_state_dict(n)
        for n in sorted(state.live_networks(), key=lambda n: (len(n.network_id), n.network_id))
        if (cmd.project is None or n.project == cmd.project) and _visible(req, n)
    ]
    return Decision([], {"networks": nets})


def decide_network_show(state: State, req: Request, pending: Pending) -> Decision:
    cmd = req.command
    assert isinstance(cmd, NetworkShow)
    n = state.networks.get(cmd.network_id)
    if n is None or not _visible(req, n):
        # (another project's network is not found: its existence is not told either)
        raise NetworkNotFound(f"network {cmd.network_id} does not exist", network_id=cmd.network_id)
    return Decision([], {"network": network_state_dict(n)})


def _free_run(used: Container[int], count: int, start: int, last: int) -> int | None:
    """The first id from which ``count`` ids in a row are unused, looking from ``start`` up,
    then from 1 (what a refused ``--vlan-start`` / ``--vni-start`` could be instead; None when
    no such run fits under ``last``). Steps over a used id's run, not one id at a time."""
    for lo in (max(start, 1), 1):
        first = lo
        while first + count - 1 <= last:
            clash = next((v for v in range(first, first + count) if v in used), None)
            if clash is None:
                return first
            first = clash + 1
    return None
