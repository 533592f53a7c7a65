"""A command-service replica's counters (:class:`Stats`): what ``netledger status`` shows and
the metrics' scrape reads (common/metrics.py), kept as plain numbers the event loop adds to —
nothing per request beyond a count and a bucket (``journal/buckets.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from netledger.events.commands import COMMANDS
from netledger.journal.buckets import SECONDS, Buckets

#: what a request naming no command is counted as (its name is the sender's: counted by name,
#: every made-up one was a counter, a histogram and metric labels for the replica's life)
UNKNOWN = "unknown"

#: why a lane decides again (``Stats.retries``): another writer came first (an OCC refusal, or
#: a message between a pre-linked decision's placements and it), or an append that may have
#: landed (no sure answer, a batch refused as a duplicate): caught up and looked; or a
#: refusal (something not found, a conflict with the state) checked against the log's end
RETRY_REASONS = ("conflict", "maybe_applied", "refusal")


def _retry_reasons() -> dict[str, int]:
    return dict.fromkeys(RETRY_REASONS, 0)


@dataclass
class Stats:
    """A replica's counters (see the module)."""

    #: commands answered, by ``<name>:<outcome>`` (``ok`` or the error code); a name that is
    #: no command as :data:`UNKNOWN`
    commands: dict[str, int] = field(default_factory=dict)
    #: their time from the request's arrival to its answer, by command name (as in
    #: ``commands``), whatever the outcome (each also counted in ``commands``)
    seconds: dict[str, Buckets] = field(default_factory=dict)
    #: decisions taken again, by reason (:data:`RETRY_REASONS`)
    retries: dict[str, int] = field(default_factory=_retry_reasons)
    conflicts: int = 0
    batches: int = 0
    batched_events: int = 0
    #: single-event appends that went pipelined (Appender.append_chain) and landed
    pipelined: int = 0
    #: decisions appended after their placements instead of in an atomic batch (prelink)
    prelinked: int = 0
    #: pre-linked appends refused because another message came between placements and
    #: decision (its placements left alone, the decision made again as an atomic batch)
    prelink_broken: int = 0
    #: commands looked up in the log as maybe retries older than what ``seen`` and the
    #: duplicate window hold (service/old_retry.py), and the messages those lookups read
    old_id_lookups: int = 0
    old_id_scanned: int = 0

    def count(self, name: str, outcome: str, seconds: float) -> None:
        """One command answered ``outcome`` ``seconds`` after it arrived (a name no command
        has: as :data:`UNKNOWN`, so what is kept follows the commands there are, not the
        names requests made up — review hrev83)."""
        if name not in COMMANDS:
            name = UNKNOWN
        key = f"{name}:{outcome}"
        self.commands[key] = self.commands.get(key, 0) + 1
        timed = self.seconds.get(name)
        if timed is None:
            timed = self.seconds[name] = Buckets(SECONDS)
        timed.observe(seconds)
