"""Projection handlers of the domain events: networks, their fixed IPs, floating IPs, reverts.

Each handler applies one event type of the registry, network or pool subjects to the rows of a
:class:`~.project_tx.Tx`, raising :class:`~.project_tx.Rejected` when the event cannot apply
(unknown network, address outside the CIDR, address not in use). :data:`HANDLERS` maps those
event types to their handler; ``project`` dispatches through it. What executors report about
hosts is projected in ``project_hosts``.
"""

from __future__ import annotations

from typing import Any

from netledger.events.reclaim_events import (
    FixedIpReclaimed,
    FixedIpReclaimSealed,
    FixedIpReconfirmed,
)
from netledger.events.revert_events import ChangeReverted, NetworkReassociated
from netledger.events.state_network import network_state
from netledger.events.types import (
    Event,
    FixedIpAllocated,
    FixedIpDeallocated,
    FixedIpFreed,
    FixedIpLeased,
    FixedIpMoved,
    FixedIpReleased,
    FloatingIpAllocated,
    FloatingIpAssociated,
    FloatingIpDeallocated,
    FloatingIpDisassociated,
    FloatingPoolCreated,
    NetworkAssociated,
    NetworkCreated,
    NetworkDeleted,
    NetworkDisassociated,
    PoolEvent,
)

from .project_tx import Rejected, Tx, cidrs_overlap, field_names, in_cidr, is_cidr
from .tables import FIXED_IPS, FLOATING_IPS, FLOATING_POOLS, NETWORKS, PROJECTS, Row

# --- registry -------------------------------------------------------------------------------


#: The fields of a NetworkCreated that are columns of its ``networks`` row.
_CREATED_COLUMNS = tuple(f for f in field_names(NetworkCreated) if f in NETWORKS.names)


def _network_created(tx: Tx, ev: NetworkCreated) -> None:
    old = tx.get(NETWORKS, (ev.network_id,))
    if old is not None and not old["deleted"]:
        raise Rejected(f"network {ev.network_id} already exists")
    if ev.cidr is None and ev.cidr_v6 is None:
        raise Rejected(f"network {ev.network_id}: no cidr nor cidr_v6")
    for cidr in (ev.cidr, ev.cidr_v6):
        if cidr is not None and not is_cidr(cidr):
            raise Rejected(f"network {ev.network_id}: bad cidr {cidr!r}")
    try:
        network_state(ev)  # what the fold refuses (a gateway outside the network, ...)
    except Exception as exc:
        raise Rejected(f"network {ev.network_id}: {exc}") from None
    row = NETWORKS.blank(**{f: getattr(ev, f) for f in _CREATED_COLUMNS})
    row["multi_host"] = int(bool(ev.multi_host))
    row["deleted"] = 0
    tx.stamp(row, "created")
    tx.put(NETWORKS, tx.stamp(row))
    tx.touch_project(ev.project, ev.network_id, set_network=True)
    tx.index.update(network_id=ev.network_id, project=ev.project, host=ev.network_host)


def _pool_created(tx: Tx, ev: FloatingPoolCreated) -> None:
    if tx.get(FLOATING_POOLS, (ev.pool,)) is not None:
        raise Rejected(f"pool {ev.pool} already exists")
    if not is_cidr(ev.cidr):
        raise Rejected(f"pool {ev.pool}: bad cidr {ev.cidr!r}")
    for other in tx.view.rows(FLOATING_POOLS.name):
        if cidrs_overlap(ev.cidr, other["cidr"]):  # never decided (PoolOverlap); the fold alike
            raise Rejected(f"pool {ev.pool} ({ev.cidr}) overlaps pool {other['pool']}")
    row = FLOATING_POOLS.blank(pool=ev.pool, cidr=ev.cidr, public_interface=ev.public_interface)
    tx.put(FLOATING_POOLS, tx.stamp(row, "created"))
    tx.index.update(pool=ev.pool)


# --- a network and its fixed IPs --------------------------------------------------------------


def _network(tx: Tx, network_id: str) -> Row:
    """The live network ``network_id`` as it stands, only to read (not a copy)."""
    net = tx.peek(NETWORKS, (network_id,))
    if net is None:
        raise Rejected(f"unknown network {network_id}")
    if net["deleted"]:
        raise Rejected(f"network {network_id} was deleted at seq {net['deleted_seq']}")
    idx = tx.index
    idx["network_id"] = network_id
    idx["project"] = net["project"]
    return net


def _live_network(tx: Tx, network_id: str) -> Row:
    """The live network ``network_id``: a copy to change and put."""
    _network(tx, network_id)
    net = tx.get(NETWORKS, (network_id,))
    assert net is not None
    return net


def _network_deleted(tx: Tx, ev: NetworkDeleted) -> None:
    net = _live_network(tx, ev.network_id)
    in_use = tx.view.select(FIXED_IPS.name, "network_id", ev.network_id)
    if in_use:  # never decided (a network is deleted once empty); the fold refuses it alike
        raise Rejected(f"network {ev.network_id} has {len(in_use)} address(es) in use")
    net["deleted"] = 1
    tx.stamp(net, "deleted")
    tx.put(NETWORKS, tx.stamp(net))


def _network_associated(tx: Tx, ev: NetworkAssociated | NetworkReassociated) -> None:
    # (NetworkReassociated: a revert's, the network's side of its NetworkAssociated: the same
    # values, set again)
    net = _live_network(tx, ev.network_id)
    net["project"] = ev.project
    tx.put(NETWORKS, tx.stamp(net))
    tx.touch_project(ev.project, ev.network_id, set_network=True)
    tx.index["project"] = ev.project


def _network_disassociated(tx: Tx, ev: NetworkDisassociated) -> None:
    net = _live_network(tx, ev.network_id)
    net["project"] = None
    tx.put(NETWORKS, tx.stamp(net))
    proj = tx.get(PROJECTS, (ev.project,))
    tx.touch_project(
        ev.project, None, set_network=proj is not None and proj["network_id"] == ev.network_id
    )
    tx.index["project"] = ev.project


def _fixed_allocated(tx: Tx, ev: FixedIpAllocated) -> None:
    net = _network(tx, ev.network_id)
    # The address naming the allocation is IPv4, or IPv6 on an IPv6-only network.
    cidr = net["cidr"] if net["cidr"] is not None else net["cidr_v6"]
    if not in_cidr(ev.address, cidr):
        raise Rejected(f"{ev.address} is not in network {ev.network_id} ({cidr})")
    if ev.address_v6 is not None and not in_cidr(ev.address_v6, net["cidr_v6"]):
        raise Rejected(f"{ev.address_v6} is not in network {ev.network_id} ({net['cidr_v6']})")
    seq, at = tx.seq, tx.env.time
    # FIXED_IPS.blank(...) and the two stamps in one C call: this runs for every allocation, the
    # most common event (a test checks that the row has exactly the table's columns).
    row = dict(
        FIXED_IPS.empty,
        network_id=ev.network_id,
        address=ev.address,
        address_v6=ev.address_v6,
        instance=ev.instance,
        mac=ev.mac,
        host=ev.host,
        project=ev.project,
        allocated=1,
        leased=0,
        leased_v6=0,
        allocated_seq=seq,
        allocated_at=at,
        updated_seq=seq,
        updated_at=at,
    )
    tx.put(FIXED_IPS, row)
    tx.touch_project(ev.project)
    idx = tx.index
    idx["address"] = ev.address
    idx["instance"] = ev.instance
    idx["host"] = ev.host
    idx["project"] = ev.project or net["project"]


def _fixed_in_use(tx: Tx, network_id: str, address: str) -> Row:
    _network(tx, network_id)
    row = tx.get(FIXED_IPS, (network_id, address))
    if row is None:
        raise Rejected(f"{address} is not in use in network {network_id}")
    tx.index.update(address=address, instance=row["instance"], host=row["host"])
    if row["address_v6"]:
        # ``audit address <IPv6>`` finds the lease, release and freeing of its allocation too.
        tx.index["address_v6"] = row["address_v6"]
    if row["project"]:
        tx.index["project"] = row["project"]
    return row


def _fixed_deallocated(tx: Tx, ev: FixedIpDeallocated) -> None:
    row = _fixed_in_use(tx, ev.network_id, ev.address)
    if ev.freed:
        tx.delete(FIXED_IPS, (ev.network_id, ev.address))
    else:
        # Held until the DHCP release (or its timeout) frees it: still reserved.
        row["allocated"] = 0
        tx.put(FIXED_IPS, tx.stamp(row))
    tx.index.update(instance=ev.instance, host=ev.host or row["host"])


def _fixed_leased(tx: Tx, ev: FixedIpLeased) -> None:
    row = _fixed_in_use(tx, ev.network_id, ev.address)
    row["leased_v6" if ev.v6 else "leased"] = 1
    tx.put(FIXED_IPS, tx.stamp(row))


def _fixed_released(tx: Tx, ev: FixedIpReleased) -> None:
    row = _fixed_in_use(tx, ev.network_id, ev.address)
    if ev.freed:
        tx.delete(FIXED_IPS, (ev.network_id, ev.address))
    else:
        row["leased_v6" if ev.v6 else "leased"] = 0
        tx.put(FIXED_IPS, tx.stamp(row))


def _fixed_freed(tx: Tx, ev: FixedIpFreed) -> None:
    _fixed_in_use(tx, ev.network_id, ev.address)
    tx.delete(FIXED_IPS, (ev.network_id, ev.address))


def _fixed_reclaimed(tx: Tx, ev: FixedIpReclaimed) -> None:
    # The index names address, instance, host and network; ``data`` carries the reason and
    # the host reports (seqs, times) that proved the instance gone: ``audit address`` shows it.
    _fixed_in_use(tx, ev.network_id, ev.address)
    tx.delete(FIXED_IPS, (ev.network_id, ev.address))
    tx.index.update(instance=ev.instance, host=ev.host)


def _fixed_reconfirmed(tx: Tx, ev: FixedIpReconfirmed) -> None:
    row = _fixed_in_use(tx, ev.network_id, ev.address)
    tx.put(FIXED_IPS, tx.stamp(row))


def _fixed_moved(tx: Tx, ev: FixedIpMoved) -> None:
    row = _fixed_in_use(tx, ev.network_id, ev.address)
    if not row["allocated"] or row["instance"] != ev.instance:
        raise Rejected(f"{ev.address} is not allocated to {ev.instance}")
    row["host"] = ev.host
    tx.put(FIXED_IPS, tx.stamp(row))
    # Indexed by the new host (``audit host``); ``data`` names the one it left.
    tx.index["host"] = ev.host


def _reclaim_sealed(tx: Tx, ev: FixedIpReclaimSealed) -> None:
    _network(tx, ev.network_id)
    tx.index.update(host=ev.host)


# --- floating IPs ----------------------------------------------------------------------------


def _pool_of(tx: Tx, ev: PoolEvent) -> Row:
    pool = tx.get(FLOATING_POOLS, (ev.pool,))
    if pool is None:
        raise Rejected(f"unknown pool {ev.pool}")
    tx.index.update(pool=ev.pool)
    return pool


def _floating(tx: Tx, ev: PoolEvent, address: str) -> Row:
    _pool_of(tx, ev)
    row = tx.get(FLOATING_IPS, (address,))
    if row is None or row["pool"] != ev.pool:
        raise Rejected(f"floating IP {address} is not allocated in pool {ev.pool}")
    return row


def _floating_allocated(tx: Tx, ev: FloatingIpAllocated) -> None:
    pool = _pool_of(tx, ev)
    if not in_cidr(ev.address, pool["cidr"]):
        raise Rejected(f"{ev.address} is not in pool {ev.pool} ({pool['cidr']})")
    row = FLOATING_IPS.blank(address=ev.address, pool=ev.pool, project=ev.project)
    tx.stamp(row, "allocated")
    tx.put(FLOATING_IPS, tx.stamp(row))
    tx.touch_project(ev.project)
    tx.index.update(address=ev.address, project=ev.project)


def _floating_associated(tx: Tx, ev: FloatingIpAssociated) -> None:
    row = _floating(tx, ev, ev.address)
    row.update(fixed_address=ev.fixed_address, network_id=ev.network_id, instance=ev.instance)
    tx.put(FLOATING_IPS, tx.stamp(row))
    tx.touch_project(ev.project)
    tx.index.update(
        address=ev.address,
        fixed_address=ev.fixed_address,
        network_id=ev.network_id,
        instance=ev.instance,
        project=ev.project,
    )


def _floating_disassociated(tx: Tx, ev: FloatingIpDisassociated) -> None:
    row = _floating(tx, ev, ev.address)
    row.update(fixed_address=None, network_id=None, instance=None)
    tx.put(FLOATING_IPS, tx.stamp(row))
    tx.touch_project(ev.project)
    tx.index.update(
        address=ev.address,
        fixed_address=ev.fixed_address,
        network_id=ev.network_id,
        instance=ev.instance or None,
        project=ev.project,
    )


def _floating_deallocated(tx: Tx, ev: FloatingIpDeallocated) -> None:
    _floating(tx, ev, ev.address)
    tx.delete(FLOATING_IPS, (ev.address,))
    tx.touch_project(ev.project)
    tx.index.update(address=ev.address, project=ev.project)


# --- reverts ---------------------------------------------------------------------------------


def _change_reverted(tx: Tx, ev: ChangeReverted) -> None:
    # The marker changes no table (its compensations, same command id, do); its index row names
    # the scope it was limited to, so ``audit network 7`` lists the revert itself.
    kind, _, value = (ev.scope or "").partition(":")
    column = {"network": "network_id", "project": "project", "pool": "pool"}.get(kind)
    if column and value:
        tx.index[column] = value


# --- dispatch -------------------------------------------------------------------------------------

HANDLERS: dict[type[Event], Any] = {
    NetworkCreated: _network_created,
    FloatingPoolCreated: _pool_created,
    NetworkDeleted: _network_deleted,
    NetworkAssociated: _network_associated,
    NetworkDisassociated: _network_disassociated,
    NetworkReassociated: _network_associated,
    FixedIpAllocated: _fixed_allocated,
    FixedIpDeallocated: _fixed_deallocated,
    FixedIpLeased: _fixed_leased,
    FixedIpReleased: _fixed_released,
    FixedIpFreed: _fixed_freed,
    FixedIpReclaimed: _fixed_reclaimed,
    FixedIpReconfirmed: _fixed_reconfirmed,
    FixedIpMoved: _fixed_moved,
    FixedIpReclaimSealed: _reclaim_sealed,
    FloatingIpAllocated: _floating_allocated,
    FloatingIpAssociated: _floating_associated,
    FloatingIpDisassociated: _floating_disassociated,
    FloatingIpDeallocated: _floating_deallocated,
    ChangeReverted: _change_reverted,
}
