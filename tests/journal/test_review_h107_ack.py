"""Review h107 of the publish ack read without json (journal/append.py ``_PLAIN_ACK``,
``_ack_seq``; eccca9f): for any ack body nats-server could plausibly send — its fields in any
order, with or without spaces, a domain, an atomic batch's fields, a counter's value, errors,
stream names with characters json escapes — the pattern reads what json reads, or leaves it to
json. And on real servers: a domain's acks, an error ack, a write at once across a restart."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.js.errors import APIError

from netledger.common.natsserver import EmbeddedNats, free_port
from netledger.journal import append
from netledger.journal.natsclient import header_block
from netledger.journal.stream import (
    EXPECTED_STREAM,
    MSG_ID,
    Connection,
    connect,
    ensure_stream,
    last_seq,
)

SUBJ = "netledger.evt.network.h107"


def by_json(data: bytes) -> int:
    """What ``_ack_seq`` read with json alone (before its fast path)."""
    resp = json.loads(data)
    if "error" in resp:
        raise APIError.from_error(resp["error"])
    seq = int(resp["seq"])
    return -seq if resp.get("duplicate") else seq


def same_reading(data: bytes) -> None:
    try:
        want: Any = by_json(data)
    except Exception as exc:
        want = type(exc)
    try:
        got: Any = append._ack_seq(data)
    except Exception as exc:
        got = type(exc)
    assert got == want, data


names = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12
) | st.sampled_from(['NET"LEDGER', "NET\\LEDGER", "NETLEDGER", 'a,"seq":1', "ünï"])


@st.composite
def acks(draw: st.DrawFn) -> bytes:
    fields: list[tuple[str, Any]] = [("stream", draw(names))]
    if draw(st.booleans()):
        fields.append(("seq", draw(st.integers(0, 2**64 - 1))))
    if draw(st.booleans()):
        fields.append(("domain", draw(names)))
    if draw(st.booleans()):
        fields.append(("duplicate", draw(st.booleans())))
    if draw(st.booleans()):
        fields += [("batch", draw(names)), ("count", draw(st.integers(1, 1000)))]
    if draw(st.booleans()):
        fields.append(("val", draw(st.text(max_size=5))))
    if draw(st.booleans()):
        fields.append(
            (
                "error",
                {"code": 400, "err_code": draw(st.integers(10000, 10200)), "description": "x"},
            )
        )
    fields = draw(st.permutations(fields))
    sep = draw(st.sampled_from([(",", ":"), (", ", ": "), (",", ": "), (", ", ":")]))
    body = json.dumps(dict(fields), separators=sep, ensure_ascii=draw(st.booleans()))
    return body.encode()


@given(acks())
def test_any_plausible_ack_reads_as_json_reads_it(data: bytes) -> None:
    same_reading(data)


@given(st.binary(max_size=60))
def test_no_bytes_are_read_where_json_reads_otherwise(data: bytes) -> None:
    """Where both read a sequence, the same one (the pattern may read what json cannot — a
    stream name holding a control character — which no server sends)."""
    try:
        want = by_json(data)
    except Exception:
        return
    assert append._ack_seq(data) == want


async def test_the_servers_acks_read_alike(conn: Connection) -> None:
    """A stored publish, a duplicate, and a refused one (a wrong expected last sequence) as
    the server writes them."""
    nc = conn.nc
    ok = header_block({MSG_ID: "h107-1", EXPECTED_STREAM: conn.stream})
    bad = header_block({MSG_ID: "h107-2", "Nats-Expected-Last-Sequence": "999"})
    bodies = [(await nc.request_raw(SUBJ, b"x", 5.0, h))[0] for h in (ok, ok, bad)]
    for data in bodies:
        same_reading(data)
    with pytest.raises(APIError) as err:
        append._ack_seq(bodies[2])
    assert err.value.err_code == 10071


async def test_a_domains_acks_read_alike(tmp_path: Path) -> None:
    """A server with a JetStream domain names it in every ack (``"domain":"hub"``): read by
    json, with its answer."""
    store = (tmp_path / "d" / "jetstream").resolve()
    server = EmbeddedNats(
        data_dir=tmp_path / "d",
        port=free_port(),
        sync_interval="default",
        extra_config=f'jetstream {{\n  store_dir: "{store}"\n  domain: hub\n}}\n',
    )
    server.start()
    try:
        c = await connect(server.url, name="h107-domain")
        try:
            await ensure_stream(c)
            hdr = header_block({MSG_ID: "h107-d", EXPECTED_STREAM: c.stream})
            bodies = [(await c.nc.request_raw(SUBJ, b"x", 5.0, hdr))[0] for _ in range(2)]
            assert all(b'"domain":"hub"' in b for b in bodies), bodies
            for data in bodies:
                same_reading(data)
            assert append._ack_seq(bodies[1]) == -append._ack_seq(bodies[0])
        finally:
            await c.close()
    finally:
        server.stop()


async def test_writes_at_once_across_a_restart_lose_and_double_nothing(tmp_path: Path) -> None:
    """Publishes written at once (``at_once``) while the server restarts under them: each
    either answered with its sequence or failed (sent again by its caller, under its id), and
    the stream holds every id once, in the order of the answers."""
    port = free_port()
    server = EmbeddedNats(data_dir=tmp_path / "r", port=port, sync_interval="default")
    server.start()
    c = await connect(server.url, name="h107-restart")
    try:
        await ensure_stream(c)
        appender = append.Appender(c)
        appender.eager = lambda: True
        await c.nc.ready_for_requests()
        stored: dict[str, int] = {}

        async def publish(i: int) -> None:
            msg = append.Outgoing(SUBJ, str(i).encode(), f"h107-r-{i}")
            while True:
                try:
                    seq = await appender.append([msg], {})
                except Exception:
                    await asyncio.sleep(0.05)
                    continue
                stored[msg.msg_id] = abs(seq)
                return

        async def writer(k: int) -> None:
            for i in range(k * 1000, k * 1000 + 60):
                await publish(i)

        async def restart() -> None:
            while len(stored) < 40:
                await asyncio.sleep(0.01)
            await asyncio.to_thread(server.stop)
            await asyncio.to_thread(server.start)

        await asyncio.gather(*(writer(k) for k in range(4)), restart())
        assert len(stored) == 240
        end = await last_seq(c)
        assert sorted(stored.values()) == list(range(1, end + 1))  # every id once, no other
    finally:
        await c.close()
        server.stop()
