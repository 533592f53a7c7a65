"""The pure projection (event -> row changes), its SQLite writer and schema, without NATS."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from netledger.events.codec import Actor, Envelope, encode
from netledger.events.host_events import (
    HostAddressAdded,
    HostAddressRemoved,
    HostAnnounced,
    HostLinkCreated,
    HostLinkRemoved,
    HostNatApplied,
    HostReconciled,
)
from netledger.events.ids import REGISTRY_SUBJECT, network_subject, pool_subject
from netledger.events.types import (
    Event,
    FixedIpAllocated,
    FixedIpDeallocated,
    FixedIpFreed,
    FixedIpLeased,
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
)
from netledger.projector.compare import dump
from netledger.projector.errors import SchemaTooNew
from netledger.projector.project import MemoryStore, project
from netledger.projector.schema import MIGRATION_NAMES, open_db
from netledger.projector.store import Raw, Writer
from netledger.projector.tables import ALL_TABLES, FIXED_IPS


def net(network_id: str = "1", cidr: str = "10.0.0.0/24", **kw: Any) -> NetworkCreated:
    base = cidr.rsplit(".", 1)[0]
    values: dict[str, Any] = dict(
        network_id=network_id, label=f"net{network_id}", cidr=cidr, netmask="255.255.255.0",
        gateway=f"{base}.1", broadcast=f"{base}.255", dhcp_start=f"{base}.3", mode="vlan",
        vlan=100 + int(network_id), vni=None, bridge=f"br{100 + int(network_id)}",
        bridge_interface=None, dns1=None, dns2=None, vpn_private_address=f"{base}.2",
        vpn_public_port=1000, project=None, multi_host=False, network_host="nethost",
        mtu=None, cidr_v6=None,
    )  # fmt: skip
    values.update(kw)
    return NetworkCreated(**values)


def alloc(
    address: str,
    instance: str,
    network_id: str = "1",
    project: str | None = "p1",
    host: str | None = "c1",
    mac: str | None = None,
) -> FixedIpAllocated:
    mac = mac or "02:16:3e:00:00:%02x" % (int(address.rsplit(".", 1)[1]) % 256)
    return FixedIpAllocated(
        network_id=network_id,
        address=address,
        instance=instance,
        mac=mac,
        host=host,
        project=project,
    )


class Feeder:
    """Feeds events with consecutive sequences into a MemoryStore."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.seq = 0
        self.log: list[tuple[int, str, Envelope]] = []

    def __call__(self, ev: Event, subject: str | None = None, actor: Actor | None = None) -> Any:
        self.seq += 1
        env = Envelope(
            ev,
            f"c{self.seq}:0",
            f"c{self.seq}",
            1000.0 + self.seq,
            actor or Actor(project="p1", role="member", user="alice"),
        )
        subj = subject or ev.subject()
        self.log.append((self.seq, subj, env))
        return self.store.feed(self.seq, subj, env, stream_time=2000.0 + self.seq)

    def rows(self, table: str) -> dict[Any, dict[str, Any]]:
        return dict(self.store.tables.get(table, {}))


# --- the projection, event by event ---------------------------------------------------------


def test_network_lifecycle_and_projects() -> None:
    f = Feeder()
    f(net("1"))
    f(net("2", "10.0.1.0/24"))
    f(NetworkAssociated(network_id="1", project="p1"))
    nets = f.rows("networks")
    assert nets[("1",)]["project"] == "p1" and nets[("1",)]["deleted"] == 0
    assert nets[("1",)]["vlan"] == 101 and nets[("1",)]["created_seq"] == 1
    assert f.rows("projects")[("p1",)]["network_id"] == "1"
    f(NetworkDisassociated(network_id="1", project="p1"))
    assert f.rows("networks")[("1",)]["project"] is None
    assert f.rows("projects")[("p1",)]["network_id"] is None
    f(NetworkDeleted(network_id="2"))
    n2 = f.rows("networks")[("2",)]
    assert n2["deleted"] == 1 and n2["deleted_seq"] == 5 and n2["deleted_at"] == 1005.0
    # the events index names what each event concerns
    assert f.store.events[3]["network_id"] == "1" and f.store.events[3]["project"] == "p1"
    assert f.store.events[3]["actor_user"] == "alice"
    assert not f.store.rejected


def test_fixed_ip_lifecycle() -> None:
    f = Feeder()
    f(net("1"))
    f(alloc("10.0.0.3", "i1"))
    f(alloc("10.0.0.4", "i2", project=None))
    key = ("1", "10.0.0.3")
    row = f.rows("fixed_ips")[key]
    assert (row["instance"], row["host"], row["project"], row["allocated"], row["leased"]) == (
        "i1", "c1", "p1", 1, 0)  # fmt: skip
    # the allocation's row is built without FIXED_IPS.blank(): exactly the table's columns
    assert list(row) == list(FIXED_IPS.columns)
    assert (row["allocated_seq"], row["allocated_at"], row["updated_seq"], row["updated_at"]) == (
        2, 1002.0, 2, 1002.0)  # fmt: skip
    f(FixedIpLeased(network_id="1", address="10.0.0.3", mac=row["mac"], instance="i1"))
    assert f.rows("fixed_ips")[key]["leased"] == 1
    # deallocated while leased: reserved until the release frees it
    f(
        FixedIpDeallocated(
            network_id="1",
            address="10.0.0.3",
            instance="i1",
            mac=row["mac"],
            host="c1",
            freed=False,
        )
    )
    row = f.rows("fixed_ips")[key]
    assert (row["allocated"], row["leased"], row["instance"]) == (0, 1, "i1")
    f(
        FixedIpReleased(
            network_id="1", address="10.0.0.3", mac=row["mac"], instance="i1", freed=True
        )
    )
    assert key not in f.rows("fixed_ips")
    # lease + release without freeing, then deallocate freed at once
    f(
        FixedIpLeased(
            network_id="1", address="10.0.0.4", mac=alloc("10.0.0.4", "x").mac, instance="i2"
        )
    )
    f(FixedIpReleased(network_id="1", address="10.0.0.4", mac="m", instance="i2", freed=False))
    assert f.rows("fixed_ips")[("1", "10.0.0.4")]["leased"] == 0
    f(
        FixedIpDeallocated(
            network_id="1", address="10.0.0.4", instance="i2", mac="m", host=None, freed=False
        )
    )
    f(FixedIpFreed(network_id="1", address="10.0.0.4", instance="i2", reason="release timeout"))
    assert f.rows("fixed_ips") == {}
    # every event was indexed with the address and instance it concerns
    idx = f.store.events
    assert [idx[s]["address"] for s in range(2, 10)] == ["10.0.0.3", "10.0.0.4", *["10.0.0.3"] * 3,
                                                          *["10.0.0.4"] * 3]  # fmt: skip
    assert idx[4]["instance"] == "i1" and idx[4]["host"] == "c1" and idx[4]["project"] == "p1"
    assert not f.store.rejected


def test_floating_ip_lifecycle() -> None:
    f = Feeder()
    f(net("1"))
    f(alloc("10.0.0.3", "i1"))
    f(FloatingPoolCreated(pool="pub", cidr="203.0.113.0/28", public_interface="eth0"))
    f(FloatingIpAllocated(pool="pub", address="203.0.113.1", project="p1"))
    assert f.rows("floating_ips")[("203.0.113.1",)]["project"] == "p1"
    f(
        FloatingIpAssociated(
            pool="pub",
            address="203.0.113.1",
            project="p1",
            fixed_address="10.0.0.3",
            network_id="1",
            instance="i1",
        )
    )
    fl = f.rows("floating_ips")[("203.0.113.1",)]
    assert (fl["fixed_address"], fl["network_id"], fl["instance"]) == ("10.0.0.3", "1", "i1")
    assert f.store.events[5]["fixed_address"] == "10.0.0.3"
    f(
        FloatingIpDisassociated(
            pool="pub",
            address="203.0.113.1",
            project="p1",
            fixed_address="10.0.0.3",
            network_id="1",
            instance="i1",
            reason="requested",
        )
    )
    fl = f.rows("floating_ips")[("203.0.113.1",)]
    assert (fl["fixed_address"], fl["network_id"], fl["instance"]) == (None, None, None)
    f(FloatingIpDeallocated(pool="pub", address="203.0.113.1", project="p1"))
    assert f.rows("floating_ips") == {}
    assert f.rows("floating_pools")[("pub",)]["cidr"] == "203.0.113.0/28"
    assert not f.store.rejected


def test_host_events() -> None:
    f = Feeder()
    f(
        HostAnnounced(
            host="h1",
            vtep_address="192.0.2.1",
            physical_interface="eth1",
            public_interface="eth0",
            network_host=True,
        )
    )
    f(
        HostLinkCreated(
            host="h1",
            name="br101",
            kind="bridge",
            network_id="1",
            drift=False,
            detail={"mtu": 1500},
        )
    )
    f(
        HostAddressAdded(
            host="h1", interface="br101", address="10.0.0.1/24", network_id="1", drift=False
        )
    )
    f(
        HostNatApplied(
            host="h1",
            floating={"203.0.113.1": "10.0.0.3", "203.0.113.2": "10.0.0.4"},
            snat_ranges=["10.0.0.0/24"],
            drift=False,
        )
    )
    f(HostNatApplied(host="h1", floating={"203.0.113.2": "10.0.0.5"}, snat_ranges=[], drift=True))
    f(HostReconciled(host="h1", applied_seq=42, changes=3, drift_repairs=1, duration_ms=12.5))
    h = f.rows("hosts")[("h1",)]
    assert (h["vtep_address"], h["network_host"], h["applied_seq"], h["nat_drift"]) == (
        "192.0.2.1", 1, 42, 1)  # fmt: skip
    assert h["first_seq"] == 1 and h["last_seq"] == 6
    assert f.rows("host_links")[("h1", "br101")]["detail"] == '{"mtu":1500}'
    assert f.rows("host_addresses")[("h1", "br101", "10.0.0.1/24")]["network_id"] == "1"
    assert f.rows("host_nat") == {
        ("h1", "203.0.113.2"): {"host": "h1", "floating_address": "203.0.113.2",
                                "fixed_address": "10.0.0.5", "applied_seq": 5,
                                "applied_at": 1005.0},
    }  # fmt: skip
    assert f.store.events[3]["address"] == "10.0.0.1" and f.store.events[3]["host"] == "h1"
    f(HostLinkRemoved(host="h1", name="br101", kind="bridge", network_id="1", reason="stale"))
    f(
        HostAddressRemoved(
            host="h1", interface="br101", address="10.0.0.1/24", network_id="1", reason="stale"
        )
    )
    f(
        HostLinkRemoved(
            host="h1", name="never-recorded", kind="vlan", network_id=None, reason="stale"
        )
    )
    assert f.rows("host_links") == {} and f.rows("host_addresses") == {}
    assert not f.store.rejected


@pytest.mark.parametrize(
    ("events", "reason"),
    [
        ([alloc("10.0.0.3", "i1")], "unknown network 1"),
        ([net("1"), alloc("10.9.0.3", "i1")], "not in network 1"),
        ([net("1"), FixedIpLeased(network_id="1", address="10.0.0.3", mac="m", instance="i")],
         "not in use"),
        ([net("1"), NetworkDeleted(network_id="1"), alloc("10.0.0.3", "i1")], "was deleted"),
        ([net("1"), net("1")], "already exists"),
        ([FloatingIpAllocated(pool="nope", address="203.0.113.1", project="p")], "unknown pool"),
        ([FloatingPoolCreated(pool="pub", cidr="203.0.113.0/28", public_interface=None),
          FloatingIpDeallocated(pool="pub", address="203.0.113.1", project="p")],
         "not allocated"),
        ([net("1", cidr="not-a-cidr")], "bad cidr"),
    ],
)  # fmt: skip
def test_events_that_cannot_be_applied_are_rejected(events: list[Event], reason: str) -> None:
    f = Feeder()
    for ev in events:
        out = f(ev)
    assert out.rejected is not None and reason in out.rejected["reason"]
    assert out.changes == () and out.event is None
    assert f.store.rejected[f.seq]["type"] == events[-1].TYPE


def test_wrong_subject_is_rejected() -> None:
    f = Feeder()
    f(net("1"))
    out = f(alloc("10.0.0.3", "i1"), subject=REGISTRY_SUBJECT)
    assert (
        out.rejected is not None and "belongs on netledger.evt.network.1" in out.rejected["reason"]
    )
    out = f(net("2", "10.0.1.0/24"), subject=network_subject("2"))
    assert out.rejected is not None
    out = f(
        FloatingPoolCreated(pool="p", cidr="203.0.113.0/28", public_interface=None),
        subject=pool_subject("p"),
    )
    assert out.rejected is not None
    assert list(f.store.tables["networks"]) == [("1",)] and "fixed_ips" not in f.store.tables


def test_network_associated_is_accepted_on_its_legacy_network_subject() -> None:
    f = Feeder()
    f(net("1"))
    out = f(NetworkAssociated(network_id="1", project="p1"), subject=network_subject("1"))
    assert out.rejected is None and f.rows("networks")[("1",)]["project"] == "p1"
    out = f(NetworkAssociated(network_id="1", project="p2"), subject=pool_subject("x"))
    assert out.rejected is not None and "netledger.evt.project.p2" in out.rejected["reason"]


def test_bad_field_types_are_rejected_not_raised() -> None:
    f = Feeder()
    f(net("1"))
    # decodable (the codec does not check types) but nonsense: a list as address
    ev = FixedIpAllocated(
        network_id="1",
        address=["x"],
        instance="i",
        mac="m",
        host=None,  # type: ignore[arg-type]
        project=None,
    )
    out = f(ev)
    assert out.rejected is not None


def test_projection_does_not_mutate_the_view() -> None:
    f = Feeder()
    f(net("1"))
    f(alloc("10.0.0.3", "i1"))
    before = {k: dict(v) for k, v in f.store.tables["fixed_ips"].items()}
    env = Envelope(
        FixedIpLeased(network_id="1", address="10.0.0.3", mac="m", instance="i1"), "e", "c", 5.0
    )
    out = project(99, network_subject("1"), env, f.store)
    assert out.changes and f.store.tables["fixed_ips"] == before


# --- SQLite: schema and the batch writer ------------------------------------------------------


def test_schema_matches_tables_and_migrations_are_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    db = open_db(path)
    try:
        assert db.journal_mode == "wal"
        for name, t in ALL_TABLES.items():
            cols = [r[1] for r in db.execute(f"PRAGMA table_info({name})").fetchall()]
            assert tuple(cols) == t.columns, name
        applied = [r[0] for r in db.execute("SELECT name FROM _sqlite_migrations ORDER BY id")]
        assert applied == MIGRATION_NAMES
        assert db.execute("SELECT schema_version FROM projection_state").fetchone()[0] == len(
            MIGRATION_NAMES)  # fmt: skip
    finally:
        db.close()
    db = open_db(path)  # again: nothing to apply, nothing duplicated
    try:
        assert db.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0] == len(
            MIGRATION_NAMES)  # fmt: skip
        db.execute(
            "INSERT INTO _sqlite_migrations (migration_set, name, applied_at)"
            " VALUES ('netledger.projector', '9999_future', 'x')"
        )
        db.conn.commit()
    finally:
        db.close()
    with pytest.raises(SchemaTooNew) as exc:
        open_db(path)
    assert exc.value.code == "projection_schema_too_new"


def _raws(log: list[tuple[int, str, Envelope]]) -> list[Raw]:
    return [Raw(seq, subj, encode(env), 2000.0 + seq, 0) for seq, subj, env in log]


def _sample_log() -> list[tuple[int, str, Envelope]]:
    f = Feeder()
    f(net("1"))
    f(net("2", "10.0.1.0/24"))
    f(NetworkAssociated(network_id="2", project="p2"))
    for i in range(3, 40):
        f(alloc(f"10.0.0.{i}", f"i{i}"))
    for i in range(3, 40, 3):
        f(
            FixedIpDeallocated(
                network_id="1",
                address=f"10.0.0.{i}",
                instance=f"i{i}",
                mac="m",
                host="c1",
                freed=True,
            )
        )
    f(alloc("10.0.0.3", "again"))  # an address freed and taken again in the same batch
    f(FloatingPoolCreated(pool="pub", cidr="203.0.113.0/28", public_interface=None))
    f(FloatingIpAllocated(pool="pub", address="203.0.113.1", project="p1"))
    f(HostNatApplied(host="h1", floating={"203.0.113.1": "10.0.0.4"}, snat_ranges=[], drift=False))
    f(HostNatApplied(host="h1", floating={}, snat_ranges=[], drift=False))
    f(alloc("10.7.0.3", "bad"))  # rejected: not in the network
    return f.log


def _memory_rows(log: list[tuple[int, str, Envelope]]) -> dict[str, list[tuple[Any, ...]]]:
    store = MemoryStore()
    for seq, subj, env in log:
        store.feed(seq, subj, env, stream_time=2000.0 + seq)
    out: dict[str, list[tuple[Any, ...]]] = {}
    for name, t in ALL_TABLES.items():
        if name == "events":
            rows = list(store.events.values())
        elif name == "rejected_events":
            rows = list(store.rejected.values())
        else:
            rows = list(store.tables.get(name, {}).values())
        out[name] = sorted(tuple(r[c] for c in t.columns) for r in rows)
    return out


def _normalise(d: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
    # rejected_events.raw is kept only by the writer (the memory store never saw bytes)
    out = {k: sorted(v) for k, v in d.items() if k in ALL_TABLES}
    out["rejected_events"] = [r[:-1] for r in out["rejected_events"]]
    return out


@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_writer_matches_memory_store_for_any_batch_size(tmp_path: Path, batch: int) -> None:
    log = _sample_log()
    raws = _raws(log)
    w = Writer(tmp_path / "p.db")
    try:
        for i in range(0, len(raws), batch):
            w.apply(raws[i : i + batch])
        assert w.last_seq == len(log)
    finally:
        w.close()
    got = _normalise(dump(tmp_path / "p.db"))
    want = _normalise(_memory_rows(log))
    assert got == want
    assert len(got["rejected_events"]) == 1


def test_writer_skips_what_it_already_applied_and_records_garbage(tmp_path: Path) -> None:
    log = _sample_log()[:5]
    raws = _raws(log)
    w = Writer(tmp_path / "p.db")
    w.apply(raws[:3])
    w.close()
    w = Writer(tmp_path / "p.db")  # restart: the checkpoint is in the file
    assert w.last_seq == 3
    w.apply(raws)  # overlapping redelivery: seqs 1..3 are skipped
    applied = w.apply([Raw(6, "netledger.evt.network.1", b"\xc1garbage", 1.0, 0)])
    assert (applied.last_seq, applied.events, applied.rejected) == (6, 0, 1)
    w.close()
    conn = sqlite3.connect(tmp_path / "p.db")
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 5
    seq, reason, raw = conn.execute("SELECT seq, reason, raw FROM rejected_events").fetchone()
    assert (seq, raw) == (6, b"\xc1garbage") and "msgpack" in reason
    assert conn.execute("SELECT last_seq FROM projection_state").fetchone()[0] == 6
    conn.close()
