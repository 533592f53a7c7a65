"""A retry older than what the service remembers: its first attempt found in the log by the
time its command id carries.

A retry (same command id) gets its first answer from ``seen`` (the service's latest
``SEEN_COMMANDS`` commands), or, decided again inside the log's duplicate window, from what the
server acknowledges as stored before under the same message id (service/lane_append.py
``_stored_before``). Past both, it was decided again as a new command: an allocation with a
natural key (a fixed address: the instance's) finds what the first attempt gave, but a floating
IP allocation has none and allocated another floating IP — the project held both (review
h134). A client's command id is a UUIDv7 (service/client.py ``new_command_id``) carrying the
millisecond it was made (events/ids.py ``command_time``): the first attempt, if one was stored,
lies in the log about then, and one batched direct get by that time finds it
(journal/by_time.py) — the way ``netledger revert`` finds a command (netledger/revert_cli.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from netledger.events.codec import decode
from netledger.events.commands import FloatingIpAllocate, NetworkCreate, Request
from netledger.events.errors import DecodeError
from netledger.events.ids import EVENT_PREFIX, REGISTRY_SUBJECT
from netledger.events.snapshot import SeenEvents
from netledger.events.types import Event, FloatingIpAllocated, NetworkCreated
from netledger.journal.by_time import Found, find_msg_id
from netledger.journal.stream import Connection

#: How far a client's clock, the service's and the log server's may differ, and what the time
#: from the check to the append's arrival at the server adds to it (an append answers within
#: its budget, 3 s): the same minute a revert allows (replay/revert_reads.py CLOCK_SLACK_S).
CLOCK_SLACK_S = 60.0
#: How long after its id was made the first stored attempt of a command is looked for: a
#: client asks again under one id within its deadline (service/client.py: 60 s by default);
#: an id kept and sent again much later (``--command-id``) is not found, and decided anew.
FIRST_ATTEMPT_SPAN_S = 300.0
#: The most messages one lookup reads (only the subjects the command writes: the pools', the
#: registry), in pages of 100 (journal/by_time.py): ~9 ms a page, ~0.11 s for all 1,000
#: (measured, a local nats-server). A flood of new commands whose ids carry an old time (a
#: client clock hours behind) costs each at most that, and in practice the messages stored on
#: those subjects in the six minutes around that time (none: one message read) — the lane
#: waits at most that long a command.
MAX_SCANNED = 1_000

#: The commands looked up, the subjects their first event is stored on and its type: those whose
#: decision taken again gives something else than the first — a floating IP allocation (the
#: next free one), a network create (the next free part of its range, or refused for the VLAN
#: or range the first holds). A fixed allocation finds the instance's address by its natural
#: key (docs/domain.md, "Retries"). A message stored under the id whose event is of another
#: type is another command's (a client reusing its ids: a deallocation's, a pool's creation),
#: no first attempt of this one (review h140: the command was answered with it, nothing made).
LOOKED_UP: dict[type, tuple[str, type[Event]]] = {
    FloatingIpAllocate: (f"{EVENT_PREFIX}.pool.*", FloatingIpAllocated),
    NetworkCreate: (REGISTRY_SUBJECT, NetworkCreated),
}


def envelope_time(raws: SeenEvents) -> float:
    """The time a remembered command's first event carries (the service's clock when it was
    decided); +inf when it cannot be read (cannot tell how old: every id past the duplicate
    window is looked up, bounded, rather than one missed)."""
    try:
        return decode(raws[0]).time
    except (DecodeError, IndexError):
        return math.inf


def may_be_forgotten(
    made: float | None,
    now: float,
    window: float,
    horizon: Callable[[], float | None],
) -> bool:
    """Whether a command whose id was made at ``made`` (None: no UUIDv7, no time) and is not in
    ``seen`` may be the retry of a command stored before, which nothing else would find.

    Its first attempt, if one was stored, was stored at ``s >= made - CLOCK_SLACK_S``. The
    retry's append reaches the server at about ``now``; inside the duplicate ``window`` the
    server acknowledges it as stored before, answered from the log. So no lookup when
    ``made > now - window + CLOCK_SLACK_S``: ``s > now - window``. ``horizon()`` is the time of
    the newest command ``seen`` let go (or its oldest one, after a start from a snapshot; None:
    nothing forgotten): a first attempt stored after it is in ``seen``. So no lookup either
    when ``made > horizon() + CLOCK_SLACK_S``. Only both leave a first attempt unseen.

    The cost for a new command (``made`` about ``now``): a regex match, a float comparison
    (``horizon`` is not asked). An id whose clock is ahead by more than the slack is taken as
    new; one far behind is looked up (bounded: :data:`MAX_SCANNED`) and, found nowhere,
    decided as new."""
    if made is None or made > now - window + CLOCK_SLACK_S:
        return False
    h = horizon()
    return h is not None and made <= h + CLOCK_SLACK_S


def looked_up_subjects(req: Request) -> str | None:
    """The subjects whose messages a lookup of ``req``'s first attempt reads (None: a command
    not looked up)."""
    looked = LOOKED_UP.get(type(req.command))
    return None if looked is None else looked[0]


def _first_event_of(kind: type[Event]) -> Callable[[bytes], bool]:
    """Whether a stored message's event is a ``kind`` (what ``find_msg_id`` accepts)."""

    def accept(data: bytes) -> bool:
        try:
            return isinstance(decode(data).event, kind)
        except DecodeError:
            return False

    return accept


async def first_attempt(
    conn: Connection, req: Request, made: float, subjects: str, timeout: float
) -> Found:
    """The stored first event of ``req``'s command id (message id ``<command id>:0``, an event of
    the type the command's first is) among the messages on ``subjects`` stored from ``made -
    CLOCK_SLACK_S`` to ``made + FIRST_ATTEMPT_SPAN_S``, at most :data:`MAX_SCANNED` of them."""
    _, kind = LOOKED_UP[type(req.command)]
    return await find_msg_id(
        conn,
        f"{req.command_id}:0",
        subjects=subjects,
        since=made - CLOCK_SLACK_S,
        until=made + FIRST_ATTEMPT_SPAN_S,
        limit=MAX_SCANNED,
        timeout=timeout,
        accept=_first_event_of(kind),
    )
