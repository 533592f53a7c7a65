"""journal/natsclient.py on a real nats-server: the cheap request, publish and receive paths
behave as nats-py's own (replies, no responders, timeouts, order, headers, reconnects), and the
Appender's acks read through them keep JetStream's answers (sequence, duplicate, conflict)."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import nats.errors
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client as NATS

from netledger.common.natsserver import EmbeddedNats
from netledger.events.errors import LogUnavailable
from netledger.journal.append import Appender, Outgoing, WrongLastSequence
from netledger.journal.natsclient import NetledgerNats, header_block
from netledger.journal.stream import Connection, connect, ensure_stream

SUBJ = "netledger.evt.network.fast"


async def echo(nc: NetledgerNats, subject: str) -> None:
    """A responder answering each request with its data reversed (a direct subscription)."""

    def on(subj: bytes, reply: bytes, data: bytes, hdr: bytes | None) -> None:
        nc.publish_nowait(reply.decode(), data[::-1])

    await nc.subscribe_direct(subject, on)


async def settled(plain: NATS) -> None:
    """Plain nats-py's subscriptions in place on the server. nats-py 2.16's ``flush`` writes
    its PING ahead of a SUB still waiting for the flusher task, so one flush does not prove
    the SUB arrived (our client queues it behind: test_a_flush_is_sent_after_what_was_queued);
    by the first PONG the flusher has written the SUB, and the second PING follows it."""
    await plain.flush()
    await plain.flush()


async def test_a_flush_is_sent_after_what_was_queued(conn: Connection) -> None:
    """A subscription then a flush: on the wire the SUB goes before the PING, so the PONG
    means the subscription is in place (nats-py 2.16 wrote the PING first)."""
    nc = conn.nc
    wire: list[bytes] = []
    transport: Any = nc._transport
    write, writelines = transport.write, transport.writelines
    transport.write = lambda data: (wire.append(bytes(data)), write(data))[1]
    transport.writelines = lambda parts: (wire.extend(bytes(p) for p in parts), writelines(parts))[
        1
    ]
    try:
        await nc.subscribe("t.flushed", cb=_ignore)
        await nc.flush()
    finally:
        del transport.write, transport.writelines
    sent = b"".join(wire)
    assert b"SUB t.flushed" in sent
    assert sent.index(b"SUB t.flushed") < sent.index(b"PING\r\n")


async def _ignore(msg: nats.aio.msg.Msg) -> None:
    pass


async def test_a_request_gets_its_reply(conn: Connection) -> None:
    nc = conn.nc
    await echo(nc, "t.echo")
    replies = await asyncio.gather(
        *(nc.request_raw("t.echo", f"abc{i}".encode(), 5.0) for i in range(50))
    )
    assert [d for d, _ in replies] == [f"abc{i}".encode()[::-1] for i in range(50)]
    assert nc._replies == {}


async def test_no_responders_and_timeout_as_nats_py_says_them(conn: Connection) -> None:
    nc = conn.nc
    with pytest.raises(nats.errors.NoRespondersError):
        await nc.request_raw("t.nobody", b"x", 5.0)
    # Someone listens but does not answer: a timeout; the request is forgotten, and a late
    # answer to it is dropped.
    late: list[bytes] = []

    def silent(subj: bytes, reply: bytes, data: bytes, hdr: bytes | None) -> None:
        late.append(reply)

    await nc.subscribe_direct("t.silent", silent)
    with pytest.raises(nats.errors.TimeoutError):
        await nc.request_raw("t.silent", b"x", 0.2)
    assert nc._replies == {}
    assert late
    nc.publish_nowait(late[0].decode(), b"too late")
    await nc.flush()
    assert nc._replies == {}


async def test_a_cancelled_request_is_forgotten(conn: Connection) -> None:
    nc = conn.nc
    await nc.subscribe_direct("t.never", lambda *a: None)
    task = asyncio.ensure_future(nc.request_raw("t.never", b"x", 30.0))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert nc._replies == {}


async def test_publishes_of_one_pass_arrive_in_order_with_their_headers(
    conn: Connection,
) -> None:
    """Plain nats-py on the other end: what publish_nowait sends is what nats-py's publish
    would have sent (subject, reply, headers parsed the same)."""
    nc = conn.nc
    other = await nats.connect(nc.connected_url.geturl())  # type: ignore[union-attr]
    got: list[nats.aio.msg.Msg] = []
    done = asyncio.Event()

    async def cb(msg: nats.aio.msg.Msg) -> None:
        got.append(msg)
        if len(got) == 201:
            done.set()

    await other.subscribe("t.order.>", cb=cb)
    await settled(other)
    headers = {"Nats-Msg-Id": "c-1:0", "Odd": " spaced value ", "Broken": "a\r\nb"}
    for i in range(200):
        nc.publish_nowait(f"t.order.{i}", b"%d" % i, hdr=header_block(headers) if i % 2 else None)
    await nc.publish("t.order.x", b"last", headers=headers)  # nats-py's own, after ours
    await asyncio.wait_for(done.wait(), 10)
    await other.close()
    assert [m.data for m in got] == [b"%d" % i for i in range(200)] + [b"last"]
    assert (
        got[1].headers
        == got[200].headers
        == {
            "Nats-Msg-Id": "c-1:0",
            "Odd": "spaced value",
            "Broken": "a  b",
        }
    )
    assert got[0].headers is None


@given(
    st.lists(
        st.tuples(
            st.text(st.characters(codec="latin-1"), max_size=8),
            st.sampled_from([":", ": ", ":\t", ""]),
            st.text(max_size=8),
        ),
        max_size=5,
    )
)
def test_header_lines_parse_as_nats_py_parses_them(
    lines: list[tuple[str, str, str]],
) -> None:
    raw = b"\r\n".join(
        k.encode("latin-1") + sep.encode() + v.encode("utf-8", "surrogatepass")
        for k, sep, v in lines
        if "\r" not in k + v and "\n" not in k + v
    )
    assert NetledgerNats._parse_header_lines(raw) == NATS._parse_header_lines(raw)


async def test_direct_subscriptions_and_requests_survive_a_server_restart(
    nats_server: EmbeddedNats,
) -> None:
    c = await connect(nats_server.url, name="test")
    try:
        await echo(c.nc, "t.echo")
        assert (await c.nc.request_raw("t.echo", b"ab", 5.0))[0] == b"ba"
        ev = c.reconnect_event()
        await asyncio.to_thread(nats_server.restart)
        await asyncio.wait_for(ev.wait(), 30)
        # Re-subscribed by nats-py on reconnect: the inbox and the direct subscription.
        for _ in range(50):
            try:
                assert (await c.nc.request_raw("t.echo", b"cd", 1.0))[0] == b"dc"
                break
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("no answer after the restart")
    finally:
        await c.close()


async def test_publishes_while_reconnecting_go_out_after_it(nats_server: EmbeddedNats) -> None:
    c = await connect(nats_server.url, name="test")
    other = None
    try:
        ev = c.reconnect_event()
        await asyncio.to_thread(nats_server.stop)
        for _ in range(100):
            if not c.nc.is_connected:
                break
            await asyncio.sleep(0.05)
        assert not c.nc.is_connected
        c.nc.publish_nowait("t.buffered", b"1")
        await asyncio.to_thread(nats_server.start)
        other = await nats.connect(nats_server.url)
        sub = await other.subscribe("t.buffered")
        await settled(other)
        # The buffered publish may reach the server before this subscriber: publish again
        # once reconnected and take whichever arrives (both prove the buffer was sent).
        await asyncio.wait_for(ev.wait(), 30)
        c.nc.publish_nowait("t.buffered", b"2")
        msg = await sub.next_msg(timeout=10)
        assert msg.data in (b"1", b"2")
    finally:
        if other is not None:
            await other.close()
        await c.close()


async def test_closed_connection_refuses_publishes(nats_url: str) -> None:
    c = await connect(nats_url, name="test")
    await c.close()
    with pytest.raises(nats.errors.ConnectionClosedError):
        c.nc.publish_nowait("t.x", b"1")


async def test_appender_acks_through_the_fast_path(conn: Connection) -> None:
    a = Appender(conn)
    m = Outgoing(SUBJ, b"one", "fast:0")
    seq = await a.append([m], {SUBJ: 0})
    # The same message id again, with the check it was decided on: JetStream's duplicate
    # detection runs after the sequence check, so this is a conflict (the lost-ack trap)...
    with pytest.raises(WrongLastSequence):
        await a.append([m], {SUBJ: 0})
    # ... and without a check the duplicate's ack names the first one's sequence.
    assert await a.append([m], {}) == seq
    assert (await conn.js.get_msg(conn.stream, seq)).headers == {
        "Nats-Msg-Id": "fast:0",
        "Nats-Expected-Last-Subject-Sequence": "0",
        "Nats-Expected-Stream": conn.stream,
    }


async def test_an_append_to_a_missing_stream_is_no_stream(nats_url: str) -> None:
    c = await connect(nats_url, name="test", stream="NOPE")
    try:
        # Nothing takes the subject: nats-py's NoStreamResponseError, which the Appender
        # reports as the log's trouble within its budget.
        a = Appender(c, budget=0.5)
        with pytest.raises(LogUnavailable):
            await a.append([Outgoing("nowhere.at.all", b"x", "x:0")], {})
    finally:
        await c.close()


async def test_a_wrong_stream_name_is_refused_by_the_server(nats_url: str) -> None:
    """The stream check js.publish(stream=) adds is kept: a subject of another stream is
    refused, not stored."""
    c = await connect(nats_url, name="test")
    try:
        await ensure_stream(c)
        await c.js.add_stream(name="OTHER", subjects=["other.>"])
        a = Appender(c, attempts=1)
        with pytest.raises(LogUnavailable, match=r"(?i)stream"):
            await a.append([Outgoing("other.x", b"x", "o:0")], {})
        info = await c.js.stream_info("OTHER")
        assert info.state.messages == 0
    finally:
        await c.close()
