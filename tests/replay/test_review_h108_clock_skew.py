"""Review h108: ``revert --since`` when the service's clock is ahead of the server's by more than
the minute of slack.

The service stamps a command's events (``Envelope.time``), the server stores them at its own
time; ``--since`` is compared with the store time, a minute earlier (``CLOCK_SLACK_S``), and an
event found stamped *before* ``--since`` sends the read further back. With the service's clock
five minutes ahead, a ``--since`` at or before the command's time as ``netledger audit`` shows
it (its events' stamp) can start the read inside the command's atomic batch, and the events
found there are stamped after ``--since``: nothing sent the read back, and half the command was
found. A batch is stored contiguously: a command's message at the very start of the read is
now followed back, whatever the clocks say.

Real nats-server; the command's messages are written as a service with that clock writes them.
"""

from __future__ import annotations

import datetime
import time

from netledger.events.codec import Envelope, encode
from netledger.events.types import FixedIpLeased
from netledger.journal.stream import Connection
from netledger.replay.reader import first_seq_at
from netledger.replay.revert_reads import CLOCK_SLACK_S, events_of_command

#: how far ahead of the server's the service's clock is
AHEAD_S = 300.0


def lease(n: int, when: float, command_id: str) -> bytes:
    ev = FixedIpLeased(network_id="7", address=f"10.0.0.{n}", mac="02:00:00:00:00:01", instance="i")
    return encode(Envelope(ev, f"e{n}", command_id, when))


async def test_a_read_starting_inside_a_command_stamped_after_since_finds_all_of_it(
    conn: Connection,
) -> None:
    subject = "netledger.evt.network.7"
    for n in range(1, 6):  # older, others'
        await conn.js.publish(subject, lease(n, time.time() + AHEAD_S, f"old-{n}"))
    stamped = time.time() + AHEAD_S  # the command's time, as audit shows it
    first = await conn.js.publish(subject, lease(100, stamped, "skew"))
    second = await conn.js.publish(subject, lease(101, stamped, "skew"))
    stored = await conn.js.get_msg(conn.stream, second.seq)
    assert stored.time is not None
    at_second = stored.time.replace(tzinfo=stored.time.tzinfo or datetime.UTC)
    assert await first_seq_at(conn, at_second) == second.seq
    # A --since at or before the command's time whose read (a minute earlier) starts at the
    # command's second message.
    since = at_second + datetime.timedelta(seconds=CLOCK_SLACK_S)
    assert since.timestamp() <= stamped

    events, marks = await events_of_command(conn, "skew", since=since)
    assert [s.seq for s in events] == [first.seq, second.seq] and not marks
