"""The deciders: pure functions ``decide(state, request, pending) -> Decision``.

They read :class:`~netledger.events.state.State` and never change it; the events they return are
appended by the command service and folded back into state from the log. ``Pending`` holds the
decisions already made for the same atomic batch (group commit), so that several allocations
decided together never pick the same address, MAC or network.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import netaddr

from .codec import Actor
from .commands import (
    Command,
    FixedIpAllocate,
    FixedIpDeallocate,
    FixedIpLease,
    FixedIpRelease,
    FloatingIpAllocate,
    FloatingIpAssociate,
    FloatingIpDeallocate,
    FloatingIpDisassociate,
    FloatingPoolCreate,
    NetworkCreate,
    NetworkDelete,
    NetworkDisassociate,
    NetworkList,
    NetworkShow,
    Request,
)
from .errors import (
    AddressExhausted,
    DuplicateBridge,
    DuplicateVlan,
    DuplicateVni,
    FixedIpNotFound,
    FloatingIpAssociated,
    FloatingIpExhausted,
    FloatingIpNotAssociated,
    FloatingIpNotFound,
    FloatingIpNotOwned,
    Forbidden,
    InstanceNotFound,
    InvalidAddress,
    InvalidField,
    LimitExceeded,
    MacInUse,
    MacMismatch,
    NetworkInUse,
    NetworkNotAssociated,
    NetworkNotFound,
    NetworkOverlap,
    NoFreeNetwork,
    PoolExists,
    PoolNotFound,
    PoolOverlap,
    ProjectHasNetwork,
    ProjectNotFound,
    RangeTooSmall,
    VlanOutOfRange,
    VniOutOfRange,
    WrongNetworkProject,
)
from .reclaim_events import FixedIpReconfirmed
from .state import FixedIp, NetworkState, State
from .types import (
    Event,
    FixedIpAllocated,
    FixedIpDeallocated,
    FixedIpLeased,
    FixedIpReleased,
    FloatingIpAllocated,
    FloatingIpDeallocated,
    FloatingIpDisassociated,
    FloatingPoolCreated,
    NetworkAssociated,
    NetworkCreated,
    NetworkDeleted,
    NetworkDisassociated,
)
from .types import FloatingIpAssociated as FloatingIpAssociatedEvent

MAX_VNI = (1 << 24) - 1
DEFAULT_FLAT_BRIDGE = "br100"


@dataclass
class Decision:
    events: list[Event]
    result: dict[str, Any]


@dataclass
class Pending:
    """What earlier decisions of the same batch took (not yet in state)."""

    addresses: dict[str, set[str]] = field(default_factory=dict)
    macs: dict[str, set[str]] = field(default_factory=dict)
    instances: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    project_networks: dict[str, str] = field(default_factory=dict)

    def note(self, events: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, FixedIpAllocated):
                self.addresses.setdefault(ev.network_id, set()).add(ev.address)
                self.macs.setdefault(ev.network_id, set()).add(ev.mac)
                self.instances[(ev.network_id, ev.instance)] = _fixed_result(ev)
            elif isinstance(ev, NetworkAssociated):
                self.project_networks[ev.project] = ev.network_id


# --- helpers ----------------------------------------------------------------------------


def _authorize(actor: Actor, project: str | None, what: str) -> None:
    if actor.role in ("admin", "system"):
        return
    if project is None or actor.project != project:
        raise Forbidden(
            f"project {actor.project!r} may not act on {what}", actor_project=actor.project
        )


def network_dict(
    n: NetworkCreated, project: str | None = None, deleted: bool = False
) -> dict[str, Any]:
    d = n.to_data()
    d["id"] = d.pop("network_id")
    d["project"] = project if project is not None else n.project
    if deleted:
        d["deleted"] = True
    return d


def network_state_dict(n: NetworkState) -> dict[str, Any]:
    d = network_dict(n.net, n.project, n.deleted)
    d["project"] = n.project
    d["in_use"] = n.in_use()
    d["capacity"] = n.pool.capacity
    return d


def _fixed_result(ev: FixedIpAllocated) -> dict[str, Any]:
    return {
        "address": ev.address,
        "network_id": ev.network_id,
        "instance": ev.instance,
        "mac": ev.mac,
        "host": ev.host,
        "project": ev.project,
    }


def _fixed_ip_result(n: NetworkState, ip: FixedIp) -> dict[str, Any]:
    return {
        "address": ip.address,
        "network_id": n.network_id,
        "instance": ip.instance,
        "mac": ip.mac,
        "host": ip.host,
        "project": ip.project,
    }


def _rng(request: Request) -> random.Random:
    seed = hashlib.sha256(request.command_id.encode()).digest()
    return random.Random(int.from_bytes(seed[:8], "big"))


def _live_network(state: State, network_id: str) -> NetworkState:
    n = state.networks.get(network_id)
    if n is None or n.deleted:
        raise NetworkNotFound(f"network {network_id} does not exist", network_id=network_id)
    return n


# --- networks ---------------------------------------------------------------------------


def decide_network_create(state: State, req: Request, pending: Pending) -> Decision:
    cmd = req.command
    assert isinstance(cmd, NetworkCreate)
    rng = netaddr.IPNetwork(cmd.cidr)
    if cmd.project is not None and cmd.num_networks != 1:
        raise InvalidField("project can only be given when creating one network", field="project")
    if cmd.project is not None and cmd.project in state.project_networks:
        held = state.project_networks[cmd.project]
        raise ProjectHasNetwork(
            f"project {cmd.project} already holds network {held}",
            project=cmd.project,
            network_id=held,
        )
    if cmd.network_size > rng.size or cmd.num_networks * cmd.network_size > rng.size:
        raise RangeTooSmall(
            f"{cmd.cidr} holds {rng.size} addresses, too few for {cmd.num_networks} networks"
            f" of {cmd.network_size}",
            cidr=cmd.cidr,
        )
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
    live = list(state.live_networks())
    used_vlans = {n.net.vlan: n.network_id for n in live if n.net.vlan is not None}
    used_vnis = {n.net.vni: n.network_id for n in live if n.net.vni is not None}
    bridges: dict[str, NetworkState] = {n.net.bridge: n for n in live}
    taken = netaddr.IPSet(n.ipnet for n in live)
    pools = netaddr.IPSet(p.ipnet for p in state.pools.values())
    base = int(rng.network)
    events: list[Event] = []
    for i in range(cmd.num_networks):
        block = netaddr.IPNetwork(
            f"{netaddr.IPAddress(base + i * cmd.network_size)}/{32 - (cmd.network_size.bit_length() - 1)}"
        )
        if taken & netaddr.IPSet([block]):
            other = next(
                n
                for n in live
                if n.ipnet in block
                or block in n.ipnet
                or n.ipnet.first <= block.first <= n.ipnet.last
            )
            raise NetworkOverlap(
                f"{block} overlaps network {other.network_id} ({other.ipnet})",
                cidr=str(block),
                network_id=other.network_id,
            )
        if pools & netaddr.IPSet([block]):
            raise NetworkOverlap(f"{block} overlaps a floating IP pool", cidr=str(block))
        vlan = cmd.vlan_start + i if cmd.mode == "vlan" else None
        vni = cmd.vni_start + i if cmd.mode == "vxlan" else None
        if vlan is not None and vlan in used_vlans:
            raise DuplicateVlan(f"VLAN {vlan} is used by network {used_vlans[vlan]}", vlan=vlan)
        if vni is not None and vni in used_vnis:
            raise DuplicateVni(f"VNI {vni} is used by network {used_vnis[vni]}", vni=vni)
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
        holder = bridges.get(bridge)
        if holder is not None and not (
            cmd.mode.startswith("flat") and holder.net.mode.startswith("flat")
        ):
            raise DuplicateBridge(
                f"bridge {bridge} is used by network {holder.network_id}", bridge=bridge
            )
        vpn = cmd.mode == "vlan"
        if block.size < (8 if vpn else 4):
            raise RangeTooSmall(
                f"network_size {cmd.network_size} leaves no usable address", cidr=str(block)
            )
        ev = NetworkCreated(
            network_id=str(state.next_network_number + i),
            label=cmd.label if cmd.num_networks == 1 else f"{cmd.label}_{i}",
            cidr=str(block),
            netmask=str(block.netmask),
            gateway=str(block[1]),
            broadcast=str(block.broadcast if block.broadcast is not None else block[-1]),
            dhcp_start=str(block[3] if vpn else block[2]),
            mode=cmd.mode,
            vlan=vlan,
            vni=vni,
            bridge=bridge,
            bridge_interface=cmd.bridge_interface,
            dns1=cmd.dns1,
            dns2=cmd.dns2,
            vpn_private_address=str(block[2]) if vpn else None,
            vpn_public_port=cmd.vpn_start + i if vpn else None,
            project=cmd.project,
            multi_host=cmd.multi_host,
            network_host=cmd.network_host,
            mtu=cmd.mtu,
            cidr_v6=cmd.cidr_v6 if cmd.num_networks == 1 else None,
        )
        events.append(ev)
        if cmd.project is not None:
            # Also on the project's subject: its OCC check is what keeps a concurrent first-use
            # assignment from giving the project a second network.
            events.append(NetworkAssociated(network_id=ev.network_id, project=cmd.project))
    return Decision(
        events, {"networks": [network_dict(e) for e in events if isinstance(e, NetworkCreated)]}
    )


def _check_network_empty(n: NetworkState) -> None:
    if n.fixed:
        raise NetworkInUse(
            f"network {n.network_id} has {len(n.fixed)} address(es) in use", network_id=n.network_id
        )


def decide_network_delete(state: State, req: Request, pending: Pending) -> Decision:
    cmd = req.command
    assert isinstance(cmd, NetworkDelete)
    n = _live_network(state, cmd.network_id)
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
    n = _live_network(state, cmd.network_id)
    if n.project is None:
        raise NetworkNotAssociated(
            f"network {n.network_id} has no project", network_id=n.network_id
        )
    _check_network_empty(n)
    return Decision(
        [NetworkDisassociated(network_id=n.network_id, project=n.project)],
        {"network_id": n.network_id, "project": None, "was": n.project},
    )


def decide_network_list(state: State, req: Request, pending: Pending) -> Decision:
    cmd = req.command
    assert isinstance(cmd, NetworkList)
    nets = [
        network_state_dict(n)
        for n in sorted(state.live_networks(), key=lambda n: (len(n.network_id), n.network_id))
        if cmd.project is None or n.project == cmd.project
    ]
    return Decision([], {"networks": nets})


def decide_network_show(state: State, req: Request, pending: Pending) -> Decision:
    cmd = req.command
    assert isinstance(cmd, NetworkShow)
    n = state.networks.get(cmd.network_id)
    if n is None:
        raise NetworkNotFound(f"network {cmd.network_id} does not exist", network_id=cmd.network_id)
    return Decision([], {"network": network_state_dict(n)})


# --- fixed IPs --------------------------------------------------------------------------


def _pick_network(
    state: State, cmd: FixedIpAllocate, pending: Pending
) -> tuple[NetworkState, list[Event]]:
    if cmd.network_id is not None:
        n = _live_network(state, cmd.network_id)
        owner = n.project or next(
            (p for p, nid in pending.project_networks.items() if nid == n.network_id), None
        )
        if owner is not None and cmd.project is not None and owner != cmd.project:
            raise WrongNetworkProject(
                f"network {n.network_id} belongs to project {owner}, not {cmd.project}",
                network_id=n.network_id,
            )
        if owner is None and cmd.project is not None and n.net.mode in ("vlan", "vxlan"):
            # Allocating for a project on a segment no project holds would leave the segment
            # free, and the next project's first use would be handed a VLAN with this one's
            # instance on it. Segments are given out by project (lowest free first) instead.
            raise NetworkNotAssociated(
                f"network {n.network_id} is not associated with project {cmd.project}: allocate"
                " by project to have a network assigned",
                network_id=n.network_id,
                project=cmd.project,
            )
        return n, []
    project = cmd.project
    assert project is not None
    nid = pending.project_networks.get(project) or state.project_networks.get(project)
    if nid is not None:
        return _live_network(state, nid), []
    claimed = set(pending.project_networks.values())
    segmented = [
        n
        for n in state.live_networks()
        if n.net.mode in ("vlan", "vxlan") and n.project is None and n.network_id not in claimed
    ]
    if segmented:
        n = min(segmented, key=lambda n: (len(n.network_id), n.network_id))
        return n, [NetworkAssociated(network_id=n.network_id, project=project)]
    flat = [n for n in state.live_networks() if n.net.mode.startswith("flat") and n.project is None]
    if flat:
        return min(flat, key=lambda n: (n.pool.used, len(n.network_id), n.network_id)), []
    if any(n.net.mode in ("vlan", "vxlan") for n in state.live_networks()):
        raise NoFreeNetwork(f"no free network left to assign to project {project}", project=project)
    raise ProjectNotFound(
        f"project {project} has no network and none can be assigned", project=project
    )


def _pick_mac(n: NetworkState, req: Request, taken: set[str]) -> str:
    rng = _rng(req)
    for _ in range(64):
        a, b, c = rng.randrange(128), rng.randrange(256), rng.randrange(256)
        mac = f"02:16:3e:{a:02x}:{b:02x}:{c:02x}"
        if mac not in n.macs and mac not in taken:
            return mac
    raise MacInUse("could not generate a unique MAC address", network_id=n.network_id)


def decide_fixed_allocate(state: State, req: Request, pending: Pending) -> Decision:
    cmd = req.command
    assert isinstance(cmd, FixedIpAllocate)
    n, pre = _pick_network(state, cmd, pending)
    project = cmd.project or n.project
    _authorize(req.actor, project, f"network {n.network_id}")
    # Natural key: one address per instance and network; a retry returns the first answer.
    if (n.network_id, cmd.instance) in pending.instances:
        return Decision([], dict(pending.instances[(n.network_id, cmd.instance)]))
    held = n.by_instance.get(cmd.instance)
    if held is not None:
        ip = n.fixed[held]
        if not (ip.allocated and state.unseen(n, ip)):
            return Decision([], _fixed_ip_result(n, ip))
        # Its host does not see the instance right now, yet the client is told the address is
        # its own: record that, so the allocation counts as new (restarting the reclaim grace)
        # and a reclaim decided on the earlier state fails its OCC check on this network.
        again = FixedIpReconfirmed(
            network_id=n.network_id,
            address=ip.address,
            instance=ip.instance,
            mac=ip.mac,
            host=ip.host,
        )
        return Decision([again], _fixed_ip_result(n, ip))
    taken_macs = pending.macs.get(n.network_id, set())
    if cmd.mac is not None:
        if cmd.mac in n.macs or cmd.mac in taken_macs:
            raise MacInUse(f"MAC {cmd.mac} is in use in network {n.network_id}", mac=cmd.mac)
        mac = cmd.mac
    else:
        mac = _pick_mac(n, req, taken_macs)
    taken = pending.addresses.get(n.network_id, set())
    if cmd.address is not None:
        addr = netaddr.IPAddress(cmd.address)
        if addr not in n.ipnet:
            raise InvalidAddress(
                f"{cmd.address} is not in network {n.network_id}", address=cmd.address
            )
        if not n.pool.is_free(n.offset(cmd.address)) or cmd.address in taken:
            raise AddressExhausted(f"{cmd.address} is reserved or in use", address=cmd.address)
        address = cmd.address
    else:
        address = ""
        for off in n.pool.iter_free():
            candidate = n.address(off)
            if candidate not in taken:
                address = candidate
                break
        if not address:
            raise AddressExhausted(
                f"network {n.network_id} ({n.ipnet}) has no free address", network_id=n.network_id
            )
    ev = FixedIpAllocated(
        network_id=n.network_id,
        address=address,
        instance=cmd.instance,
        mac=mac,
        host=cmd.host,
        project=project,
    )
    return Decision([*pre, ev], _fixed_result(ev))


def decide_fixed_deallocate(state: State, req: Request, pending: Pending) -> Decision:
    cmd = req.command
    assert isinstance(cmd, FixedIpDeallocate)
    held = sorted(state.instance_ips.get(cmd.instance, set()))
    if cmd.network_id is not None:
        held = [h for h in held if h[0] == cmd.network_id]
    if not held:
        raise InstanceNotFound(f"instance {cmd.instance} holds no fixed IP", instance=cmd.instance)
    events: list[Event] = []
    released = []
    for network_id, address in held:
        n = state.networks[network_id]
        ip = n.fixed[address]
        _authorize(req.actor, ip.project or n.project, f"instance {cmd.instance}")
        for f in state.floating_for_fixed(network_id, address):
            events.append(
                FloatingIpDisassociated(
                    pool=f.pool,
                    address=f.address,
                    project=f.project,
                    fixed_address=address,
                    network_id=network_id,
                    instance=cmd.instance,
                    reason="fixed ip deallocated",
                )
            )
        freed = n.net.mode == "flat" or not ip.leased
        events.append(
            FixedIpDeallocated(
                network_id=network_id,
                address=address,
                instance=cmd.instance,
                mac=ip.mac,
                host=ip.host,
                freed=freed,
            )
        )
        released.append({"address": address, "network_id": network_id, "freed": freed})
    return Decision(events, {"instance": cmd.instance, "deallocated": released})


def _lookup_lease(state: State, cmd: FixedIpLease) -> tuple[NetworkState, FixedIp]:
    found = state.find_fixed(cmd.address)
    if found is None:
        raise FixedIpNotFound(f"{cmd.address} is not allocated", address=cmd.address)
    n, ip = found
    if ip.mac != cmd.mac:
        raise MacMismatch(
            f"{cmd.address} belongs to MAC {ip.mac}, not {cmd.mac}",
            address=cmd.address,
            mac=cmd.mac,
        )
    return n, ip


def decide_fixed_lease(state: State, req: Request, pending: Pending) -> Decision:
    cmd = req.command
    assert isinstance(cmd, FixedIpLease)
    n, ip = _lookup_lease(state, cmd)
    result = {
        "address": ip.address,
        "network_id": n.network_id,
        "instance": ip.instance,
        "leased": True,
    }
    if ip.leased or not ip.allocated:
        return Decision([], {**result, "leased": ip.leased})
    return Decision(
        [
            FixedIpLeased(
                network_id=n.network_id, address=ip.address, mac=ip.mac, instance=ip.instance
            )
        ],
        result,
    )


def decide_fixed_release(state: State, req: Request, pending: Pending) -> Decision:
    cmd = req.command
    assert isinstance(cmd, FixedIpRelease)
    n, ip = _lookup_lease(state, cmd)
    freed = not ip.allocated
    result = {
        "address": ip.address,
        "network_id": n.network_id,
        "instance": ip.instance,
        "freed": freed,
    }
    if not ip.leased and not freed:
        return Decision([], result)
    return Decision(
        [
            FixedIpReleased(
                network_id=n.network_id,
                address=ip.address,
                mac=ip.mac,
                instance=ip.instance,
                freed=freed,
            )
        ],
        result,
    )


# --- floating IPs -----------------------------------------------------------------------


def decide_pool_create(state: State, req: Request, pending: Pending) -> Decision:
    cmd = req.command
    assert isinstance(cmd, FloatingPoolCreate)
    if cmd.pool in state.pools:
        raise PoolExists(f"pool {cmd.pool} exists", pool=cmd.pool)
    net = netaddr.IPNetwork(cmd.cidr)
    for p in state.pools.values():
        if netaddr.IPSet([net]) & netaddr.IPSet([p.ipnet]):
            raise PoolOverlap(f"{cmd.cidr} overlaps pool {p.name} ({p.ipnet})", pool=p.name)
    for n in state.live_networks():
        if netaddr.IPSet([net]) & netaddr.IPSet([n.ipnet]):
            raise PoolOverlap(
                f"{cmd.cidr} overlaps network {n.network_id} ({n.ipnet})", network_id=n.network_id
            )
    ev = FloatingPoolCreated(pool=cmd.pool, cidr=cmd.cidr, public_interface=cmd.public_interface)
    return Decision(
        [ev], {"pool": cmd.pool, "cidr": cmd.cidr, "public_interface": cmd.public_interface}
    )


def decide_floating_allocate(state: State, req: Request, pending: Pending) -> Decision:
    cmd = req.command
    assert isinstance(cmd, FloatingIpAllocate)
    _authorize(req.actor, cmd.project, f"project {cmd.project}")
    if cmd.pool is not None:
        if cmd.pool not in state.pools:
            raise PoolNotFound(f"pool {cmd.pool} does not exist", pool=cmd.pool)
        pools = [state.pools[cmd.pool]]
    else:
        pools = [state.pools[k] for k in sorted(state.pools)]
        if not pools:
            raise PoolNotFound("no floating IP pool exists")
    for p in pools:
        for off in p.pool.iter_free():
            ev = FloatingIpAllocated(pool=p.name, address=p.address(off), project=cmd.project)
            return Decision([ev], {"address": ev.address, "pool": p.name, "project": cmd.project})
    raise FloatingIpExhausted("no free floating IP", pool=cmd.pool)


def _owned_floating(state: State, req: Request, address: str, project: str) -> tuple[str, Any]:
    found = state.find_floating(address)
    if found is None or found[1] is None:
        raise FloatingIpNotFound(f"floating IP {address} is not allocated", address=address)
    pool, f = found
    assert f is not None
    if f.project != project:
        raise FloatingIpNotOwned(
            f"floating IP {address} does not belong to project {project}", address=address
        )
    _authorize(req.actor, project, f"floating IP {address}")
    return pool.name, f


def decide_floating_associate(state: State, req: Request, pending: Pending) -> Decision:
    cmd = req.command
    assert isinstance(cmd, FloatingIpAssociate)
    pool, f = _owned_floating(state, req, cmd.address, cmd.project)
    found = state.find_fixed(cmd.fixed_address)
    if found is None or not found[1].allocated:
        raise FixedIpNotFound(f"{cmd.fixed_address} is not allocated", address=cmd.fixed_address)
    n, ip = found
    owner = ip.project or n.project
    if owner is not None and owner != cmd.project:
        raise Forbidden(
            f"{cmd.fixed_address} belongs to another project", address=cmd.fixed_address
        )
    result = {
        "address": cmd.address,
        "fixed_address": cmd.fixed_address,
        "network_id": n.network_id,
        "instance": ip.instance,
        "project": cmd.project,
    }
    if f.fixed_address == cmd.fixed_address:
        return Decision([], result)
    if f.fixed_address is not None:
        raise FloatingIpAssociated(
            f"{cmd.address} is associated with {f.fixed_address}: disassociate first",
            address=cmd.address,
        )
    ev = FloatingIpAssociatedEvent(
        pool=pool,
        address=cmd.address,
        project=cmd.project,
        fixed_address=cmd.fixed_address,
        network_id=n.network_id,
        instance=ip.instance,
    )
    return Decision([ev], result)


def decide_floating_disassociate(state: State, req: Request, pending: Pending) -> Decision:
    cmd = req.command
    assert isinstance(cmd, FloatingIpDisassociate)
    pool, f = _owned_floating(state, req, cmd.address, cmd.project)
    if f.fixed_address is None:
        raise FloatingIpNotAssociated(f"{cmd.address} is not associated", address=cmd.address)
    ev = FloatingIpDisassociated(
        pool=pool,
        address=cmd.address,
        project=cmd.project,
        fixed_address=f.fixed_address,
        network_id=f.network_id,
        instance=f.instance or "",
        reason="requested",
    )
    return Decision([ev], {"address": cmd.address, "was": f.fixed_address, "project": cmd.project})


def decide_floating_deallocate(state: State, req: Request, pending: Pending) -> Decision:
    cmd = req.command
    assert isinstance(cmd, FloatingIpDeallocate)
    pool, f = _owned_floating(state, req, cmd.address, cmd.project)
    if f.fixed_address is not None:
        raise FloatingIpAssociated(
            f"{cmd.address} is associated with {f.fixed_address}: disassociate first",
            address=cmd.address,
        )
    ev = FloatingIpDeallocated(pool=pool, address=cmd.address, project=cmd.project)
    return Decision([ev], {"address": cmd.address, "pool": pool, "deallocated": True})


Decider = Callable[[State, Request, Pending], Decision]

DECIDERS: dict[type[Command], Decider] = {
    NetworkCreate: decide_network_create,
    NetworkDelete: decide_network_delete,
    NetworkDisassociate: decide_network_disassociate,
    NetworkList: decide_network_list,
    NetworkShow: decide_network_show,
    FixedIpAllocate: decide_fixed_allocate,
    FixedIpDeallocate: decide_fixed_deallocate,
    FixedIpLease: decide_fixed_lease,
    FixedIpRelease: decide_fixed_release,
    FloatingPoolCreate: decide_pool_create,
    FloatingIpAllocate: decide_floating_allocate,
    FloatingIpAssociate: decide_floating_associate,
    FloatingIpDisassociate: decide_floating_disassociate,
    FloatingIpDeallocate: decide_floating_deallocate,
}


def decide(state: State, req: Request, pending: Pending | None = None) -> Decision:
    """Decide one request on ``state`` (plus ``pending`` decisions of the same batch)."""
    cmd = req.command
    if cmd.ADMIN_ONLY and req.actor.role not in ("admin", "system"):
        raise Forbidden(f"{cmd.NAME} needs the admin role", command=cmd.NAME)
    return DECIDERS[type(cmd)](state, req, pending if pending is not None else Pending())
