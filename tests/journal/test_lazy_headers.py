"""Headers parsed when first read (journal/natsclient.py LazyHeaders): the same headers as
nats-py's own ``_process_headers`` for any header block, and on a real server the stored
messages' headers read as before."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client as NATS

from netledger.journal.natsclient import LazyHeaders, NetledgerNats
from netledger.journal.stream import Connection

_LINE = st.tuples(
    st.text(st.characters(codec="latin-1"), max_size=8),
    st.sampled_from([":", ": ", ":\t", ""]),
    st.text(max_size=8),
).map(lambda t: t[0].encode("latin-1") + t[1].encode() + t[2].encode("utf-8", "surrogatepass"))

_STATUS = st.sampled_from([b"", b" 100 Idle Heartbeat", b" 404", b" 503", b" 408 Request Timeout"])


def _outcome(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except Exception as exc:
        return exc


@given(status=_STATUS, lines=st.lists(_LINE, max_size=5), end=st.sampled_from([b"\r\n\r\n", b""]))
def test_the_same_headers_as_nats_py(status: bytes, lines: list[bytes], end: bytes) -> None:
    lines = [x for x in lines if b"\r" not in x and b"\n" not in x]
    block = b"NATS/1.0" + status + b"\r\n" + b"\r\n".join(lines) + end
    nc = NetledgerNats()
    mine = _outcome(nc._process_headers(block))
    theirs = _outcome(NATS._process_headers(nc, block))
    if isinstance(theirs, Exception):  # nats-py's own status parsing fails on junk: ours too
        assert type(mine) is type(theirs)
        return
    if isinstance(mine, LazyHeaders):
        assert not status, "a status line is nats-py's to parse"
        assert mine  # true, as nats-py's headers are
        # Equal, or (a block whose every line is invalid) empty where nats-py says None.
        assert dict(mine) == (theirs or {})
        assert mine == (theirs or {}) and list(mine.items()) == list((theirs or {}).items())
        for k in theirs or {}:
            assert k in mine and mine[k] == mine.get(k) == theirs[k]  # type: ignore[index]
    else:
        assert mine == theirs


async def test_stored_messages_headers_read_as_before(conn: Connection) -> None:
    js = conn.nc.jetstream()
    await js.publish("netledger.evt.network.lazy", b"x", headers={"Nats-Msg-Id": "m-1", "A": "b"})
    sub = await js.subscribe("netledger.evt.network.lazy", ordered_consumer=True)
    try:
        msg = await sub.next_msg(timeout=5)
    finally:
        await sub.unsubscribe()
    assert isinstance(msg.headers, LazyHeaders)
    assert msg.headers.get("Nats-Msg-Id") == "m-1" and dict(msg.headers) == {
        "Nats-Msg-Id": "m-1",
        "A": "b",
    }
    got = await js.get_msg(conn.stream, msg.metadata.sequence.stream)
    assert got.headers is not None and got.headers["Nats-Msg-Id"] == "m-1"
