"""``netledger show ...`` and ``netledger projector status`` through click (no NATS needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from netledger.cli import cli
from netledger.events.codec import Envelope, encode
from netledger.events.host_events import HostAnnounced, HostLinkCreated
from netledger.events.types import (
    Event,
    FloatingIpAllocated,
    FloatingIpAssociated,
    FloatingPoolCreated,
    NetworkAssociated,
)
from netledger.projector.cli import projector_group, show_group
from netledger.projector.store import Raw, Writer
from tests.projector.test_projector_unit import alloc, net


@pytest.fixture
def db(tmp_path: Path) -> Path:
    events: list[Event] = [
        net("1", project=None),
        net("2", "10.0.1.0/24", network_host="nh2"),
        NetworkAssociated(network_id="1", project="p1"),
        alloc("10.0.0.3", "i1", project="p1", host="c1"),
        alloc("10.0.0.10", "i2", project=None, host="c2"),  # the network's project applies
        alloc("10.0.1.3", "j1", network_id="2", project="p2", host="c1"),
        FloatingPoolCreated(pool="pub", cidr="203.0.113.0/28", public_interface=None),
        FloatingIpAllocated(pool="pub", address="203.0.113.1", project="p1"),
        FloatingIpAllocated(pool="pub", address="203.0.113.2", project="p2"),
        FloatingIpAssociated(pool="pub", address="203.0.113.1", project="p1",
                             fixed_address="10.0.0.3", network_id="1", instance="i1"),
        HostAnnounced(host="c1", vtep_address="192.0.2.1", physical_interface=None,
                      public_interface=None, network_host=False),
        HostLinkCreated(host="c1", name="br101", kind="bridge", network_id="1", drift=False),
    ]  # fmt: skip
    path = tmp_path / "p.db"
    w = Writer(path)
    w.apply([Raw(i, ev.subject(), encode(Envelope(ev, f"e{i}", f"c{i}", float(i))), float(i), 0)
             for i, ev in enumerate(events, 1)])  # fmt: skip
    w.close()
    return path


def invoke(*args: str) -> Any:
    result = CliRunner(env={"COLUMNS": "200"}).invoke(cli, list(args), catch_exceptions=False)
    return result


def show_json(db: Path, *args: str) -> Any:
    r = invoke("show", *args, "--db", str(db), "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_show_networks(db: Path) -> None:
    nets = show_json(db, "networks")
    assert [(n["network_id"], n["project"], n["in_use"]) for n in nets] == [
        ("1", "p1", 2), ("2", None, 1)]  # fmt: skip
    assert [n["network_id"] for n in show_json(db, "networks", "--project", "p1")] == ["1"]
    assert [n["network_id"] for n in show_json(db, "networks", "--host", "nh2")] == ["2"]
    assert show_json(db, "networks", "--network", "9") == []


def test_show_fixed_ips_with_filters(db: Path) -> None:
    ips = show_json(db, "fixed-ips")
    assert [(r["address"], r["instance"], r["project"]) for r in ips] == [
        ("10.0.0.3", "i1", "p1"), ("10.0.0.10", "i2", "p1"), ("10.0.1.3", "j1", "p2")]  # fmt: skip
    assert [r["address"] for r in show_json(db, "fixed-ips", "--project", "p1")] == [
        "10.0.0.3", "10.0.0.10"]  # fmt: skip
    assert [r["address"] for r in show_json(db, "fixed-ips", "--host", "c1")] == [
        "10.0.0.3", "10.0.1.3"]  # fmt: skip
    assert [r["address"] for r in show_json(db, "fixed-ips", "--network", "2")] == ["10.0.1.3"]
    assert [r["address"] for r in show_json(db, "fixed-ips", "--instance", "i2")] == ["10.0.0.10"]
    # one address, in any notation; none in use there: an empty list
    for given in ("10.0.0.10", "::ffff:10.0.0.10"):
        [one] = show_json(db, "fixed-ips", "--address", given)
        assert (one["address"], one["instance"]) == ("10.0.0.10", "i2")
    assert show_json(db, "fixed-ips", "--address", "10.0.0.11") == []
    bad = invoke("show", "fixed-ips", "--db", str(db), "--address", "10.0.0.l")
    assert bad.exit_code == 2 and "not an IPv4 or IPv6 address" in bad.output


def test_show_floating_ips_and_hosts(db: Path) -> None:
    fl = show_json(db, "floating-ips")
    assert [(r["address"], r["fixed_address"], r["host"]) for r in fl] == [
        ("203.0.113.1", "10.0.0.3", "c1"), ("203.0.113.2", None, None)]  # fmt: skip
    assert [r["address"] for r in show_json(db, "floating-ips", "--project", "p2")] == [
        "203.0.113.2"]  # fmt: skip
    assert [r["address"] for r in show_json(db, "floating-ips", "--host", "c1")] == ["203.0.113.1"]
    for given in ("203.0.113.1", "10.0.0.3"):  # the floating IP, or the fixed IP it maps to
        assert [r["address"] for r in show_json(db, "floating-ips", "--address", given)] == [
            "203.0.113.1"]  # fmt: skip
    hosts = {h["host"]: h for h in show_json(db, "hosts")}
    assert sorted(hosts) == ["c1", "c2", "nethost", "nh2"]
    assert (hosts["c1"]["vtep_address"], hosts["c1"]["links"], hosts["c1"]["fixed_ips"]) == (
        "192.0.2.1", 1, 2)  # fmt: skip
    assert hosts["c2"]["vtep_address"] is None and hosts["c2"]["fixed_ips"] == 1
    assert [h["host"] for h in show_json(db, "hosts", "--host", "c2")] == ["c2"]


def test_root_json_flag_and_tables_for_people(db: Path) -> None:
    r = invoke("--json", "show", "networks", "--db", str(db))
    assert r.exit_code == 0 and json.loads(r.output)[0]["network_id"] == "1"
    r = invoke("show", "fixed-ips", "--db", str(db))
    assert r.exit_code == 0 and "10.0.0.10" in r.output and "fixed IPs (3)" in r.output


def test_status(db: Path) -> None:
    st = json.loads(invoke("projector", "status", "--db", str(db), "--json").output)
    assert (st["last_seq"], st["events"], st["rejected"], st["schema_version"]) == (12, 12, 0, 6)
    r = invoke("projector", "status", "--db", str(db))
    assert "last_seq" in r.output and "12" in r.output


def test_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    r = invoke("show", "networks", "--db", str(missing), "--json")
    assert r.exit_code == 1
    assert json.loads(r.output)["error"]["code"] == "projection_not_found"
    r = invoke("show", "hosts", "--db", str(missing))
    assert r.exit_code == 1 and "projection_not_found" in r.output
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 100)
    r = invoke("show", "networks", "--db", str(tmp_path / "junk.db"), "--json")
    assert r.exit_code == 1 and json.loads(r.output)["error"]["code"] == "projection_not_found"


def test_default_database_is_in_the_data_folder(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETLEDGER_DATA", str(db.parent))
    db.rename(db.parent / "projection.db")
    assert len(json.loads(invoke("show", "fixed-ips", "--json").output)) == 3


def test_every_command_has_help() -> None:
    for group in (projector_group, show_group):
        assert group.help
        for name, cmd in group.commands.items():  # type: ignore[attr-defined]
            assert cmd.help, f"{group.name} {name} has no help"
            r = invoke(group.name or "", name, "--help")
            assert r.exit_code == 0 and "--db" in r.output
