"""Bad input against a real nats-server and command service: every refusal names its stable
error code and leaves the stream exactly as it was.

Requests go through :class:`Client` where it can express them, and as raw bytes on
``netledger.cmd.<name>`` where it cannot (oversized, non-msgpack, odd envelopes). The CLI is
checked for its exit statuses and error output.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
from click.testing import CliRunner

from netledger.cli import cli
from netledger.events.codec import Actor
from netledger.events.commands import MAX_REQUEST_BYTES
from netledger.events.errors import NetledgerError
from netledger.journal.stream import Connection, last_seq
from netledger.service.client import Client
from netledger.service.service import CommandService

PA = Actor(project="pa", role="member", user="alice")


@dataclass
class World:
    """A small cloud: two VLAN networks, pa holding network 1, a pool, one floating IP."""

    conn: Connection
    admin: Client
    fixed_a: dict[str, Any]
    floating_a: str


@pytest.fixture
async def world(conn: Connection, service: CommandService) -> AsyncIterator[World]:
    admin = Client(conn, timeout=5.0, deadline=10.0)
    await admin.create_networks(label="v", cidr="10.0.0.0/23", num_networks=2, vlan_start=100)
    fixed_a = await admin.allocate_fixed_ip("vm-a", project="pa", host="c1")
    await admin.request("floating_ip.pool_create", {"pool": "public", "cidr": "203.0.113.0/28"})
    floating = await admin.request("floating_ip.allocate", {"project": "pa"})
    yield World(conn, admin, fixed_a, floating["address"])


async def refused(
    w: World, code: str, name: str, args: dict[str, Any], actor: Actor | None = None
) -> NetledgerError:
    """``name`` must fail with exactly ``code`` and append nothing."""
    before = await last_seq(w.conn)
    with pytest.raises(NetledgerError) as info:
        await w.admin.request(name, args, actor=actor)
    assert info.value.code == code, f"{info.value.code}: {info.value.message}"
    assert await last_seq(w.conn) == before, "a refused command changed the stream"
    return info.value


async def raw_request(conn: Connection, name: str, data: bytes) -> dict[str, Any]:
    # The admin subject: a raw request's actor may claim any role there (NATS permissions, not
    # the service, decide who may publish to it).
    msg = await conn.nc.request(f"netledger.admin.cmd.{name}", data, timeout=5.0)
    reply = msgpack.unpackb(msg.data, raw=False)
    assert isinstance(reply, dict)
    return reply


async def raw_refused(w: World, code: str, name: str, data: bytes) -> dict[str, Any]:
    before = await last_seq(w.conn)
    reply = await raw_request(w.conn, name, data)
    assert reply["ok"] is False, reply
    err = reply["error"]
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"]
    assert await last_seq(w.conn) == before, "a refused request changed the stream"
    return dict(err)


def pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


# --- malformed values ------------------------------------------------------------------------

CREATE = {"label": "x", "cidr": "10.50.0.0/24", "vlan_start": 500}

MALFORMED = [
    ("network.create", {**CREATE, "cidr": "10.50.0.0"}, "invalid_cidr"),
    ("network.create", {**CREATE, "cidr": "10.50.0.0/33"}, "invalid_cidr"),
    ("network.create", {**CREATE, "cidr": "300.50.0.0/24"}, "invalid_cidr"),
    ("network.create", {**CREATE, "cidr": "10.50.0.1/24"}, "invalid_cidr"),
    ("network.create", {**CREATE, "cidr": "fd00::/64"}, "invalid_cidr"),
    ("network.create", {**CREATE, "cidr": "ten.fifty/24"}, "invalid_cidr"),
    ("network.create", {**CREATE, "cidr": ""}, "invalid_cidr"),
    ("network.create", {**CREATE, "cidr_v6": "10.51.0.0/24"}, "invalid_cidr"),
    ("floating_ip.pool_create", {"pool": "p2", "cidr": "198.51.100.0/-1"}, "invalid_cidr"),
    ("network.create", {**CREATE, "mode": "bogus"}, "invalid_field"),
    ("network.create", {**CREATE, "label": ""}, "invalid_field"),
    ("network.create", {**CREATE, "label": " "}, "invalid_field"),
    ("network.create", {**CREATE, "network_size": 100}, "invalid_field"),
    ("network.create", {**CREATE, "network_size": 2}, "limit_exceeded"),
    ("network.create", {**CREATE, "num_networks": 0}, "limit_exceeded"),
    ("network.create", {**CREATE, "mtu": 100}, "limit_exceeded"),
    ("network.create", {**CREATE, "bridge": "a-bridge-name-too-long"}, "invalid_field"),
    ("network.create", {**CREATE, "dns1": "8.8.8"}, "invalid_address"),
    ("floating_ip.pool_create", {"pool": "huge", "cidr": "100.64.0.0/10"}, "limit_exceeded"),
    ("fixed_ip.allocate", {"instance": "i", "project": "pa", "mac": "zz"}, "invalid_mac"),
    (
        "fixed_ip.allocate",
        {"instance": "i", "project": "pa", "mac": "01:00:5e:00:00:01"},
        "invalid_mac",
    ),
    (
        "fixed_ip.allocate",
        {"instance": "i", "project": "pa", "address": "10.0.0.999"},
        "invalid_address",
    ),
    ("fixed_ip.allocate", {"instance": "i"}, "invalid_field"),
    ("fixed_ip.lease", {"address": "10.0.0.3"}, "invalid_field"),
    ("fixed_ip.lease", {"address": "nope", "mac": "02:00:00:00:00:01"}, "invalid_address"),
    ("floating_ip.associate", {"address": "203.0.113.1", "project": "pa"}, "invalid_field"),
]


@pytest.mark.parametrize(
    ("name", "args", "code"),
    MALFORMED,
    ids=[f"{n}-{c}-{i}" for i, (n, _, c) in enumerate(MALFORMED)],
)
async def test_malformed_values(world: World, name: str, args: dict[str, Any], code: str) -> None:
    err = await refused(world, code, name, args)
    assert err.message


# --- refused by the state --------------------------------------------------------------------

CONFLICTS = [
    ("network.create", {**CREATE, "cidr": "10.0.0.0/24"}, "network_overlap"),  # the same range
    ("network.create", {**CREATE, "cidr": "10.0.0.0/23"}, "range_exhausted"),  # split around it
    ("network.create", {**CREATE, "cidr": "10.0.1.128/25", "network_size": 128}, "network_overlap"),
    ("network.create", {**CREATE, "cidr": "203.0.113.0/28", "network_size": 16}, "network_overlap"),
    ("network.create", {**CREATE, "vlan_start": 0}, "vlan_out_of_range"),
    ("network.create", {**CREATE, "vlan_start": 4095}, "vlan_out_of_range"),
    (
        "network.create",
        {**CREATE, "cidr": "10.50.0.0/23", "num_networks": 2, "vlan_start": 4094},
        "vlan_out_of_range",
    ),
    ("network.create", {**CREATE, "vlan_start": 101}, "duplicate_vlan"),
    ("network.create", {**CREATE, "mode": "flat"}, "duplicate_bridge"),
    ("network.create", {**CREATE, "cidr": "10.50.0.0/25", "network_size": 256}, "range_too_small"),
    ("network.create", {**CREATE, "project": "pa"}, "project_has_network"),
    ("network.delete", {"network_id": "99"}, "network_not_found"),
    ("network.delete", {"network_id": "1"}, "network_in_use"),
    ("network.disassociate", {"network_id": "2"}, "network_not_associated"),
    ("network.show", {"network_id": "99"}, "network_not_found"),
    ("fixed_ip.allocate", {"instance": "i", "network_id": "99"}, "network_not_found"),
    ("fixed_ip.allocate", {"instance": "i", "project": "pb", "network_id": "1"}, "wrong_project"),
    (
        "fixed_ip.allocate",
        {"instance": "i", "project": "pb", "network_id": "2"},
        "network_not_associated",
    ),
    (
        "fixed_ip.allocate",
        {"instance": "i", "project": "pa", "address": "10.0.0.1"},
        "address_exhausted",
    ),
    (
        "fixed_ip.allocate",
        {"instance": "i", "project": "pa", "address": "10.0.1.9"},
        "invalid_address",
    ),
    ("fixed_ip.deallocate", {"instance": "ghost"}, "instance_not_found"),
    ("fixed_ip.lease", {"address": "10.0.0.200", "mac": "02:00:00:00:00:01"}, "fixed_ip_not_found"),
    ("floating_ip.allocate", {"project": "pa", "pool": "nope"}, "pool_not_found"),
    ("floating_ip.pool_create", {"pool": "public", "cidr": "198.51.100.0/24"}, "pool_exists"),
    ("floating_ip.pool_create", {"pool": "other", "cidr": "203.0.113.0/24"}, "pool_overlap"),
    ("floating_ip.pool_create", {"pool": "other", "cidr": "10.0.0.0/28"}, "pool_overlap"),
    (
        "floating_ip.deallocate",
        {"address": "203.0.113.9", "project": "pa"},
        "floating_ip_not_found",
    ),
    (
        "floating_ip.disassociate",
        {"address": "192.0.2.1", "project": "pa"},
        "floating_ip_not_found",
    ),
]


@pytest.mark.parametrize(
    ("name", "args", "code"),
    CONFLICTS,
    ids=[f"{n}-{c}-{i}" for i, (n, _, c) in enumerate(CONFLICTS)],
)
async def test_refused_by_state(world: World, name: str, args: dict[str, Any], code: str) -> None:
    await refused(world, code, name, args)


async def test_mac_mismatch_and_mac_in_use(world: World) -> None:
    a = world.fixed_a
    await refused(
        world,
        "mac_mismatch",
        "fixed_ip.lease",
        {"address": a["address"], "mac": "02:00:00:00:00:99"},
    )
    await refused(
        world,
        "mac_in_use",
        "fixed_ip.allocate",
        {"instance": "vm-x", "project": "pa", "mac": a["mac"]},
    )


async def test_unknown_project_and_no_free_network(world: World) -> None:
    await world.admin.allocate_fixed_ip("vm-b", project="pb")  # takes network 2, the last one
    await refused(world, "no_free_network", "fixed_ip.allocate", {"instance": "i", "project": "pc"})


async def test_unknown_project_without_networks(conn: Connection, service: CommandService) -> None:
    w = World(conn, Client(conn, timeout=5.0, deadline=10.0), {}, "")
    await refused(
        w, "project_not_found", "fixed_ip.allocate", {"instance": "i", "project": "nobody"}
    )
    await refused(w, "pool_not_found", "floating_ip.allocate", {"project": "nobody"})


async def test_another_projects_floating_ip(world: World) -> None:
    fip, fixed = world.floating_a, world.fixed_a["address"]
    b = await world.admin.allocate_fixed_ip("vm-b", project="pb")
    for name in ("floating_ip.deallocate", "floating_ip.disassociate"):
        await refused(world, "floating_ip_not_owned", name, {"address": fip, "project": "pb"})
    await refused(
        world,
        "floating_ip_not_owned",
        "floating_ip.associate",
        {"address": fip, "fixed_address": b["address"], "project": "pb"},
    )
    # pa's floating IP onto pb's fixed IP, and pa acting on pb's behalf.
    await refused(
        world,
        "forbidden",
        "floating_ip.associate",
        {"address": fip, "fixed_address": b["address"], "project": "pa"},
    )
    fip_b = (await world.admin.request("floating_ip.allocate", {"project": "pb"}))["address"]
    await refused(
        world, "forbidden", "floating_ip.deallocate", {"address": fip_b, "project": "pb"}, actor=PA
    )
    # Deallocation while associated, then the same after disassociation goes through.
    await world.admin.request(
        "floating_ip.associate", {"address": fip, "fixed_address": fixed, "project": "pa"}
    )
    await refused(
        world, "floating_ip_associated", "floating_ip.deallocate", {"address": fip, "project": "pa"}
    )
    await world.admin.request(
        "floating_ip.disassociate", {"address": fip, "project": "pa"}, actor=PA
    )
    await world.admin.request("floating_ip.deallocate", {"address": fip, "project": "pa"}, actor=PA)


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("network.create", CREATE),
        ("network.delete", {"network_id": "2"}),
        ("network.disassociate", {"network_id": "1"}),
        ("floating_ip.pool_create", {"pool": "mine", "cidr": "198.51.100.0/24"}),
        ("fixed_ip.allocate", {"instance": "i", "project": "pb"}),
        ("fixed_ip.deallocate", {"instance": "vm-b"}),
        ("floating_ip.allocate", {"project": "pb"}),
    ],
)
async def test_members_are_forbidden_outside_their_project(
    world: World, name: str, args: dict[str, Any]
) -> None:
    if name == "fixed_ip.deallocate":
        await world.admin.allocate_fixed_ip("vm-b", project="pb")
    await refused(world, "forbidden", name, args, actor=PA)


# --- subject-unsafe ids ----------------------------------------------------------------------

BAD_IDS = ["a.b", "*", ">", "", "x" * 65, "a b", "-x", "a\x00b", "ä", "a>", "foo.*"]

ID_FIELDS: list[tuple[str, dict[str, Any], str]] = [
    ("fixed_ip.allocate", {"project": "pa"}, "instance"),
    ("fixed_ip.allocate", {"instance": "i"}, "project"),
    ("fixed_ip.allocate", {"instance": "i"}, "network_id"),
    ("fixed_ip.allocate", {"instance": "i", "project": "pa"}, "host"),
    ("fixed_ip.deallocate", {}, "instance"),
    ("network.delete", {}, "network_id"),
    ("network.show", {}, "network_id"),
    ("network.list", {}, "project"),
    ("network.create", {"label": "x", "cidr": "10.50.0.0/24"}, "project"),
    ("network.create", {"label": "x", "cidr": "10.50.0.0/24"}, "network_host"),
    ("floating_ip.pool_create", {"cidr": "198.51.100.0/24"}, "pool"),
    ("floating_ip.allocate", {"project": "pa"}, "pool"),
    ("floating_ip.allocate", {}, "project"),
    ("floating_ip.deallocate", {"address": "203.0.113.1"}, "project"),
]


@pytest.mark.parametrize("bad", BAD_IDS, ids=lambda b: repr(b)[:12])
async def test_subject_unsafe_ids_are_refused(world: World, bad: str) -> None:
    before = await last_seq(world.conn)
    for name, args, field in ID_FIELDS:
        err = await refused(world, "invalid_id", name, {**args, field: bad})
        assert err.details.get("field") == field, (name, field, err.details)
    # Ids in the request envelope: the command id and the actor's project.
    for payload in (
        {"command_id": bad, "args": {"instance": "i", "project": "pa"}},
        {"actor": {"project": bad, "role": "member"}, "args": {"instance": "i", "project": "pa"}},
    ):
        await raw_refused(world, "invalid_id", "fixed_ip.allocate", pack(payload))
    assert await last_seq(world.conn) == before


async def test_longest_valid_id_is_accepted(world: World) -> None:
    name = "x" * 64
    got = await world.admin.allocate_fixed_ip(name, project="pa", host="h-" + "y" * 62)
    assert got["instance"] == name


# --- the request itself ----------------------------------------------------------------------


async def test_oversized_request(world: World) -> None:
    big = {
        "command_id": "big-1",
        "args": {"instance": "i", "project": "pa", "pad": "a" * MAX_REQUEST_BYTES},
    }
    data = pack(big)
    assert len(data) > MAX_REQUEST_BYTES
    err = await raw_refused(world, "request_too_large", "fixed_ip.allocate", data)
    assert str(MAX_REQUEST_BYTES) in err["message"]
    # Size is checked before parsing: garbage that large gets the same answer.
    await raw_refused(
        world, "request_too_large", "network.create", b"\xc1" * (MAX_REQUEST_BYTES + 1)
    )
    # ...and so does an unknown command.
    await raw_refused(world, "request_too_large", "no.such", b"\x00" * (MAX_REQUEST_BYTES + 1))


async def test_request_just_under_the_limit_is_parsed(world: World) -> None:
    payload = {"args": {"instance": "i", "project": "pa", "pad": ""}}
    filler = MAX_REQUEST_BYTES - len(pack(payload)) - 16
    data = pack({"args": {"instance": "i", "project": "pa", "pad": "a" * filler}})
    assert len(data) <= MAX_REQUEST_BYTES
    # Under the limit it reaches validation (and fails there, on the unknown argument).
    err = await raw_refused(world, "invalid_field", "fixed_ip.allocate", data)
    assert err["details"]["field"] == "pad"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b'{"args": {"instance": "i"}}',
        b"\x81\xa4args",
        b"\x92\x01",
        pack({"args": {}}) + b"\x00",
    ],
    ids=["empty", "never-used-byte", "json", "truncated", "truncated-array", "trailing-bytes"],
)
async def test_non_msgpack_request(world: World, data: bytes) -> None:
    await raw_refused(world, "invalid_request", "fixed_ip.allocate", data)


@pytest.mark.parametrize(
    "obj",
    [[1, 2], "fixed_ip.allocate", 7, None, {1: "x"}],
    ids=["array", "string", "int", "nil", "int-keys"],
)
async def test_request_that_is_not_a_map(world: World, obj: Any) -> None:
    await raw_refused(world, "invalid_request", "fixed_ip.allocate", pack(obj))


@pytest.mark.parametrize(
    "name", ["fixed_ip.steal", "nope", "network", "network.create.now", "NETWORK.CREATE"]
)
async def test_unknown_command(world: World, name: str) -> None:
    before = await last_seq(world.conn)
    with pytest.raises(NetledgerError) as info:
        await world.admin.request(name, {"instance": "i"})
    assert info.value.code == "unknown_command"
    assert await last_seq(world.conn) == before


WRONG_TYPES = [
    ("network.create", {**CREATE, "num_networks": "3"}, "invalid_field"),
    ("network.create", {**CREATE, "num_networks": 1.0}, "invalid_field"),
    ("network.create", {**CREATE, "vlan_start": True}, "invalid_field"),
    ("network.create", {**CREATE, "multi_host": "yes"}, "invalid_field"),
    ("network.create", {**CREATE, "cidr": 167772160}, "invalid_field"),
    ("network.create", {**CREATE, "label": ["x"]}, "invalid_field"),
    ("fixed_ip.allocate", {"instance": 5, "project": "pa"}, "invalid_id"),
    ("fixed_ip.allocate", {"instance": "i", "project": {"id": "pa"}}, "invalid_id"),
    ("fixed_ip.allocate", {"instance": "i", "project": "pa", "mac": 2}, "invalid_field"),
    ("fixed_ip.lease", {"address": 167772163, "mac": "02:00:00:00:00:01"}, "invalid_field"),
    (
        "floating_ip.pool_create",
        {"pool": "p", "cidr": "198.51.100.0/24", "public_interface": 3},
        "invalid_field",
    ),
]


@pytest.mark.parametrize(
    ("name", "args", "code"),
    WRONG_TYPES,
    ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(WRONG_TYPES)],
)
async def test_wrong_field_types(world: World, name: str, args: dict[str, Any], code: str) -> None:
    await refused(world, code, name, args)


async def test_unknown_arguments(world: World) -> None:
    err = await refused(
        world,
        "invalid_field",
        "fixed_ip.allocate",
        {"instance": "i", "project": "pa", "colour": "red"},
    )
    assert err.details["field"] == "colour"
    err = await refused(world, "invalid_field", "network.list", {"zebra": 1, "apple": 2})
    assert err.details["field"] == "apple"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"args": [["instance", "i"]]}, "args"),
        ({"args": "instance=i"}, "args"),
        ({"args": {"instance": "i", "project": "pa"}, "actor": ["admin"]}, "actor"),
        ({"args": {"instance": "i", "project": "pa"}, "actor": {"role": "root"}}, "actor.role"),
        ({"args": {"instance": "i", "project": "pa"}, "actor": {"role": 1}}, "role"),
    ],
)
async def test_malformed_envelope_fields(world: World, payload: dict[str, Any], field: str) -> None:
    err = await raw_refused(world, "invalid_field", "fixed_ip.allocate", pack(payload))
    assert err["details"]["field"] == field


async def test_a_refusal_is_not_remembered_as_done(world: World) -> None:
    """Retrying a refused command id once the cause is gone does the work (nothing was stored
    under that id the first time)."""
    args = {"instance": "vm-late", "project": "pb"}
    with pytest.raises(NetledgerError) as info:
        await world.admin.request("fixed_ip.allocate", args, command_id="late-1", actor=PA)
    assert info.value.code == "forbidden"
    before = await last_seq(world.conn)
    got = await world.admin.request("fixed_ip.allocate", args, command_id="late-1")
    assert got["instance"] == "vm-late" and got["network_id"] == "2"
    # NetworkAssociated + FixedIpAllocated: the stream check in refused() can see appends.
    assert await last_seq(world.conn) == before + 2


# --- the CLI ----------------------------------------------------------------------------------


async def netledger(url: str, *argv: str) -> tuple[int, str, str]:
    """Run the real CLI in a child process (the service runs in this test's event loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "netledger.cli",
        "--nats",
        url,
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_errors_name_their_code(world: World, nats_url: str) -> None:
    before = await last_seq(world.conn)
    status, out, err = await netledger(
        nats_url, "fixed-ip", "allocate", "--instance", "a.b", "--project", "pa"
    )
    assert status == 1, (out, err)
    assert err.startswith("error [invalid_id]: "), err
    assert out == ""

    status, out, err = await netledger(
        nats_url, "--json", "network", "create", "--label", "x", "--cidr", "10.0.0.0/24"
    )
    assert status == 1, (out, err)
    body = json.loads(out)
    assert body["error"]["code"] == "network_overlap"
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]

    status, out, err = await netledger(
        nats_url,
        "--json",
        "network",
        "create",
        "--label",
        "x",
        "--cidr",
        "10.9.0.0/24",
        "--vlan-start",
        "4095",
    )
    assert status == 1 and json.loads(out)["error"]["code"] == "vlan_out_of_range"

    status, out, err = await netledger(
        nats_url, "floating-ip", "deallocate", "--address", world.floating_a, "--project", "pb"
    )
    assert status == 1 and err.startswith("error [floating_ip_not_owned]: "), err
    assert await last_seq(world.conn) == before


async def test_cli_success_json_shape(world: World, nats_url: str) -> None:
    status, out, err = await netledger(
        nats_url, "--json", "fixed-ip", "allocate", "--instance", "vm-cli", "--project", "pa"
    )
    assert status == 0, err
    answer = json.loads(out)
    assert set(answer) == {"address", "address_v6", "network_id", "instance", "mac", "host"}
    assert answer["address_v6"] is None  # the world's networks are IPv4 only


@pytest.mark.parametrize(
    "argv",
    [
        ["fixed-ip", "allocate", "--project", "pa"],  # --instance missing
        ["fixed-ip", "allocate", "--instance", "i"],  # neither --project nor --network
        ["network", "create", "--label", "x", "--cidr", "10.0.0.0/24", "--mode", "bogus"],
        ["network", "create", "--label", "x", "--cidr", "10.0.0.0/24", "--num-networks", "two"],
        ["network", "frobnicate"],
        ["no-such-command"],
        ["--json", "fixed-ip", "allocate", "--instance", "i"],
    ],
)
def test_cli_usage_errors_exit_2(argv: list[str]) -> None:
    # No server is needed: click refuses these before anything connects.
    result = CliRunner().invoke(cli, ["--nats", "nats://127.0.0.1:9", *argv])
    assert result.exit_code == 2, result.output
    assert "Usage:" in result.output or "Error:" in result.output


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "fixed-ip", "allocate", "--instance", "i"],
        ["fixed-ip", "allocate", "--instance", "i", "--json"],
        ["network", "create", "--label", "x", "--mode", "bogus", "-f", "json"],
        ["--json-lines", "no-such-command"],
        ["replay", "--db", "x.db", "--to-seq", "1", "--at", "2026-01-01T00:00Z", "--json"],
    ],
)
def test_cli_usage_errors_asked_as_json_are_json(argv: list[str]) -> None:
    """A script reading --json output gets every error as {"error": {"code", ...}}, usage
    errors (exit 2) too; click's text still goes to stderr."""
    result = CliRunner().invoke(cli, ["--nats", "nats://127.0.0.1:9", *argv])
    assert result.exit_code == 2, result.output
    err = json.loads(result.stdout)["error"]
    assert err["code"] == "usage_error" and err["message"], err
    assert "Usage:" in result.stderr or "Error:" in result.stderr


def test_a_group_without_its_command_is_a_short_json_usage_error() -> None:
    result = CliRunner().invoke(cli, ["--json", "network"])
    assert result.exit_code == 2
    err = json.loads(result.stdout)["error"]
    assert err["code"] == "usage_error"
    # (CliRunner names the program "cli"; the console script, "netledger")
    assert err["message"] == "Missing command (cli network --help lists them)."


def test_cli_usage_errors_without_json_print_nothing_on_stdout() -> None:
    result = CliRunner().invoke(cli, ["--nats", "nats://127.0.0.1:9", "network", "create"])
    assert result.exit_code == 2 and result.stdout == ""
