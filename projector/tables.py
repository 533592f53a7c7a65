"""The projection's tables as plain data: names, primary keys and column order.

This is the contract between the pure projection (:mod:`.project`, which builds rows as dicts
keyed by these columns) and the SQLite layer (:mod:`.schema` creates the tables, :mod:`.store`
writes rows with ``executemany`` in this column order). A test checks that the migrated
database has exactly these columns.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Row = dict[str, Any]
Key = tuple[Any, ...]


def _getter(names: tuple[str, ...]) -> Callable[[Row], tuple[Any, ...]]:
    """Row -> tuple of ``names`` (itemgetter in C; a 1-tuple is wrapped by hand)."""
    if len(names) == 1:
        (name,) = names
        return lambda row: (row[name],)
    return operator.itemgetter(*names)


@dataclass(frozen=True)
class Table:
    name: str
    pk: tuple[str, ...]
    columns: tuple[str, ...]
    # Derived once: rows are built for every event, so ``blank`` must be cheap.
    names: frozenset[str] = field(init=False, repr=False, compare=False)
    empty: Row = field(init=False, repr=False, compare=False)
    #: row -> its primary key / all its values in column order (what SQLite is given)
    key_of: Callable[[Row], Key] = field(init=False, repr=False, compare=False)
    values_of: Callable[[Row], tuple[Any, ...]] = field(init=False, repr=False, compare=False)
    #: the columns outside the primary key
    others: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", frozenset(self.columns))
        object.__setattr__(self, "empty", dict.fromkeys(self.columns))
        object.__setattr__(self, "key_of", _getter(self.pk))
        object.__setattr__(self, "values_of", _getter(self.columns))
        object.__setattr__(self, "others", tuple(c for c in self.columns if c not in self.pk))

    def key(self, row: Row) -> Key:
        return self.key_of(row)

    def blank(self, **values: Any) -> Row:
        """A full row: every column present (``None`` unless given)."""
        row = self.empty.copy()
        row.update(values)
        if len(row) != len(self.empty):  # a name that is no column added a key
            unknown = set(values) - self.names
            raise KeyError(f"{self.name} has no column(s) {', '.join(sorted(unknown))}")
        return row


NETWORKS = Table(
    "networks",
    ("network_id",),
    (
        "network_id", "label", "cidr", "netmask", "gateway", "broadcast", "dhcp_start", "mode",
        "vlan", "vni", "bridge", "bridge_interface", "dns1", "dns2", "vpn_private_address",
        "vpn_public_port", "project", "multi_host", "network_host", "mtu", "cidr_v6", "deleted",
        "created_seq", "created_at", "deleted_seq", "deleted_at", "updated_seq", "updated_at",
        # added by migration 0003_ipv6 (columns are appended)
        "gateway_v6", "ipv6_mode",
    ),
)  # fmt: skip

FIXED_IPS = Table(
    "fixed_ips",
    ("network_id", "address"),
    (
        "network_id", "address", "instance", "mac", "host", "project", "allocated", "leased",
        "allocated_seq", "allocated_at", "updated_seq", "updated_at", "address_v6",
        # added by migration 0004_leased_v6
        "leased_v6",
    ),
)  # fmt: skip

FLOATING_POOLS = Table(
    "floating_pools",
    ("pool",),
    ("pool", "cidr", "public_interface", "created_seq", "created_at"),
)

FLOATING_IPS = Table(
    "floating_ips",
    ("address",),
    (
        "address", "pool", "project", "fixed_address", "network_id", "instance",
        "allocated_seq", "allocated_at", "updated_seq", "updated_at",
    ),
)  # fmt: skip

PROJECTS = Table(
    "projects",
    ("project",),
    ("project", "network_id", "first_seq", "first_at", "last_seq", "last_at"),
)

HOSTS = Table(
    "hosts",
    ("host",),
    (
        "host", "vtep_address", "physical_interface", "public_interface", "network_host",
        "announced_seq", "announced_at", "applied_seq", "reconciled_at", "changes",
        "drift_repairs", "duration_ms", "snat_ranges", "snat_to", "nat_seq", "nat_drift",
        "first_seq", "last_seq", "last_at",
        # added by migration 0005_nat_fixed_space
        "nat_fixed_space",
        # added by migration 0006_host_retired
        "retired_seq", "retired_at",
    ),
)  # fmt: skip

HOST_LINKS = Table(
    "host_links",
    ("host", "name"),
    ("host", "name", "kind", "network_id", "drift", "detail", "created_seq", "created_at"),
)

HOST_ADDRESSES = Table(
    "host_addresses",
    ("host", "interface", "address"),
    ("host", "interface", "address", "network_id", "drift", "added_seq", "added_at"),
)

HOST_NAT = Table(
    "host_nat",
    ("host", "floating_address"),
    ("host", "floating_address", "fixed_address", "applied_seq", "applied_at"),
)

EVENTS = Table(
    "events",
    ("seq",),
    (
        "seq", "time", "stream_time", "subject", "type", "event_id", "command_id",
        "actor_project", "actor_role", "actor_user", "network_id", "address", "fixed_address",
        "instance", "project", "host", "pool", "data", "address_v6",
    ),
)  # fmt: skip

REJECTED_EVENTS = Table(
    "rejected_events",
    ("seq",),
    ("seq", "subject", "type", "reason", "stream_time", "raw"),
)

#: Tables whose rows the projection changes (events and rejections are append-only).
STATE_TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        NETWORKS, FIXED_IPS, FLOATING_POOLS, FLOATING_IPS, PROJECTS, HOSTS, HOST_LINKS,
        HOST_ADDRESSES, HOST_NAT,
    )
}  # fmt: skip

ALL_TABLES: dict[str, Table] = {
    **STATE_TABLES,
    "events": EVENTS,
    "rejected_events": REJECTED_EVENTS,
}
