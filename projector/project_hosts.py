"""Projection handlers of the host events: what each executor reports it did on its host.

Host events (``netledger.evt.host.<host>``) fill the ``hosts``, ``host_links``,
``host_addresses`` and ``host_nat`` tables. Unlike the domain handlers they never reject for
missing state: an executor reports what the kernel holds, which may predate the log (a link
left over from before a crash). :data:`HANDLERS` maps the imported event types to handlers,
:data:`BY_NAME` the newer ones matched by type name, and :func:`host_row` keeps a host's
last-seen columns for host events no table exists for.
"""

from __future__ import annotations

from typing import Any

from netledger.events.host_events import (
    HostAddressAdded,
    HostAddressRemoved,
    HostAnnounced,
    HostEvent,
    HostLinkCreated,
    HostLinkRemoved,
    HostNatApplied,
    HostReconciled,
)
from netledger.events.types import Event, HostRetired

from .project_tx import Tx, bare, to_json
from .tables import HOST_ADDRESSES, HOST_LINKS, HOST_NAT, HOSTS, Row

# --- hosts (what executors did) -----------------------------------------------------------------


def host_row(tx: Tx, host: str) -> Row:
    row = tx.get(HOSTS, (host,))
    if row is None:
        row = HOSTS.blank(host=host, first_seq=tx.seq)
    row["last_seq"] = tx.seq
    row["last_at"] = tx.env.time
    return row


def _host_announced(tx: Tx, ev: HostAnnounced) -> None:
    row = host_row(tx, ev.host)
    row.update(
        vtep_address=ev.vtep_address,
        physical_interface=ev.physical_interface,
        public_interface=ev.public_interface,
        network_host=int(bool(ev.network_host)),
        retired_seq=None,  # announced again: back in the cloud
        retired_at=None,
    )
    tx.put(HOSTS, tx.stamp(row, "announced"))


def _host_retired(tx: Tx, ev: HostRetired) -> None:
    # Written by the command service (events/decide_host.py), not by the host: the row keeps
    # what its executor last reported (its last_seq too), and says since when it is out.
    row = tx.get(HOSTS, (ev.host,))
    if row is None:
        row = HOSTS.blank(host=ev.host, first_seq=tx.seq)
    tx.put(HOSTS, tx.stamp(row, "retired"))


def _host_link_created(tx: Tx, ev: HostLinkCreated) -> None:
    tx.put(HOSTS, host_row(tx, ev.host))
    row = HOST_LINKS.blank(
        host=ev.host,
        name=ev.name,
        kind=ev.kind,
        network_id=ev.network_id,
        drift=int(bool(ev.drift)),
        detail=to_json(ev.detail),
    )
    tx.put(HOST_LINKS, tx.stamp(row, "created"))
    tx.index.update(network_id=ev.network_id)


def _host_link_removed(tx: Tx, ev: HostLinkRemoved) -> None:
    # A link left over from before a crash may never have been recorded: removing it is fine.
    tx.put(HOSTS, host_row(tx, ev.host))
    tx.delete(HOST_LINKS, (ev.host, ev.name))
    tx.index.update(network_id=ev.network_id)


def _host_address_added(tx: Tx, ev: HostAddressAdded) -> None:
    tx.put(HOSTS, host_row(tx, ev.host))
    row = HOST_ADDRESSES.blank(
        host=ev.host,
        interface=ev.interface,
        address=ev.address,
        network_id=ev.network_id,
        drift=int(bool(ev.drift)),
    )
    tx.put(HOST_ADDRESSES, tx.stamp(row, "added"))
    tx.index.update(network_id=ev.network_id, address=bare(ev.address))


def _host_address_removed(tx: Tx, ev: HostAddressRemoved) -> None:
    tx.put(HOSTS, host_row(tx, ev.host))
    tx.delete(HOST_ADDRESSES, (ev.host, ev.interface, ev.address))
    tx.index.update(network_id=ev.network_id, address=bare(ev.address))


def _host_nat_applied(tx: Tx, ev: HostNatApplied) -> None:
    # The executor replaced its whole NAT table atomically: so do we.
    row = host_row(tx, ev.host)
    row.update(
        snat_ranges=to_json(list(ev.snat_ranges)),
        nat_drift=int(bool(ev.drift)),
        snat_to=getattr(ev, "snat_to", None),
        nat_fixed_space=int(ev.fixed_space),
    )
    row["nat_seq"] = tx.seq
    tx.put(HOSTS, row)
    for old in tx.view.select(HOST_NAT.name, "host", ev.host):
        if old["floating_address"] not in ev.floating:
            tx.delete(HOST_NAT, (ev.host, old["floating_address"]))
    for floating, fixed in sorted(ev.floating.items()):
        nat = HOST_NAT.blank(host=ev.host, floating_address=floating, fixed_address=fixed)
        tx.put(HOST_NAT, tx.stamp(nat, "applied"))


def _host_nat_removed(tx: Tx, ev: HostEvent) -> None:
    row = host_row(tx, ev.host)
    row.update(snat_ranges=None, snat_to=None, nat_drift=0, nat_seq=tx.seq, nat_fixed_space=None)
    tx.put(HOSTS, row)
    for old in tx.view.select(HOST_NAT.name, "host", ev.host):
        tx.delete(HOST_NAT, (ev.host, old["floating_address"]))


def _host_reconciled(tx: Tx, ev: HostReconciled) -> None:
    row = host_row(tx, ev.host)
    row.update(
        applied_seq=ev.applied_seq,
        reconciled_at=tx.env.time,
        changes=ev.changes,
        drift_repairs=ev.drift_repairs,
        duration_ms=ev.duration_ms,
    )
    tx.put(HOSTS, row)


# --- dispatch -------------------------------------------------------------------------------------

HANDLERS: dict[type[Event], Any] = {
    HostAnnounced: _host_announced,
    HostLinkCreated: _host_link_created,
    HostLinkRemoved: _host_link_removed,
    HostAddressAdded: _host_address_added,
    HostAddressRemoved: _host_address_removed,
    HostNatApplied: _host_nat_applied,
    HostReconciled: _host_reconciled,
    HostRetired: _host_retired,
}

#: Host event types handled by name: newer executor events this module need not import.
BY_NAME: dict[str, Any] = {"HostNatRemoved": lambda tx, ev: _host_nat_removed(tx, ev)}
