"""Network deciders: create, delete, disassociate, list and show networks.

Also the dict shape a network takes in answers (:func:`network_dict`), which the command service
uses too. Creating a network is the longest rule in the domain (address blocks, VLANs, VNIs and
bridges that must not collide), hence a module of its own.
"""

from __future__ import annotations

from typing import Any

import netaddr

from .commands import (
    NetworkCreate,
    NetworkDelete,
    NetworkDisassociate,
    NetworkList,
    NetworkShow,
    Request,
)
from .decide_common import Decision, Pending, live_network
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
    RangeTooSmall,
    VlanOutOfRange,
    VniOutOfRange,
)
from .state import NetworkState, State
from .types import Event, NetworkAssociated, NetworkCreated, NetworkDeleted, NetworkDisassociated

MAX_VNI = (1 << 24) - 1
DEFAULT_FLAT_BRIDGE = "br100"


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
