"""What the reader takes out of a message's reply subject for the writer (``raw_message``).

* The stored time is exactly what nats-py's metadata gives (a datetime, rounded half to even to
  the microsecond, as epoch seconds), for any nanosecond timestamp.
* Sequence, time and pending agree with ``Msg.metadata`` in both reply layouts.
* What crosses the writer's pipes as a ``data_frame`` (no pickler memo) reads back as a frame.
"""

from __future__ import annotations

import datetime
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.msg import Msg

from netledger.journal.fastread import reply_numbers
from netledger.projector.frames import FrameReader, data_frame, frame, raw_message, stream_time

from .test_projector_writer import REPLIES


def _reference(ts_ns: int) -> float:
    return datetime.datetime.fromtimestamp(ts_ns / 1_000_000_000.0, datetime.UTC).timestamp()


@given(st.integers(0, 4_000_000_000 * 10**9))
def test_stream_time_is_what_datetime_gives(ts_ns: int) -> None:
    assert stream_time(ts_ns) == _reference(ts_ns)


@given(
    st.integers(1_700_000_000, 1_900_000_000),
    st.integers(0, 1_999_999),
    st.sampled_from([-1, 0, 1]),
)
def test_stream_time_at_half_microseconds(sec: int, halves: int, nudge: int) -> None:
    # the ties (and their neighbours) are where rounding differs if it is not done the same way
    ts_ns = sec * 10**9 + halves * 500 + nudge
    assert stream_time(ts_ns) == _reference(ts_ns)


@pytest.mark.parametrize("reply", REPLIES)
def test_raw_message_reads_the_reply_as_nats_py_does(reply: str) -> None:
    md = Msg.Metadata._from_reply(reply)
    seq, subject, data, at, pending = raw_message(
        md.sequence.stream, "netledger.evt.registry", b"x", reply
    )
    assert (seq, subject, data) == (md.sequence.stream, "netledger.evt.registry", b"x")
    assert (at, pending) == (md.timestamp.timestamp(), md.num_pending)


@pytest.mark.parametrize("reply", REPLIES)
def test_fastread_reads_the_reply_as_nats_py_does(reply: str) -> None:
    # what the reader's fast path (journal.fastread) takes out for the ordered consumer
    md = Msg.Metadata._from_reply(reply)
    sseq, dseq, ts, pending = reply_numbers(reply)
    assert (sseq, dseq, pending) == (md.sequence.stream, md.sequence.consumer, md.num_pending)
    assert stream_time(ts) == md.timestamp.timestamp()


_PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    | st.binary(),
    lambda inner: st.lists(inner, max_size=4)
    | st.lists(inner, max_size=4).map(tuple)
    | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=20,
)  # fmt: skip


@given(_PLAIN)
def test_a_data_frame_reads_back_as_a_frame_does(value: object) -> None:
    # what crosses the writer's pipes without the pickler's memo (data_frame): the same value,
    # read by the same reader; an object met twice comes back as two equal ones
    shared = [value, value]
    for obj in (value, shared):
        fd_r, fd_w = os.pipe()
        try:
            os.write(fd_w, data_frame(obj) + frame(obj))
            reader = FrameReader(fd_r)
            reader.fill()
            assert reader.next() == (True, obj)
            assert reader.next() == (True, obj)
            assert reader.next() == (False, None)
        finally:
            os.close(fd_r)
            os.close(fd_w)
