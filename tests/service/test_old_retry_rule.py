"""service/old_retry.py ``may_be_forgotten``: when a command id not in ``seen`` is looked up in
the log (pure; the lookup itself: tests/service/test_old_retry.py)."""

from __future__ import annotations

import math
import uuid

from hypothesis import given
from hypothesis import strategies as st

from netledger.events.codec import SYSTEM, Envelope, encode
from netledger.events.ids import command_time
from netledger.events.types import FloatingIpAllocated
from netledger.service.old_retry import CLOCK_SLACK_S, envelope_time, may_be_forgotten

NOW = 1_800_000_000.0
WINDOW = 120.0


def _never() -> float | None:
    raise AssertionError("the horizon was asked for a new command")


def test_a_new_command_is_not_looked_up_and_the_horizon_not_asked() -> None:
    assert not may_be_forgotten(NOW, NOW, WINDOW, _never)
    assert not may_be_forgotten(NOW - WINDOW + CLOCK_SLACK_S + 0.001, NOW, WINDOW, _never)
    assert not may_be_forgotten(NOW + 3600, NOW, WINDOW, _never)  # (a clock ahead)
    assert not may_be_forgotten(None, NOW, WINDOW, _never)  # (no UUIDv7: no time)


def test_past_the_window_it_is_looked_up_only_before_the_horizon() -> None:
    made = NOW - WINDOW
    assert may_be_forgotten(made, NOW, WINDOW, lambda: made)
    assert may_be_forgotten(made, NOW, WINDOW, lambda: made - CLOCK_SLACK_S)
    assert not may_be_forgotten(made, NOW, WINDOW, lambda: made - CLOCK_SLACK_S - 1)
    assert not may_be_forgotten(made, NOW, WINDOW, lambda: None)  # nothing forgotten


@given(
    made=st.floats(NOW - 10 * 86400, NOW + 86400),
    window=st.floats(0.1, 600),
    horizon=st.one_of(st.none(), st.floats(NOW - 20 * 86400, NOW)),
    stored_after=st.floats(-CLOCK_SLACK_S, 1000),
)
def test_a_first_attempt_nothing_else_finds_is_looked_up(
    made: float, window: float, horizon: float | None, stored_after: float
) -> None:
    """A first attempt stored at ``made + stored_after`` (the client's clock off by at most the
    slack) that is neither in ``seen`` (stored at or before the horizon) nor in the duplicate
    window (stored before ``now - window``) is always looked up."""
    stored = made + stored_after
    if stored > NOW or horizon is None or stored > horizon or stored >= NOW - window:
        return
    assert may_be_forgotten(made, NOW, window, lambda: horizon)


def test_envelope_time() -> None:
    env = Envelope(FloatingIpAllocated("pub", "198.51.100.1", "p1"), "e", "c", 12.5, SYSTEM)
    assert envelope_time((encode(env),)) == 12.5
    assert envelope_time((b"garbage",)) == math.inf


@given(st.uuids(), st.integers(0, 15), st.integers(0, 15))
def test_command_time_reads_what_uuid_reads(u: uuid.UUID, version: int, variant: int) -> None:
    """events/ids.py ``command_time`` reads the digits as :class:`uuid.UUID` reads the id."""
    h = u.hex
    h = h[:12] + f"{version:x}" + h[13:16] + f"{variant:x}" + h[17:]
    v = uuid.UUID(hex=h)
    assert command_time(h) == ((v.int >> 80) / 1000 if v.version == 7 else None)
    assert command_time(h.upper()) is None and command_time(h[:-1]) is None
