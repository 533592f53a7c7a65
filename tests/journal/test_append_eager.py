"""What issue 15 cut off one client's way to its answer, on a real nats-server: the only request
in the air and a lone lane's publish are written in the step that sends them (not at the end of
the event loop's pass), and a publish's ack is read without json — with the same answers."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netledger.journal import append
from netledger.journal.append import Appender, Outgoing
from netledger.journal.natsclient import NetledgerNats, header_block
from netledger.journal.stream import EXPECTED_STREAM, MSG_ID, Connection

SUBJ = "netledger.evt.network.eager"


def _by_json(data: bytes) -> int:
    """The ack's sequence as json reads it (what _ack_seq did before its fast path)."""
    resp = json.loads(data)
    seq = int(resp["seq"])
    return -seq if resp.get("duplicate") else seq


@given(
    stream=st.text(max_size=20),
    seq=st.integers(min_value=0, max_value=2**63),
    duplicate=st.sampled_from([None, True, False]),
    domain=st.none() | st.text(max_size=8),
)
def test_an_ack_reads_the_same_with_or_without_json(
    stream: str, seq: int, duplicate: bool | None, domain: str | None
) -> None:
    ack: dict[str, object] = {"stream": stream}
    if domain is not None:
        ack["domain"] = domain
    ack["seq"] = seq
    if duplicate is not None:
        ack["duplicate"] = duplicate
    for ascii_only in (True, False):
        data = json.dumps(ack, separators=(",", ":"), ensure_ascii=ascii_only).encode()
        assert append._ack_seq(data) == _by_json(data)
        # nats-server 2.15 writes a duplicate's flag with a space after its colon
        spaced = data.replace(b'"duplicate":', b'"duplicate": ')
        assert append._ack_seq(spaced) == _by_json(spaced)


async def test_the_servers_acks_take_the_fast_read(conn: Connection) -> None:
    """A stored publish's ack and a duplicate's, as nats-server writes them, are read by the
    pattern (not json): the fast path is the one taken, with json's answer."""
    nc = conn.nc
    hdr = header_block({MSG_ID: "eager-1", EXPECTED_STREAM: conn.stream})
    acks = [(await nc.request_raw(SUBJ, b"x", 5.0, hdr))[0] for _ in range(2)]
    for ack in acks:
        assert append._PLAIN_ACK.fullmatch(ack) is not None, ack
    first, again = (append._ack_seq(a) for a in acks)
    assert first > 0 and again == -first
    assert [append._ack_seq(a) for a in acks] == [_by_json(a) for a in acks]


async def echo(nc: NetledgerNats, subject: str) -> None:
    """A responder answering each request with its data reversed."""

    def on(subj: bytes, reply: bytes, data: bytes, hdr: bytes | None) -> None:
        nc.publish_nowait(reply.decode(), data[::-1])

    await nc.subscribe_direct(subject, on)


def _pending(nc: NetledgerNats) -> int:
    return int(nc._pending_data_size)


async def test_the_only_request_in_the_air_is_written_at_once(conn: Connection) -> None:
    nc = conn.nc
    await nc.ready_for_requests()
    hdr = header_block({MSG_ID: "eager-2", EXPECTED_STREAM: conn.stream})
    one = asyncio.ensure_future(nc.request_raw(SUBJ, b"x", 5.0, hdr))
    await asyncio.sleep(0)  # the request's first step ran: sent, waiting for its reply
    assert not one.done() and _pending(nc) == 0
    assert not nc._write_soon  # and no pass of the loop is spent on writing it
    await one
    # Two in the air share the write at the pass's end, as before.
    hdrs = [header_block({MSG_ID: f"eager-3-{i}", EXPECTED_STREAM: conn.stream}) for i in (0, 1)]
    two = [asyncio.ensure_future(nc.request_raw(SUBJ, b"x", 5.0, h)) for h in hdrs]
    await asyncio.sleep(0)
    assert _pending(nc) > 0
    await asyncio.gather(*two)


async def test_an_eager_appender_writes_its_publish_at_once(conn: Connection) -> None:
    appender = Appender(conn)
    await conn.nc.ready_for_requests()
    for i, eager in enumerate((None, lambda: True, lambda: False)):
        appender.eager = eager
        msg = Outgoing(SUBJ, b"x", f"eager-4-{i}")
        task = asyncio.ensure_future(appender.append([msg], {}))
        await asyncio.sleep(0)
        at_once = eager is not None and eager()
        assert (_pending(conn.nc) == 0) == at_once
        assert conn.nc._write_soon != at_once
        assert await task > 0


async def test_a_write_at_once_that_fails_goes_out_at_the_passs_end(
    conn: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """write_now raising (a transport closing under it): the request stays pending, the end
    of the pass writes it, and its reply comes."""
    nc = conn.nc
    await echo(nc, "t.eager.echo")
    await nc.flush()
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise RuntimeError("transport closing")

    monkeypatch.setattr(nc, "write_now", broken)
    assert (await nc.request_raw("t.eager.echo", b"ab", 5.0))[0] == b"ba"
    assert calls
