"""``journal.fastread``'s parser path delivers what nats-py's own parser delivers, in order.

A random stream of protocol frames (stored messages of the projector's subscription and of
another one, status messages, messages without headers, PINGs), cut into random pieces as a
socket may deliver them, goes through a nats-py client with the fast path installed. Every
stored message of the registered subscription must reach its handler (sequence, subject,
data, time, pending as the reply says); everything else must reach nats-py's own
``_process_msg`` / ``_process_ping`` as nats-py's parser hands it over; all in the order of
the stream.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client
from nats.protocol.parser import Parser

from netledger.journal import fastread

OURS, OTHER = 7, 9
STORED_HEADERS = b"NATS/1.0\r\nNats-Msg-Id: x\r\n\r\n"
STATUS_HEADERS = b"NATS/1.0 100 Idle Heartbeat\r\n\r\n"


class _Sub:
    def __init__(self, cb: Any) -> None:
        self._cb = cb
        self._jsi = None
        self._received = 0


async def _cb(msg: Any) -> None:  # the callback the handler stands in for
    raise AssertionError("not called")


def _frame(kind: str, n: int, payload: bytes) -> bytes:
    sid = OURS if kind in ("ours", "status", "bare") else OTHER
    reply = f"$JS.ACK.S.C.1.{n}.{n}.{1_700_000_000_000_000_000 + n}.{1000 - n}"
    subject = f"netledger.evt.network.{n}"
    if kind == "ping":
        return b"PING\r\n"
    if kind == "bare":  # no headers at all
        return f"MSG {subject} {sid} {reply} {len(payload)}\r\n".encode() + payload + b"\r\n"
    hdr = STATUS_HEADERS if kind == "status" else STORED_HEADERS
    if kind == "status":
        reply = ""
    line = f"HMSG {subject} {sid} {reply} {len(hdr)} {len(hdr) + len(payload)}\r\n".replace(
        "  ", " "
    )
    return line.encode() + hdr + payload + b"\r\n"


async def _run(frames: list[bytes], cuts: list[int], fast: bool) -> list[Any]:
    nc = Client()
    seen: list[Any] = []

    async def process_msg(sid: int, subject: bytes, reply: bytes, data: bytes, hdr: Any) -> None:
        seen.append(("nats", sid, bytes(subject), bytes(reply), data, hdr))

    async def process_ping() -> None:
        seen.append(("ping",))

    nc._process_msg = process_msg  # type: ignore[method-assign]
    nc._process_ping = process_ping  # type: ignore[method-assign]
    nc._subs[OURS] = _Sub(_cb)  # type: ignore[assignment]
    nc._subs[OTHER] = _Sub(None)  # type: ignore[assignment]
    if fast:
        assert fastread.install(nc)
        assert fastread.register(nc, _cb, lambda *a: seen.append(("ours", *a)))
        assert "parse" in vars(nc._ps)
    stream = b"".join(frames)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    for a, b in itertools.pairwise(points):
        await nc._ps.parse(stream[a:b])
    return seen


def _expected(reference: list[Any]) -> list[Any]:
    """nats-py's deliveries, with the registered subscription's stored messages as the
    handler gets them."""
    out = []
    for item in reference:
        if (
            item[0] == "nats"
            and item[1] == OURS
            and item[3]
            and (item[5] is None or item[5].startswith(b"NATS/1.0\r\n"))
        ):
            seq, _, ts, pending = fastread.reply_numbers(item[3].decode())
            out.append(("ours", seq, item[2].decode(), item[4], ts, pending))
        else:
            out.append(item)
    return out


FRAMES = st.lists(
    st.tuples(
        st.sampled_from(["ours", "ours", "ours", "other", "status", "bare", "ping"]),
        st.binary(max_size=300),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(FRAMES, st.lists(st.integers(0, 20_000), max_size=30))
async def test_the_fast_parser_delivers_what_nats_py_delivers(
    frames: list[tuple[str, bytes]], cuts: list[int]
) -> None:
    raw = [_frame(kind, n + 1, payload) for n, (kind, payload) in enumerate(frames)]
    reference = await _run(raw, cuts, fast=False)
    assert len(reference) == len(raw)
    assert await _run(raw, cuts, fast=True) == _expected(reference)


async def test_only_a_parser_as_nats_py_builds_it_is_replaced() -> None:
    nc = Client()

    class Other(Parser):
        async def parse(self, data: bytes = b"") -> None:
            await super().parse(data)

    nc._ps = Other(nc)
    assert fastread.install(nc)  # messages still take the wrapped _process_msg
    assert "parse" not in vars(nc._ps)


async def test_another_nats_py_release_keeps_its_own_path(monkeypatch: Any) -> None:
    import nats.aio.client as nats_client

    monkeypatch.setattr(nats_client, "__version__", "2.17.0")
    nc = Client()
    assert not fastread.install(nc)
    assert "_process_msg" not in vars(nc) and "parse" not in vars(nc._ps)
