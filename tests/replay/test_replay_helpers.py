"""Shared by the replay and audit tests: a history driven through the command service, with
the state the test knows held at several points (no tests here)."""

from __future__ import annotations

import asyncio
import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from netledger.cli import cli
from netledger.events.codec import Actor
from netledger.journal.stream import Connection, last_seq
from netledger.projector import query
from netledger.service.client import Client

ALICE = Actor(project="p1", role="admin", user="alice")
BOB = Actor(project="p1", role="admin", user="bob")
CAROL = Actor(project="p2", role="admin", user="carol")


@dataclass
class Point:
    """The state the test knows held once ``seq`` was the stream's last message."""

    name: str
    seq: int
    at: datetime.datetime
    fixed: dict[str, tuple[str, int, int]]  # address -> (instance, allocated, leased)
    floating: dict[str, tuple[str | None, str | None]]  # address -> (fixed_address, instance)


@dataclass
class History:
    points: list[Point] = field(default_factory=list)
    x: str = ""  # the address three instances get in turn
    y: str = ""
    f: str = ""  # the floating IP that moves
    network_id: str = ""
    before: datetime.datetime | None = None


async def _point(
    conn: Connection,
    h: History,
    name: str,
    fixed: dict[str, tuple[str, int, int]],
    floating: dict[str, tuple[str | None, str | None]],
) -> None:
    seq = await last_seq(conn)
    # Stored-time stamps are the server's clock, on this machine: a moment taken after the
    # acknowledgement is at or after the message's; the pause keeps the next one strictly later.
    at = datetime.datetime.now(datetime.UTC)
    h.points.append(Point(name, seq, at, dict(fixed), dict(floating)))
    await asyncio.sleep(0.02)


async def build_history(conn: Connection) -> History:
    """Allocations, deallocations, one address re-allocated to three instances in turn (by
    three actors), a lease / release, and a floating IP moved between instances."""
    admin = Client(conn)
    alice, bob, carol = Client(conn, ALICE), Client(conn, BOB), Client(conn, CAROL)
    h = History(before=datetime.datetime.now(datetime.UTC))
    await asyncio.sleep(0.02)
    nets = await admin.request(
        "network.create",
        {"label": "flat", "cidr": "10.7.0.0/24", "mode": "flat_dhcp", "network_host": "net1",
         "bridge": "brflat"},
    )  # fmt: skip
    h.network_id = nid = nets["networks"][0]["id"]
    await admin.request(
        "floating_ip.pool_create",
        {"pool": "pub", "cidr": "203.0.113.0/28", "public_interface": "eth0"},
    )
    await _point(conn, h, "empty", {}, {})

    a1 = await alice.request(
        "fixed_ip.allocate", {"instance": "i-1", "network_id": nid, "host": "c1", "project": "p1"}
    )
    h.x = x = a1["address"]
    await _point(conn, h, "i-1 has x", {x: ("i-1", 1, 0)}, {})

    fl = await alice.request("floating_ip.allocate", {"project": "p1"})
    h.f = f = fl["address"]
    await alice.request(
        "floating_ip.associate", {"address": f, "project": "p1", "fixed_address": x}
    )
    await _point(conn, h, "f on i-1", {x: ("i-1", 1, 0)}, {f: (x, "i-1")})

    # bob: i-1 goes (its floating IP is disassociated with it), i-2 gets the same address
    await bob.request("fixed_ip.deallocate", {"instance": "i-1"})
    a2 = await bob.request(
        "fixed_ip.allocate", {"instance": "i-2", "network_id": nid, "host": "c2", "project": "p1"}
    )
    assert a2["address"] == x
    await _point(conn, h, "i-2 has x", {x: ("i-2", 1, 0)}, {f: (None, None)})

    await bob.request("fixed_ip.lease", {"address": x, "mac": a2["mac"]})
    a9 = await bob.request(
        "fixed_ip.allocate", {"instance": "i-9", "network_id": nid, "host": "c1", "project": "p1"}
    )
    h.y = y = a9["address"]
    await bob.request("floating_ip.associate", {"address": f, "project": "p1", "fixed_address": x})
    await _point(conn, h, "f on i-2, leased", {x: ("i-2", 1, 1), y: ("i-9", 1, 0)}, {f: (x, "i-2")})

    # carol: i-2 goes (held: its lease is out), DHCP releases it, i-3 gets it; f moves to i-9
    await carol.request("floating_ip.disassociate", {"address": f, "project": "p1"})
    await carol.request(
        "floating_ip.associate", {"address": f, "project": "p1", "fixed_address": y}
    )
    await carol.request("fixed_ip.deallocate", {"instance": "i-2"})
    await _point(conn, h, "x held", {x: ("i-2", 0, 1), y: ("i-9", 1, 0)}, {f: (y, "i-9")})
    await carol.request("fixed_ip.release", {"address": x, "mac": a2["mac"]})
    a3 = await carol.request(
        "fixed_ip.allocate", {"instance": "i-3", "network_id": nid, "host": "c3", "project": "p2"}
    )
    assert a3["address"] == x
    await _point(conn, h, "i-3 has x", {x: ("i-3", 1, 0), y: ("i-9", 1, 0)}, {f: (y, "i-9")})
    return h


def state_of(db: Path) -> tuple[dict[str, tuple[str, int, int]], dict[str, Any]]:
    """What ``show fixed-ips`` / ``show floating-ips`` would list, in the Point's shape."""
    with query.open_readonly(db) as conn:
        fixed = {
            r["address"]: (r["instance"], r["allocated"], r["leased"])
            for r in query.fixed_ips(conn)
        }
        floating = {
            r["address"]: (r["fixed_address"], r["instance"]) for r in query.floating_ips(conn)
        }
    return fixed, floating


def invoke(*args: str) -> Any:
    """The CLI in-process (call through ``asyncio.to_thread`` from async tests: it runs its
    own event loop)."""
    return CliRunner(env={"COLUMNS": "200"}).invoke(cli, list(args), catch_exceptions=False)


async def cli_json(*args: str, code: int = 0) -> Any:
    r = await asyncio.to_thread(invoke, "--json", *args)
    assert r.exit_code == code, r.output
    return json.loads(r.stdout)  # (notices go to stderr)
