"""Floating-IP deciders: create a pool; allocate, associate, disassociate and deallocate.

Every floating-IP change after allocation goes through :func:`_owned_floating`: the address must
be allocated to the project the request names, and the actor must be allowed to act for it.
"""

from __future__ import annotations

from typing import Any

import netaddr

from .commands import (
    FloatingIpAllocate,
    FloatingIpAssociate,
    FloatingIpDeallocate,
    FloatingIpDisassociate,
    FloatingPoolCreate,
    Request,
)
from .decide_common import Decision, Pending, authorize
from .errors import (
    FixedIpNotFound,
    FloatingIpAssociated,
    FloatingIpExhausted,
    FloatingIpNotAssociated,
    FloatingIpNotFound,
    FloatingIpNotOwned,
    Forbidden,
    InvalidAddress,
    PoolExists,
    PoolNotFound,
    PoolOverlap,
)
from .state import State
from .types import (
    FloatingIpAllocated,
    FloatingIpDeallocated,
    FloatingIpDisassociated,
    FloatingPoolCreated,
)
from .types import FloatingIpAssociated as FloatingIpAssociatedEvent


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
        if n.ipnet is not None and netaddr.IPSet([net]) & netaddr.IPSet([n.ipnet]):
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
    authorize(req.actor, cmd.project, f"project {cmd.project}")
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
    authorize(req.actor, project, f"floating IP {address}")
    return pool.name, f


def decide_floating_associate(state: State, req: Request, pending: Pending) -> Decision:
    cmd = req.command
    assert isinstance(cmd, FloatingIpAssociate)
    pool, f = _owned_floating(state, req, cmd.address, cmd.project)
    if netaddr.IPAddress(cmd.fixed_address).version != 4:
        # IPv6 is routed to the instance, never NATed: a floating IP maps to an IPv4 address.
        raise InvalidAddress(
            f"{cmd.fixed_address}: floating IPs are IPv4 and NAT to an IPv4 fixed address"
            " (IPv6 addresses are routed as they are)",
            address=cmd.fixed_address,
        )
    found = state.find_fixed(cmd.fixed_address)
    if found is None or not found[1].allocated:
        raise FixedIpNotFound(f"{cmd.fixed_address} is not allocated", address=cmd.fixed_address)
    n, ip = found
    owner = ip.project or n.project
    # An address no project holds (an admin's allocation by network id) is not a member's
    # either: only an admin (or the system) may point a floating IP at it (review hrev16).
    if owner != cmd.project and (owner is not None or req.actor.role not in ("admin", "system")):
        raise Forbidden(
            f"{cmd.fixed_address} belongs to another project"
            if owner is not None
            else f"{cmd.fixed_address} belongs to no project: only an admin may associate it",
            address=cmd.fixed_address,
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
