"""IPv6 in the projection (issue 14): the migration that adds its columns to a projection written
by earlier code, the rows of dual-stack and IPv6-only networks and their allocations, and
``audit address <IPv6>`` (from the index and from the log: equal answers)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils

from netledger.journal.stream import Connection
from netledger.projector.runner import project_until
from netledger.projector.schema import MIGRATION_NAMES, migrations, open_db
from netledger.projector.tables import ALL_TABLES
from netledger.replay import audit
from netledger.service.client import Client
from netledger.service.service import CommandService


def test_migration_adds_the_ipv6_columns_to_an_older_projection(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(str(path))
    db = sqlite_utils.Database(conn)
    migrations.apply(db, stop_before="0003_ipv6")  # what the code before issue 14 made
    db.execute(
        "INSERT INTO networks (network_id, label, cidr, mode, bridge, deleted)"
        " VALUES ('1', 'old', '10.0.0.0/24', 'vlan', 'br100', 0)"
    )
    db.execute(
        "INSERT INTO fixed_ips (network_id, address, instance, mac, allocated, leased)"
        " VALUES ('1', '10.0.0.3', 'i-1', '02:16:3e:00:00:01', 1, 0)"
    )
    conn.commit()
    cols = [r[1] for r in db.execute("PRAGMA table_info(networks)").fetchall()]
    assert "gateway_v6" not in cols
    conn.close()

    db = open_db(path)
    try:
        for name, t in ALL_TABLES.items():
            cols = [r[1] for r in db.execute(f"PRAGMA table_info({name})").fetchall()]
            assert tuple(cols) == t.columns, name
        applied = [r[0] for r in db.execute("SELECT name FROM _sqlite_migrations ORDER BY id")]
        assert applied == MIGRATION_NAMES and applied[2:4] == ["0003_ipv6", "0004_leased_v6"]
        row = db.execute(
            "SELECT label, cidr, cidr_v6, gateway_v6, ipv6_mode FROM networks"
        ).fetchone()
        assert row == ("old", "10.0.0.0/24", None, None, None)
        assert db.execute("SELECT address, address_v6, leased_v6 FROM fixed_ips").fetchall() == [
            ("10.0.0.3", None, 0)
        ]
        indexes = {r[1] for r in db.execute("PRAGMA index_list(events)").fetchall()}
        assert "idx_events_address_v6" in indexes
    finally:
        db.close()


async def test_ipv6_rows_and_audit_by_ipv6_address(
    conn: Connection, service: CommandService, tmp_path: Path
) -> None:
    c = Client(conn)
    [dual] = await c.create_networks(
        label="dual",
        cidr="10.41.0.0/24",
        cidr_v6="2001:db8:41::/48",
        mode="flat_dhcp",
        bridge="brd",
        network_host="n1",
    )
    [only] = await c.create_networks(
        label="only", cidr_v6="2001:db8:42::/64", ipv6_mode="dhcpv6", mode="vxlan", vni_start=42
    )
    a = await c.allocate_fixed_ip("i-1", network_id=dual["id"], host="c1")
    b = await c.allocate_fixed_ip("i-2", network_id=only["id"], host="c1")
    v6 = a["address_v6"]
    # the DHCP server names the allocation by its IPv6 address: same allocation
    await c.request("fixed_ip.lease", {"address": v6, "mac": a["mac"]})
    await c.deallocate_fixed_ip("i-1")
    await c.request("fixed_ip.release", {"address": v6, "mac": a["mac"]})
    again = await c.allocate_fixed_ip("i-3", network_id=dual["id"], host="c1")
    assert again["address"] == a["address"] and again["address_v6"] != v6  # another MAC

    db = tmp_path / "p.db"
    await project_until(conn, db)
    with sqlite3.connect(db) as s:
        nets = dict(
            (r[0], r[1:])
            for r in s.execute(
                "SELECT network_id, cidr, cidr_v6, gateway_v6, ipv6_mode FROM networks"
            )
        )
        fixed = sorted(s.execute("SELECT address, address_v6, instance FROM fixed_ips"))
    assert nets == {
        dual["id"]: ("10.41.0.0/24", "2001:db8:41::/64", "2001:db8:41::1", "slaac"),
        only["id"]: (None, "2001:db8:42::/64", "2001:db8:42::1", "dhcpv6"),
    }
    assert fixed == sorted(
        [
            (again["address"], again["address_v6"], "i-3"),
            (b["address"], "2001:db8:42::2", "i-2"),
        ]
    )
    assert b["address"] == b["address_v6"] == "2001:db8:42::2"

    rows = audit.from_index(db, "address", v6)
    assert [(r["type"], r["instance"]) for r in rows] == [
        ("FixedIpAllocated", "i-1"),
        ("FixedIpLeased", "i-1"),
        ("FixedIpDeallocated", "i-1"),
        ("FixedIpReleased", "i-1"),
    ]
    shown = audit.present(rows[0])
    assert shown["summary"].startswith(f"{a['address']} and {v6} allocated to i-1")
    assert await audit.from_log(conn, "address", v6, show_progress=False) == rows
    # the IPv4 address's history holds both instances
    v4 = [r["instance"] for r in audit.from_index(db, "address", a["address"])]
    assert v4[0] == "i-1" and v4[-1] == "i-3"
