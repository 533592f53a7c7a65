"""The projection of ``HostRetired`` (`netledger host retire`): the host's row says since when it
is out (``retired_seq``, ``retired_at``) and keeps what its executor last reported; announced
again, it is in. A projection file from before gets the two columns by migration
``0006_host_retired``."""

from __future__ import annotations

from pathlib import Path

from netledger.events.codec import Actor
from netledger.events.host_events import HostAnnounced, HostReconciled
from netledger.events.types import HostRetired
from netledger.projector.schema import MIGRATION_NAMES, open_db
from tests.projector.test_projector_unit import Feeder

ADMIN = Actor(role="admin", user="ops")


def test_a_retired_host_row_says_so_until_it_announces_again() -> None:
    f = Feeder()
    f(HostAnnounced("h1", "192.0.2.1", "eth1", "eth0", True))
    f(HostReconciled(host="h1", applied_seq=1, changes=0, drift_repairs=0, duration_ms=1.0))
    f(HostRetired("h1"), actor=ADMIN)
    h = f.rows("hosts")[("h1",)]
    assert (h["retired_seq"], h["retired_at"]) == (3, 1003.0)
    # what its executor last reported stays, its last event from the host too
    assert (h["vtep_address"], h["applied_seq"], h["last_seq"]) == ("192.0.2.1", 1, 2)
    assert f.store.events[3]["host"] == "h1"  # audit finds it by host
    f(HostAnnounced("h1", "192.0.2.9", "eth1", "eth0", False))
    h = f.rows("hosts")[("h1",)]
    assert h["retired_seq"] is None and h["retired_at"] is None and h["vtep_address"] == "192.0.2.9"
    # a host no executor reported (an allocation named it only) gets a row when retired
    f(HostRetired("h7"), actor=ADMIN)
    assert f.rows("hosts")[("h7",)]["retired_seq"] == 5
    assert not f.store.rejected


def test_the_migration_adds_the_columns(tmp_path: Path) -> None:
    db = open_db(tmp_path / "p.db")
    cols = {r[1] for r in db.execute("PRAGMA table_info(hosts)").fetchall()}
    assert {"retired_seq", "retired_at"} <= cols
    assert MIGRATION_NAMES[-1] == "0006_host_retired"
