"""The executor view snapshot's own pieces, pure: every field written, every field read back.

The fold itself is the service codec's (tests/events/test_snapshot_codec.py); here the host
book, the DHCP book and the view's bookkeeping. A field added to HostBook or DhcpBook without
the codec (and VIEW_FORMAT) following fails the field check.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from netledger.events.host_events import HostAnnounced, HostNatApplied
from netledger.events.snapshot import (
    SnapshotInvalid,
    digest,
    dumps,
    encode_body,
    loads,
)
from netledger.events.state import State
from netledger.executor.dhcp import DhcpBook
from netledger.executor.hosts import HostBook
from netledger.executor.snapshot import (
    MAGIC,
    VIEW_FORMAT,
    ViewKind,
    book_from_wire,
    book_to_wire,
    dhcp_from_wire,
    dhcp_to_wire,
    file_bytes,
    parse_file,
    remove_leftovers,
    view_from_wire,
    view_to_wire,
)

names = st.sampled_from(["h1", "h2", "br1", "vx7", "eth0"])
addrs = st.sampled_from(["10.0.0.1/24", "10.0.1.1/24", "fd00::1/64"])


@st.composite
def books(draw: st.DrawFn) -> HostBook:
    announced = {
        h: HostAnnounced(
            host=h,
            vtep_address=draw(st.none() | st.just("192.0.2.1")),
            physical_interface="eth1",
            public_interface=draw(st.none() | st.just("pub0")),
            network_host=draw(st.booleans()),
        )
        for h in draw(st.lists(st.sampled_from(["h1", "h2", "h3"]), unique=True))
    }
    nat = draw(
        st.none()
        | st.builds(
            HostNatApplied,
            host=st.just("h1"),
            floating=st.dictionaries(st.just("198.51.100.1"), st.just("10.0.0.5")),
            snat_ranges=st.lists(st.just("10.0.0.0/24"), max_size=1),
            drift=st.booleans(),
            snat_to=st.none() | st.just("198.51.100.9"),
            routed_v6=st.dictionaries(st.just("fd00::/64"), st.just("br1")),
        )
    )
    return HostBook(
        me="h1",
        announced=announced,
        links=draw(st.sets(names)),
        addresses=draw(st.sets(st.tuples(names, addrs))),
        fdb=draw(st.sets(st.tuples(names, st.sampled_from(["192.0.2.2", "192.0.2.3"])))),
        nat=nat,
        forwarding=draw(st.booleans()),
        forwarding_v6=draw(st.booleans()),
        last_reconciled_seq=draw(st.integers(0, 10**9)),
    )


@st.composite
def dhcp_books(draw: st.DrawFn) -> DhcpBook:
    running = draw(st.dictionaries(names, st.sampled_from(["d1", "d2"])))
    return DhcpBook(
        me="h1",
        running=running,
        network={b: draw(st.none() | st.sampled_from(["1", "2"])) for b in running},
    )


def test_every_field_of_the_books_is_written() -> None:
    assert set(book_to_wire(HostBook("h1"))) == {f.name for f in fields(HostBook)}
    assert set(dhcp_to_wire(DhcpBook("h1"))) == {f.name for f in fields(DhcpBook)}


@settings(max_examples=60, deadline=None)
@given(books(), dhcp_books(), st.sets(st.sampled_from("12345")), st.booleans(), st.booleans())
def test_the_view_round_trips_through_msgpack(
    book: HostBook, dhcp: DhcpBook, nets: set[str], every: bool, legacy: bool
) -> None:
    kind = ViewKind("h1", True, False)
    joining = set(list(nets)[:1])
    w = msgpack.unpackb(
        msgpack.packb(view_to_wire(kind, book, dhcp, nets, joining, every, legacy)),
        strict_map_key=False,
    )
    assert book_from_wire(w["book"]) == book
    assert dhcp_from_wire(w["dhcp"]) == dhcp
    v = view_from_wire(kind, 7, State(), w)
    assert (v.seq, v.book, v.dhcp_book, v.networks, v.joining, v.every) == (
        7, book, dhcp, nets, joining, every
    )  # fmt: skip
    assert v.legacy_announcement is legacy


def test_another_view_or_layout_is_refused_with_its_reason() -> None:
    kind = ViewKind("h1", True, False)
    w = view_to_wire(kind, HostBook("h1"), DhcpBook("h1"), set(), set(), False, False)
    cases = [
        (ViewKind("h2", True, False), w, "taken by host h1 reading its share, not by host h2"),
        (ViewKind("h1", False, False), w, "not by host h1 reading the whole log"),
        (ViewKind("h1", True, True), w, "not by host h1 reading its share, --network-host"),
        (kind, {**w, "view": VIEW_FORMAT + 1}, f"view format {VIEW_FORMAT + 1}"),
        (kind, {**w, "book": {"me": "h1"}}, "undecodable view: KeyError"),
    ]
    for k, wire, why in cases:
        try:
            view_from_wire(k, 1, State(), wire)
        except SnapshotInvalid as exc:
            assert why in exc.reason, exc.reason
        else:
            raise AssertionError(f"accepted: {why}")


def test_the_file_carries_the_hash_of_its_body() -> None:
    body = encode_body(dumps(State(), None, seq=3, stream="S", created="c", extra={"x": 1}))
    sha, anchor, got = parse_file(file_bytes(body, digest(body), "ab" * 32))
    assert anchor == "ab" * 32
    snap = loads(got, sha256=sha, stream="S", created="c", encoding="zlib")
    assert snap.seq == 3 and snap.extra == {"x": 1}
    assert parse_file(file_bytes(body, digest(body), ""))[1] == ""  # the empty fold at 0
    # written before anchors: the hash alone on its line (refused on load: nothing to check)
    assert parse_file(MAGIC + digest(body).encode() + b"\n" + body) == (digest(body), None, body)
    for bad, why in [
        (b"", "no header"),
        (b"something else\n", "no header"),
        (file_bytes(body, digest(body), "")[:40], "truncated header"),
    ]:
        try:
            parse_file(bad)
        except SnapshotInvalid as exc:
            assert why in exc.reason
        else:
            raise AssertionError(why)


def test_what_a_killed_write_left_is_removed_and_nothing_else(tmp_path: Path) -> None:
    """A SIGKILL while a snapshot was written leaves the forked writer's body and the
    ``.tmp`` of the install; the next write removes them, never the snapshot or other files —
    not another program's snapshot body either (a command service's, in a shared folder)."""
    path = tmp_path / "view.snapshot"
    keep = [
        path,
        tmp_path / "dnsmasq-br1.hosts",
        tmp_path / "view.snapshot.old",
        tmp_path / "netledger-snapshot-abc123",  # a command service's body, writing now
        tmp_path / "other.snapshot.body-x1",  # another snapshot's of this folder
    ]
    left = [tmp_path / "view.snapshot.body-abc123", tmp_path / "view.snapshot.tmp"]
    for p in keep + left:
        p.write_bytes(b"x")
    assert sorted(remove_leftovers(str(path))) == sorted(p.name for p in left)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in keep)
