"""Fixed-IP deciders: allocate, deallocate, and the DHCP lease and release of an address.

Allocation picks the network (assigning a free VLAN/VXLAN segment to a project on first use),
the MAC and the address, avoiding what earlier decisions of the same batch took (``Pending``).
On a network that serves IPv6 it also picks the IPv6 address (:func:`_pick_v6`): EUI-64 of the
MAC in the network's /64 (slaac), or the lowest free one (dhcpv6). On an IPv6-only network the
IPv6 address also names the allocation (``address``).
"""

from __future__ import annotations

import hashlib
from typing import Any

import netaddr

from .commands import FixedIpAllocate, FixedIpDeallocate, FixedIpLease, FixedIpRelease, Request
from .decide_common import Decision, Pending, authorize, fixed_result, live_network
from .errors import (
    AddressExhausted,
    FixedIpNotFound,
    InstanceNotFound,
    InvalidAddress,
    MacInUse,
    MacMismatch,
    NetworkNotAssociated,
    NoFreeNetwork,
    ProjectNotFound,
    WrongNetworkProject,
)
from .reclaim_events import FixedIpReconfirmed
from .state import FixedIp, NetworkState, State
from .types import (
    Event,
    FixedIpAllocated,
    FixedIpDeallocated,
    FixedIpLeased,
    FixedIpMoved,
    FixedIpReleased,
    FloatingIpDisassociated,
    NetworkAssociated,
)


def fixed_ip_result(n: NetworkState, ip: FixedIp) -> dict[str, Any]:
    """What an allocate answers: the allocation as it is held."""
    return {
        "address": ip.address,
        "address_v6": ip.address_v6,
        "network_id": n.network_id,
        "instance": ip.instance,
        "mac": ip.mac,
        "host": ip.host,
        "project": ip.project,
    }


def _pick_network(
    state: State, cmd: FixedIpAllocate, pending: Pending
) -> tuple[NetworkState, list[Event]]:
    if cmd.network_id is not None:
        n = live_network(state, cmd.network_id)
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
        return live_network(state, nid), []
    claimed = set(pending.project_networks.values())
    # A segment with addresses in use (an admin allocated on it by network id while no
    # project held it) is never handed to a project: its instances would be on that
    # project's VLAN (found by review).
    segmented = [
        n
        for n in state.live_networks()
        if n.net.mode in ("vlan", "vxlan")
        and n.project is None
        and n.network_id not in claimed
        and not n.fixed
        and n.network_id not in pending.addresses
        and n.network_id not in pending.addresses6
    ]
    if segmented:
        n = min(segmented, key=lambda n: (len(n.network_id), n.network_id))
        return n, [NetworkAssociated(network_id=n.network_id, project=project)]
    flat = [n for n in state.live_networks() if n.net.mode.startswith("flat") and n.project is None]
    if flat:
        return min(flat, key=lambda n: (_used(n), len(n.network_id), n.network_id)), []
    if any(n.net.mode in ("vlan", "vxlan") for n in state.live_networks()):
        raise NoFreeNetwork(f"no free network left to assign to project {project}", project=project)
    raise ProjectNotFound(
        f"project {project} has no network and none can be assigned", project=project
    )


def _used(n: NetworkState) -> int:
    return n.pool.used if n.ipnet is not None else n.in_use()


def eui64(mac: str, ipnet6: netaddr.IPNetwork) -> str:
    """The address SLAAC gives ``mac`` in ``ipnet6`` (RFC 4291 appendix A, as nova's rfc2462
    backend): netaddr's, not hand-made."""
    return str(netaddr.EUI(mac).ipv6(ipnet6.network))


def _pick_v6(n: NetworkState, mac: str, wanted: str | None, taken6: set[str]) -> str | None:
    """The IPv6 address of a new allocation (None: the network serves no IPv6). ``wanted``: an
    IPv6 address asked for (IPv6-only networks in dhcpv6 mode only)."""
    ipnet6 = n.ipnet6
    if ipnet6 is None:
        return None
    if n.pool6 is None:
        if wanted is not None:
            raise InvalidAddress(
                f"network {n.network_id} derives IPv6 addresses from the MAC (ipv6_mode slaac):"
                " give a MAC, not an address",
                address=wanted,
            )
        address = eui64(mac, ipnet6)
        if address in n.v6 or address in taken6:
            # MACs are unique per network, so is their EUI-64: this would be a broken fold.
            raise MacInUse(f"{address} (from MAC {mac}) is in use", mac=mac)
        return address
    if wanted is not None:
        if netaddr.IPAddress(wanted) not in ipnet6:
            raise InvalidAddress(f"{wanted} is not in network {n.network_id}", address=wanted)
        if not n.pool6.is_free(n.offset6(wanted)) or wanted in taken6:
            raise AddressExhausted(f"{wanted} is reserved or in use", address=wanted)
        return wanted
    for off in n.pool6.iter_free():
        candidate = n.address6(off)
        if candidate not in taken6:
            return candidate
    raise AddressExhausted(
        f"network {n.network_id} ({ipnet6}) has no free IPv6 address", network_id=n.network_id
    )


def _pick_mac(n: NetworkState, req: Request, taken: set[str]) -> str:
    """A MAC in nova's 02:16:3e prefix, derived from the command id (a retry decides the same
    one): the i-th candidate is three bytes of blake2b(command id, i). Not a seeded
    ``random.Random``: building one was ~4% of the service's CPU per allocation."""
    seed = req.command_id.encode()
    for i in range(64):
        a, b, c = hashlib.blake2b(seed, digest_size=3, salt=i.to_bytes(16, "big")).digest()
        mac = f"02:16:3e:{a & 0x7F:02x}:{b:02x}:{c:02x}"
        if mac not in n.macs and mac not in taken:
            return mac
    raise MacInUse("could not generate a unique MAC address", network_id=n.network_id)


def decide_fixed_allocate(state: State, req: Request, pending: Pending) -> Decision:
    cmd = req.command
    assert isinstance(cmd, FixedIpAllocate)
    n, pre = _pick_network(state, cmd, pending)
    project = cmd.project or n.project
    authorize(req.actor, project, f"network {n.network_id}")
    # Natural key: one address per instance and network; a retry returns the first answer —
    # unless it names another host: the instance migrated, and its address moves with it
    # (FixedIpMoved). Decisions earlier in the same batch count (``pending``): not yet folded.
    key = (n.network_id, cmd.instance)
    # (deallocated earlier in the batch: what the state still holds is going, this is new)
    held = None if key in pending.gone else n.by_instance.get(cmd.instance)
    rec = pending.instances.get(key)
    if rec is None and held is not None and n.fixed[held].allocated:
        rec = fixed_ip_result(n, n.fixed[held])
    if rec is not None:
        # The instance's allocation is its project's: another project's member may neither
        # move it nor be told its address (found by review: on a network no project holds,
        # the check above passed for any project).
        authorize(req.actor, rec["project"] or n.project, f"instance {cmd.instance}")
        host = pending.moved.get(key, rec["host"])
        if cmd.host is not None and cmd.host != host:
            moved = FixedIpMoved(
                network_id=n.network_id,
                address=rec["address"],
                instance=cmd.instance,
                mac=rec["mac"],
                host=cmd.host,
                from_host=host,
            )
            return Decision([moved], {**rec, "host": cmd.host, "moved_from": host})
        if key in pending.instances or key in pending.moved:
            return Decision([], {**rec, "host": host})
    if held is not None:
        ip = n.fixed[held]
        if not ip.allocated:  # (an allocated one was authorized above, as ``rec``)
            authorize(req.actor, ip.project or n.project, f"instance {cmd.instance}")
        if not (ip.allocated and state.unseen(n, ip)):
            return Decision([], fixed_ip_result(n, ip))
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
        return Decision([again], fixed_ip_result(n, ip))
    taken_macs = pending.macs.get(n.network_id, set())
    if cmd.mac is not None:
        if cmd.mac in n.macs or cmd.mac in taken_macs:
            raise MacInUse(f"MAC {cmd.mac} is in use in network {n.network_id}", mac=cmd.mac)
        mac = cmd.mac
    else:
        mac = _pick_mac(n, req, taken_macs)
    taken = pending.addresses.get(n.network_id, set())
    wanted_v6 = None
    if cmd.address is not None and netaddr.IPAddress(cmd.address).version == 6:
        if n.ipnet6 is None:
            raise InvalidAddress(
                f"{cmd.address} is not in network {n.network_id}, which serves no IPv6",
                address=cmd.address,
            )
        if n.ipnet is not None:
            raise InvalidAddress(
                f"{cmd.address}: give network {n.network_id} its IPv4 address; its IPv6 one is"
                " chosen with it",
                address=cmd.address,
            )
        wanted_v6 = cmd.address
    address_v6 = _pick_v6(n, mac, wanted_v6, pending.addresses6.get(n.network_id, set()))
    if n.ipnet is None:
        # IPv6-only: the IPv6 address names the allocation.
        if cmd.address is not None and wanted_v6 is None:
            raise InvalidAddress(
                f"network {n.network_id} is IPv6-only: {cmd.address} is not in it",
                address=cmd.address,
            )
        assert address_v6 is not None
        address = address_v6
    elif cmd.address is not None:
        addr = netaddr.IPAddress(cmd.address)
        if addr not in n.ipnet:
            raise InvalidAddress(
                f"{cmd.address} is not in network {n.network_id}", address=cmd.address
            )
        off = n.offset(cmd.address)
        if not n.pool.is_free(off) or n.base + off in taken:
            raise AddressExhausted(f"{cmd.address} is reserved or in use", address=cmd.address)
        address = cmd.address
    else:
        address = ""
        base = n.base
        for off in n.pool.iter_free():
            if not taken or base + off not in taken:
                address = n.address(off)
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
        address_v6=address_v6,
    )
    return Decision([*pre, ev], fixed_result(ev))


def decide_fixed_deallocate(state: State, req: Request, pending: Pending) -> Decision:
    cmd = req.command
    assert isinstance(cmd, FixedIpDeallocate)
    held = sorted(state.instance_ips.get(cmd.instance, ()))
    if cmd.network_id is not None:
        held = [h for h in held if h[0] == cmd.network_id]
    if not held:
        raise InstanceNotFound(f"instance {cmd.instance} holds no fixed IP", instance=cmd.instance)
    events: list[Event] = []
    released = []
    for network_id, address in held:
        n = state.networks[network_id]
        ip = n.fixed[address]
        authorize(req.actor, ip.project or n.project, f"instance {cmd.instance}")
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
        freed = n.net.mode == "flat" or not ip.any_lease
        events.append(
            FixedIpDeallocated(
                network_id=network_id,
                address=address,
                instance=cmd.instance,
                mac=ip.mac,
                # (moved earlier in the batch: where it is now)
                host=pending.moved.get((network_id, cmd.instance), ip.host),
                freed=freed,
                address_v6=ip.address_v6,
            )
        )
        released.append(
            {
                "address": address,
                "address_v6": ip.address_v6,
                "network_id": network_id,
                "freed": freed,
            }
        )
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


def _v6_lease(n: NetworkState, ip: FixedIp, address: str) -> bool:
    """Whether ``address`` is the IPv6 address of a dual-stack allocation (its lease is
    its own: the two end apart). On an IPv6-only network it names the allocation."""
    return (
        n.ipnet is not None
        and ip.address_v6 is not None
        and netaddr.IPAddress(address) == netaddr.IPAddress(ip.address_v6)
    )


def decide_fixed_lease(state: State, req: Request, pending: Pending) -> Decision:
    cmd = req.command
    assert isinstance(cmd, FixedIpLease)
    n, ip = _lookup_lease(state, cmd)
    v6 = _v6_lease(n, ip, cmd.address)
    leased = ip.leased_v6 if v6 else ip.leased
    result = {
        "address": ip.address,
        "network_id": n.network_id,
        "instance": ip.instance,
        "leased": True,
    }
    if leased:
        return Decision([], result)
    # A held address (deallocated, not yet released) is recorded leased too: dnsmasq serves
    # it until its release, and a dual-stack one's IPv4 lease, released and taken again while
    # its IPv6 lease holds it, must keep the IPv6 release from freeing it (review hrev19).
    return Decision(
        [
            FixedIpLeased(
                network_id=n.network_id,
                address=ip.address,
                mac=ip.mac,
                instance=ip.instance,
                v6=v6,
            )
        ],
        result,
    )


def decide_fixed_release(state: State, req: Request, pending: Pending) -> Decision:
    cmd = req.command
    assert isinstance(cmd, FixedIpRelease)
    n, ip = _lookup_lease(state, cmd)
    v6 = _v6_lease(n, ip, cmd.address)
    leased, other = (ip.leased_v6, ip.leased) if v6 else (ip.leased, ip.leased_v6)
    # A deallocated address goes back to the pool with its last lease, not its first.
    freed = not ip.allocated and not other
    result = {
        "address": ip.address,
        "network_id": n.network_id,
        "instance": ip.instance,
        "freed": freed,
    }
    if not leased and not freed:
        return Decision([], result)
    return Decision(
        [
            FixedIpReleased(
                network_id=n.network_id,
                address=ip.address,
                mac=ip.mac,
                instance=ip.instance,
                freed=freed,
                v6=v6,
            )
        ],
        result,
    )
