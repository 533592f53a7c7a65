"""The envelope codec: round trips, refusal of anything undecodable, upcasting, old payloads.

``tests/fixtures/events/*.jsonl`` hold payloads exactly as earlier code stored them (see the
README there). They are never regenerated: replaying them is how we know an old stream still
decodes and still folds into the same state.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netledger.events import types as domain_types
from netledger.events.codec import SYSTEM, UPCASTERS, Actor, Envelope, decode, encode, upcast
from netledger.events.commands import parse_command
from netledger.events.decide import decide
from netledger.events.errors import DecodeError
from netledger.events.state import State
from netledger.events.types import EVENT_TYPES, Event, FixedIpAllocated, NetworkDeleted

FIXTURES = Path(__file__).parent.parent / "fixtures" / "events"

# --- strategies built from the event dataclasses' own type hints ----------------------------

MSGPACK_INT = st.integers(-(2**63), 2**64 - 1)
#: an event's int fields: 64 bits, signed (what SQLite stores; decode refuses more)
EVENT_INT = st.integers(-(2**63), 2**63 - 1)
SHORT_TEXT = st.text(max_size=24)
JSONISH = st.recursive(
    st.none() | st.booleans() | MSGPACK_INT | st.floats(allow_nan=False) | SHORT_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(SHORT_TEXT, inner, max_size=3),
    max_leaves=8,
)


def strategy_for(tp: Any) -> st.SearchStrategy[Any]:
    """Values of ``tp`` that msgpack can carry (ints in 64 bits, no NaN: NaN != NaN)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return JSONISH
    if tp is type(None):
        return st.none()
    if tp is bool:
        return st.booleans()
    if tp is int:
        return EVENT_INT
    if tp is float:
        return st.floats(allow_nan=False)
    if tp is str:
        return SHORT_TEXT
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(strategy_for(a) for a in typing.get_args(tp)))
    if origin is list:
        (item,) = typing.get_args(tp)
        return st.lists(strategy_for(item), max_size=4)
    if origin is dict:
        key, value = typing.get_args(tp)
        return st.dictionaries(strategy_for(key), strategy_for(value), max_size=4)
    raise AssertionError(f"no strategy for {tp!r}: msgpack may not round-trip it (tuples do not)")


def event_strategy(cls: type[Event]) -> st.SearchStrategy[Event]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: strategy_for(hints[f.name]) for f in dataclasses.fields(cls)}
    return st.builds(cls, **fields)


ACTORS = st.builds(
    Actor,
    project=st.none() | SHORT_TEXT,
    role=st.sampled_from(["admin", "member", "system"]),
    user=st.none() | SHORT_TEXT,
)


def envelope_strategy(cls: type[Event]) -> st.SearchStrategy[Envelope]:
    return st.builds(
        Envelope,
        event=event_strategy(cls),
        event_id=SHORT_TEXT,
        command_id=SHORT_TEXT,
        time=st.floats(allow_nan=False),
        actor=ACTORS,
    )


def raw(obj: Any) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


_DEFAULT_DATA: Any = object()


def envelope_map(
    type_name: Any = "NetworkDeleted", version: Any = 1, data: Any = _DEFAULT_DATA
) -> dict[str, Any]:
    return {
        "type": type_name,
        "version": version,
        "id": "c1:0",
        "command_id": "c1",
        "time": 1.5,
        "actor": {"project": None, "role": "admin", "user": "ops"},
        "data": {"network_id": "7"} if data is _DEFAULT_DATA else data,
    }


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_every_event_type_round_trips(type_name: str, data: st.DataObject) -> None:
    env = data.draw(envelope_strategy(EVENT_TYPES[type_name]))
    back = decode(encode(env))
    assert back == env
    assert back.type == type_name
    assert back.event.subject() == env.event.subject()


def test_encoded_envelope_has_the_documented_shape() -> None:
    env = Envelope(NetworkDeleted(network_id="7"), "c1:0", "c1", 1.5, SYSTEM)
    assert msgpack.unpackb(encode(env), raw=False) == {
        "type": "NetworkDeleted",
        "version": NetworkDeleted.VERSION,
        "id": "c1:0",
        "command_id": "c1",
        "time": 1.5,
        "actor": {"project": None, "role": "system", "user": "netledger"},
        "data": {"network_id": "7"},
    }


def test_missing_envelope_metadata_gets_neutral_values() -> None:
    env = decode(raw({"type": "NetworkDeleted", "version": 1, "data": {"network_id": "7"}}))
    assert env.event == NetworkDeleted(network_id="7")
    assert (env.event_id, env.command_id, env.time, env.actor) == ("", "", 0.0, Actor())


# --- what must raise DecodeError -----------------------------------------------------------


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_garbage_bytes_raise_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


@settings(max_examples=50, deadline=None)
@given(env=envelope_strategy(FixedIpAllocated), data=st.data())
def test_truncated_or_padded_payloads_raise_decode_error(
    env: Envelope, data: st.DataObject
) -> None:
    payload = encode(env)
    cut = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(DecodeError):
        decode(payload[:cut])
    with pytest.raises(DecodeError):
        decode(payload + data.draw(st.binary(min_size=1, max_size=8)))


@pytest.mark.parametrize(
    "obj",
    [None, 1, "NetworkDeleted", b"\x01", [envelope_map()], 1.5, True],
    ids=["nil", "int", "str", "bin", "array", "float", "bool"],
)
def test_non_map_envelope_raises_decode_error(obj: Any) -> None:
    with pytest.raises(DecodeError, match="not a map"):
        decode(raw(obj))


def test_non_string_map_keys_raise_decode_error() -> None:
    with pytest.raises(DecodeError, match="not msgpack"):
        decode(raw({1: "x", "type": "NetworkDeleted"}))


def test_invalid_utf8_raises_decode_error() -> None:
    good = raw(envelope_map())
    bad = good.replace(b"NetworkDeleted", b"Network\xffeleted")
    with pytest.raises(DecodeError):
        decode(bad)


@pytest.mark.parametrize(
    "type_name", ["NoSuchEvent", "", None, 7, b"NetworkDeleted", "networkdeleted"]
)
def test_unknown_type_raises_decode_error(type_name: Any) -> None:
    with pytest.raises(DecodeError, match="unknown event type"):
        decode(raw(envelope_map(type_name)))


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
def test_future_version_raises_decode_error(type_name: str) -> None:
    cls = EVENT_TYPES[type_name]
    with pytest.raises(DecodeError, match="newer than this reader"):
        decode(raw(envelope_map(type_name, cls.VERSION + 1, {})))


@pytest.mark.parametrize("version", [None, -1, "1", 1.0, True, False, [1]])
def test_bad_version_raises_decode_error(version: Any) -> None:
    with pytest.raises(DecodeError, match="bad version"):
        decode(raw(envelope_map(version=version)))


@pytest.mark.parametrize("data", [None, [], "x", 1, b"\x00"])
def test_data_that_is_not_a_map_raises_decode_error(data: Any) -> None:
    with pytest.raises(DecodeError, match="data is not a map"):
        decode(raw(envelope_map(data=data)))


def _required_fields() -> list[tuple[str, str]]:
    out = []
    for name, cls in sorted(EVENT_TYPES.items()):
        for f in dataclasses.fields(cls):
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                out.append((name, f.name))
    return out


@pytest.mark.parametrize(("type_name", "missing"), _required_fields())
def test_missing_required_field_raises_decode_error(type_name: str, missing: str) -> None:
    cls = EVENT_TYPES[type_name]
    example = _example(cls)
    data = {k: v for k, v in example.to_data().items() if k != missing}
    with pytest.raises(DecodeError, match=missing):
        decode(raw(envelope_map(type_name, cls.VERSION, data)))


def default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    factory = f.default_factory
    assert callable(factory), f"{f.name} has no default"
    return factory()


def _example(cls: type[Event]) -> Event:
    """Any valid instance (hypothesis' example() is not for use inside tests)."""
    hints = typing.get_type_hints(cls)
    simple = {str: "x", int: 1, float: 1.0, bool: False}
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            values[f.name] = None
        elif origin is list:
            values[f.name] = []
        elif origin is dict:
            values[f.name] = {}
        else:
            values[f.name] = simple[tp]
    return cls(**values)


def test_fields_added_with_a_default_decode_from_older_payloads() -> None:
    """A field that has a default may be missing from a stored payload (added later)."""
    defaulted = [
        (name, f)
        for name, cls in sorted(EVENT_TYPES.items())
        for f in dataclasses.fields(cls)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    ]
    # HostLinkCreated.detail (and later additions) have defaults: the rule is exercised for real.
    assert defaulted, "no event type has a defaulted field: this test would check nothing"
    for name, f in defaulted:
        cls = EVENT_TYPES[name]
        data = {k: v for k, v in _example(cls).to_data().items() if k != f.name}
        env = decode(raw(envelope_map(name, cls.VERSION, data)))
        assert getattr(env.event, f.name) == default_of(f)


def test_unknown_data_fields_are_ignored() -> None:
    """A reader may be older than a compatible writer that added an optional field."""
    env = decode(raw(envelope_map(data={"network_id": "7", "added_later": [1, 2]})))
    assert env.event == NetworkDeleted(network_id="7")


# --- upcasting -----------------------------------------------------------------------------


V0_BASE = {
    "network_id": "1",
    "address": "10.0.0.3",
    "instance": "i-1",
    "mac": "02:16:3e:00:00:01",
}


def test_fixed_ip_allocated_v0_is_upcast() -> None:
    env = decode(raw(envelope_map("FixedIpAllocated", 0, {**V0_BASE, "host_name": "compute1"})))
    assert env.event == FixedIpAllocated(**V0_BASE, host="compute1", project=None)
    assert env.event_id == "c1:0"


@pytest.mark.parametrize(
    ("extra", "host"),
    [
        ({"host_name": None}, None),
        ({}, None),
        ({"host": "c2"}, "c2"),
        ({"host_name": "c1", "host": "c2"}, "c1"),
    ],
)
def test_fixed_ip_allocated_v0_host_variants(extra: dict[str, Any], host: str | None) -> None:
    env = decode(raw(envelope_map("FixedIpAllocated", 0, {**V0_BASE, **extra})))
    assert isinstance(env.event, FixedIpAllocated)
    assert env.event.host == host and env.event.project is None


def test_upcaster_does_not_mutate_its_input() -> None:
    data = {**V0_BASE, "host_name": "compute1"}
    before = dict(data)
    upcast("FixedIpAllocated", 0, data)
    assert data == before


def test_v0_missing_a_field_raises_decode_error() -> None:
    data = {k: v for k, v in V0_BASE.items() if k != "address"}
    with pytest.raises(DecodeError, match="address"):
        decode(raw(envelope_map("FixedIpAllocated", 0, data)))


def test_old_version_without_an_upcaster_raises_decode_error() -> None:
    assert ("NetworkDeleted", 0) not in UPCASTERS
    with pytest.raises(DecodeError, match="no upcaster"):
        decode(raw(envelope_map("NetworkDeleted", 0)))


def test_every_upcaster_chain_reaches_the_current_version() -> None:
    for (type_name, version), _fn in UPCASTERS.items():
        assert type_name in EVENT_TYPES, f"upcaster for unknown type {type_name}"
        assert 0 <= version < EVENT_TYPES[type_name].VERSION
        for v in range(version, EVENT_TYPES[type_name].VERSION):
            assert (type_name, v) in UPCASTERS, f"{type_name}: gap at v{v}"


# --- stored payloads of earlier code -------------------------------------------------------


def load_fixture_stream() -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for path in sorted(FIXTURES.glob("*.jsonl")):
        with path.open() as f:
            lines.extend(json.loads(line) for line in f if line.strip())
    return lines


STREAM = load_fixture_stream()


def test_fixtures_are_present() -> None:
    assert len(STREAM) >= 30
    assert {(line["type"], line["version"]) for line in STREAM} >= {("FixedIpAllocated", 0)}


def test_every_domain_event_type_has_a_stored_payload() -> None:
    domain = {name for name, cls in EVENT_TYPES.items() if cls.__module__ == domain_types.__name__}
    stored = {line["type"] for line in STREAM}
    missing = sorted(domain - stored)
    assert not missing, (
        f"no stored payload for {missing}: add lines to a .jsonl file under {FIXTURES} "
        "(see its README) so that replay of today's payloads is tested forever"
    )


@pytest.mark.parametrize(
    "line", STREAM, ids=[f"{x['seq']}-{x['type']}-v{x['version']}" for x in STREAM]
)
def test_stored_payload_decodes_as_recorded(line: dict[str, Any]) -> None:
    env = decode(base64.b64decode(line["payload"]))
    assert env.type == line["type"]
    if "legacy subject" in line.get("note", ""):
        # Stored where an earlier version put this type; readers must still fold it.
        assert env.event.subject() != line["subject"]
    else:
        assert env.event.subject() == line["subject"]
    got = env.event.to_data()
    expected = line["data"]
    assert {k: got[k] for k in expected} == expected
    # Fields added since the payload was stored hold their declared defaults.
    defaults = {
        f.name: default_of(f) for f in dataclasses.fields(type(env.event)) if f.name not in expected
    }
    assert {k: got[k] for k in defaults} == defaults
    assert env.command_id == f"fx-{line['seq']}"


def replay() -> State:
    state = State()
    for line in sorted(STREAM, key=lambda x: x["seq"]):
        env = decode(base64.b64decode(line["payload"]))
        assert state.apply(line["seq"], line["subject"], env)
    return state


def test_replaying_the_stored_stream_gives_the_recorded_state() -> None:
    state = replay()
    n1, n2 = (state.networks[k] for k in ("1", "2"))
    assert "3" not in state.networks  # deleted: gone from the fold, its range with it
    assert state.project_networks == {"p1": "1"}
    assert state.next_network_number == 4

    assert sorted(n1.fixed) == ["10.9.0.3", "10.9.0.6"]
    old = n1.fixed["10.9.0.3"]
    assert (old.instance, old.host, old.project, old.leased, old.allocated) == (
        "i-old-1",
        "compute1",
        None,
        True,
        True,
    )
    new = n1.fixed["10.9.0.6"]
    assert (new.instance, new.host, new.project) == ("i-new-1", "compute2", "p1")
    assert n1.by_instance == {"i-old-1": "10.9.0.3", "i-new-1": "10.9.0.6"}
    assert n1.pool.used == 2

    assert sorted(n2.fixed) == ["10.9.1.2"]
    assert n2.fixed["10.9.1.2"].leased is False
    assert state.instance_ips == {
        "i-old-1": (("1", "10.9.0.3"),),
        "i-new-1": (("1", "10.9.0.6"),),
        "i-flat": (("2", "10.9.1.2"),),
    }

    pool = state.pools["public"]
    assert sorted(pool.floating) == ["203.0.113.1"]
    f = pool.floating["203.0.113.1"]
    assert (f.project, f.fixed_address, f.network_id, f.instance) == (
        "p1",
        "10.9.0.3",
        "1",
        "i-old-1",
    )
    assert state.last_seq == max(line["seq"] for line in STREAM)


def test_replayed_ipv6_payloads() -> None:
    """The IPv6 payloads (issue 14) fold into served /64s; old networks' cidr_v6 stays unserved."""
    state = replay()
    dual, only = state.networks["v6d"], state.networks["v6o"]
    assert str(dual.ipnet) == "10.98.0.0/24" and str(dual.ipnet6) == "2001:db8:98::/64"
    assert dual.pool6 is None  # slaac: addresses come from the MAC
    assert only.ipnet is None and str(only.ipnet6) == "2001:db8:99::/64"
    assert only.pool6 is not None and only.pool6.used == 0
    assert dual.fixed == only.fixed == {} and dual.v6 == only.v6 == {}
    assert all(n.ipnet6 is None for n in (state.networks[k] for k in ("1", "2", "rx")))
    admin = {"role": "admin"}
    a = decide(
        state,
        parse_command(
            "fixed_ip.allocate",
            {"command_id": "t6", "actor": admin, "args": {"instance": "x", "network_id": "v6o"}},
        ),
    )
    assert a.result["address"] == a.result["address_v6"] == "2001:db8:99::2"


def test_decisions_on_a_replayed_old_stream() -> None:
    """The old stream is not just readable: today's deciders work on top of it."""
    state = replay()
    admin = {"role": "admin"}
    ids = iter(range(100))

    def run(name: str, **args: Any) -> Any:
        payload = {"command_id": f"t-{next(ids)}", "actor": admin, "args": args}
        return decide(state, parse_command(name, payload))

    # Lowest free in network 1 (p1's): .3 and .6 are held, .4 was released, .5 freed.
    assert (
        run("fixed_ip.allocate", instance="i-today", project="p1").result["address"] == "10.9.0.4"
    )
    assert (
        run("fixed_ip.allocate", instance="i-today", network_id="2").result["address"] == "10.9.1.3"
    )
    # The v0 allocation is still the instance's: deallocating it disassociates its floating IP,
    # and (leased, vlan) holds the address until DHCP lets go.
    d = run("fixed_ip.deallocate", instance="i-old-1")
    assert [e.TYPE for e in d.events] == ["FloatingIpDisassociated", "FixedIpDeallocated"]
    assert d.result["deallocated"] == [
        {"address": "10.9.0.3", "address_v6": None, "network_id": "1", "freed": False}
    ]
    assert run("floating_ip.allocate", project="p2").result["address"] == "203.0.113.2"
