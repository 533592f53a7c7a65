"""Review h102 of 20f83d1 and 10429f1 (journal/catchup.py): the catch-up child's frames,
pickled without pickle's memo and sent small first, reach the fold as the child read them.

Without the memo an object met twice is written twice and one holding itself cannot be
written: a frame holds tuples of an int, a str and bytes (the child's subjects and payloads,
one object per message; a malformed message is only other bytes), so the same subject or
payload object in several messages comes back equal, and the fold takes every message once,
in order, whatever the frame sizes and however the pipe cuts the bytes."""

from __future__ import annotations

import asyncio
import pickle

from hypothesis import given
from hypothesis import strategies as st

from netledger.journal import catchup

subjects = st.sampled_from(
    ["netledger.evt.registry", "netledger.evt.network.1", "netledger.evt.host.h\udc80"]
)
payloads = st.one_of(st.binary(max_size=40), st.just(b""), st.just(b"\x80\x04garbage."))


@given(
    st.lists(st.tuples(subjects, payloads), max_size=300),
    st.lists(st.integers(1, 2000), max_size=20),
    st.booleans(),
    st.text(max_size=30),
)
def test_frames_reach_the_fold_as_read(
    messages: list[tuple[str, bytes]], cuts: list[int], shared: bool, failure: str
) -> None:
    first = 7
    if shared and messages:  # the same objects in every message (written once each)
        subject, data = messages[0]
        msgs = [(first + i, subject, data) for i in range(len(messages))]
    else:
        msgs = [(first + i, s, d) for i, (s, d) in enumerate(messages)]
    upto = first + len(msgs) + 5  # more asked than sent: the "failed" frame ends the read
    # As the child sends them: small first, then twice as many each, up to CHUNK.
    stream, at, limit = b"", 0, catchup.FIRST_CHUNK
    while at < len(msgs):
        stream += catchup.frame(("msgs", msgs[at : at + limit]))
        at += limit
        limit = min(2 * limit, catchup.CHUNK)
    stream += catchup.frame(("failed", failure))
    for kind, body in [("msgs", msgs), ("failed", failure), ("read", (3, 4))]:
        raw = catchup.frame((kind, body))
        assert pickle.loads(raw[4:]) == (kind, body)
        assert catchup._LEN.unpack_from(raw)[0] == len(raw) - 4

    async def feed() -> tuple[list[tuple[int, str, bytes]], str | None]:
        folded: list[tuple[int, str, bytes]] = []
        f = catchup._Frames(lambda seq, s, d: folded.append((seq, s, d)), first, upto)
        pos = 0
        for n in [*cuts, len(stream)]:
            f.data_received(stream[pos : pos + n])
            pos += n
        f.data_received(stream[pos:])
        assert f.ended.done()
        return folded, f.failure

    folded, why = asyncio.run(feed())
    assert folded == msgs
    assert why == failure
