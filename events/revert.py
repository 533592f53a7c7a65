"""Revert: undo a stored change by appending compensating events (history is never rewritten).

The client reads the events to undo from the log (those of one command id, or every event after a
sequence within a scope) and sends them in a ``revert`` command, with the project of the allocation
each deallocation among them ended where they lack it (``owners``: ``FixedIpDeallocated`` records
none, and a freed address goes back with it). The service decides on *its* current state like for
any command: each stored event, newest first, gets the compensating event that undoes it, checked
against the state as the earlier compensations of the same revert leave it (see
:mod:`netledger.events.revert_compensate`); anything a later change made impossible (the address
was re-allocated to another instance, the network has addresses in use) refuses the whole revert
with every reason, appending nothing. The compensations and a :class:`ChangeReverted` marker are
appended as one atomic batch with the OCC check on every subject they touch, so a revert decided on
stale state is rejected by the log and decided again.

Why the client reads and the service checks: the service's state is a fold that keeps no events,
and an index of every event for arbitrary ``--to-seq`` ranges would grow with the log in every
replica (or a stream read would block a lane). Nothing the client sends is trusted for safety:
every compensation must be valid on the service's current state, exactly as the equivalent
admin commands would be, and each event must lie in the state's past on its own subject.

This module is the command: what a revert covers (its command id, its scope), the compressed
events a request carries, parsing, and the decider that checks the events against the service's
state and adds the marker. The compensation rules are pure domain logic and live in
:mod:`netledger.events.revert_compensate`; their names are re-exported here, so callers import
everything about revert from this one module.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack

from .commands import Command, Request, command
from .decide import DECIDERS, Decision, Pending
from .errors import ConflictError, InvalidField, LimitExceeded, NotFound, Unavailable
from .ids import check_id
from .placement import companions
from .prune import folded
from .revert_compensate import (
    SKIPPED_TYPES,
    Plan,
    RevertConflict,
    StoredEvent,
    compensate,
    is_skipped,
)
from .revert_events import REVERT_SUBJECT, ChangeReverted
from .state import State
from .types import (
    EVENT_TYPES,
    Event,
    FixedIpAllocated,
    FixedIpDeallocated,
    FixedIpFreed,
    FixedIpLeased,
    FixedIpReleased,
)

#: JetStream's atomic batch holds at most 1000 messages: compensations plus the marker.
MAX_REVERT_EVENTS = 1000
#: Decompressed size cap of the events a request carries (a zip bomb is refused, not unpacked).
MAX_EVENTS_BYTES = 8 * 1024 * 1024
SCOPE_KINDS = ("network", "project", "pool")


class RevertTooLarge(LimitExceeded):
    code = "revert_too_large"


class NothingToRevert(NotFound):
    code = "nothing_to_revert"


class RevertRaced(ConflictError):
    """A revert was appended after this one's client read the markers (``markers_upto``): it
    may have undone some of the same events, and compensated twice they would undo a later
    change. The client reads the markers since and tells ``already_reverted``, or sends the
    revert again (netledger/revert_cli.py). Details: ``markers_upto`` (the client's read),
    ``marker_seq`` (the last marker the service holds)."""

    code = "revert_raced"


class ServiceBehind(Unavailable):
    """The service has not folded an event the client read yet (try again)."""

    code = "service_behind"


# --- what a revert covers ---------------------------------------------------------------------


def command_id_for(
    reverted_command_id: str | None,
    after_seq: int | None,
    upto_seq: int | None,
    scope: str | None,
) -> str:
    """The revert's own command id: deterministic, so a retried revert is not applied twice
    and the marker is found from the reverted command id (``revert-<id>``)."""
    if reverted_command_id:
        return f"revert-{reverted_command_id}"
    tail = f"-{scope.replace(':', '-')}" if scope else ""
    return f"revert-seq-{after_seq}-{upto_seq}{tail}"


def in_scope(ev: Event, scope: str | None, instances: set[str] | None = None) -> bool:
    """Whether ``ev`` concerns ``scope`` (``kind:id``; None = everything).

    network: every event naming the network (its creation, its addresses, floating IPs
    associated with them); pool: the pool's creation and its floating IPs; project: events
    naming the project, plus fixed-IP events of instances seen allocated for it in ``instances``
    (deallocations and leases do not name the project).
    """
    if scope is None:
        return True
    kind, _, value = scope.partition(":")
    if kind == "network":
        return getattr(ev, "network_id", None) == value
    if kind == "pool":
        return getattr(ev, "pool", None) == value
    if getattr(ev, "project", None) == value:
        if instances is not None and isinstance(ev, FixedIpAllocated):
            instances.add(ev.instance)
        return True
    return (
        instances is not None
        and isinstance(ev, FixedIpDeallocated | FixedIpLeased | FixedIpReleased | FixedIpFreed)
        and ev.instance in instances
    )


# --- the command ------------------------------------------------------------------------------


def pack_events(stored: Iterable[StoredEvent]) -> bytes:
    """The events a request carries: compressed (a revert of 1000 allocations repeats the same
    keys and ids, and must fit the service's request size limit)."""
    rows = [[s.seq, s.subject, s.event.TYPE, s.event.to_data(), s.command_id] for s in stored]
    packed: bytes = msgpack.packb(rows, use_bin_type=True)
    return zlib.compress(packed, 9)


def _unpack(blob: Any, name: str) -> list[Any]:
    if not isinstance(blob, bytes):
        raise InvalidField(f"{name} must be bytes (zlib-compressed msgpack)", field=name)
    try:
        d = zlib.decompressobj()
        raw = d.decompress(blob, MAX_EVENTS_BYTES)
        if d.unconsumed_tail:
            raise InvalidField(f"{name} are too large", field=name)
        rows = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except InvalidField:
        raise
    except Exception:
        raise InvalidField(f"{name} are not zlib-compressed msgpack", field=name) from None
    if not isinstance(rows, list):
        raise InvalidField(f"{name} must be a list", field=name)
    if len(rows) > MAX_REVERT_EVENTS:
        raise RevertTooLarge(
            f"a revert covers at most {MAX_REVERT_EVENTS} events, got {len(rows)}: narrow it"
            " with --scope or a later --to-seq",
            count=len(rows),
        )
    return rows


def unpack_events(blob: Any) -> tuple[StoredEvent, ...]:
    out: list[StoredEvent] = []
    for row in _unpack(blob, "events"):
        try:
            seq, subject, type_name, data, cid = row
            cls = EVENT_TYPES[type_name]
            if not isinstance(seq, int) or seq < 1 or not isinstance(subject, str):
                raise ValueError("bad seq or subject")
            out.append(StoredEvent(seq, subject, cls.from_data(data), str(cid or "")))
        except Exception:
            raise InvalidField(f"bad event in events: {str(row)[:200]}", field="events") from None
    return tuple(out)


def pack_owners(owners: Mapping[int, str | None]) -> bytes:
    """Whose each freed address was, as a request carries it: ``[deallocation seq, project of
    the allocation it ended]`` rows, compressed as the events. Only the project, not the
    allocation itself: the service could verify no more of it than of the project (what the
    client sends is checked against the state, never believed for safety), and a revert of
    1000 deallocations of UUID-named instances must still fit the request size limit."""
    packed: bytes = msgpack.packb(sorted(owners.items()), use_bin_type=True)
    return zlib.compress(packed, 9)


def unpack_owners(blob: Any) -> tuple[tuple[int, str | None], ...]:
    if blob is None:
        return ()  # a client older than owners
    out: list[tuple[int, str | None]] = []
    for row in _unpack(blob, "owners"):
        try:
            seq, project = row
            if not isinstance(seq, int) or seq < 1:
                raise ValueError("bad seq")
            out.append((seq, None if project is None else check_id(project, "project")))
        except Exception:
            raise InvalidField(f"bad row in owners: {str(row)[:200]}", field="owners") from None
    return tuple(out)


def _opt_int(a: dict[str, Any], name: str) -> int | None:
    v = a.get(name)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise InvalidField(f"{name} must be a non-negative integer", field=name)
    return v


def _scope(a: dict[str, Any]) -> str | None:
    v = a.get("scope")
    if v is None:
        return None
    kind, _, value = str(v).partition(":")
    if kind not in SCOPE_KINDS:
        raise InvalidField(f"scope must be one of {', '.join(SCOPE_KINDS)}", field="scope")
    return f"{kind}:{check_id(value, 'scope')}"


@command
@dataclass(frozen=True)
class Revert(Command):
    """Undo the stored events ``events`` (those of ``reverted_command_id``, or those after
    ``after_seq`` up to ``upto_seq`` within ``scope``) with compensating events. ``owners``:
    (deallocation seq, the project of the allocation it ended) for deallocations among
    ``events`` whose allocation ``events`` lacks, as the client read it from the log: a freed
    address goes back with its project (:func:`pack_owners`; older clients send none).
    ``markers_upto``: the stream sequence up to which the client read the markers' subject
    (``netledger.evt.revert``) to find whether these events were reverted already — a marker
    after it refuses the revert ``revert_raced`` (older clients send none: not checked)."""

    NAME: ClassVar[str] = "revert"
    ADMIN_ONLY: ClassVar[bool] = True
    reverted_command_id: str | None
    after_seq: int | None
    upto_seq: int | None
    scope: str | None
    events: tuple[StoredEvent, ...]
    owners: tuple[tuple[int, str | None], ...] = ()
    markers_upto: int | None = None

    @classmethod
    def parse(cls, a: dict[str, Any]) -> Revert:
        cid = a.get("reverted_command_id")
        if cid is not None and (not isinstance(cid, str) or not cid or len(cid) > 200):
            raise InvalidField("reverted_command_id must be a non-empty string", field="cid")
        after, upto = _opt_int(a, "after_seq"), _opt_int(a, "upto_seq")
        if (cid is None) == (after is None):
            raise InvalidField("give exactly one of reverted_command_id and after_seq")
        events, owners = unpack_events(a.get("events")), unpack_owners(a.get("owners"))
        markers = _opt_int(a, "markers_upto")
        return cls(cid, after, upto, _scope(a), events, owners, markers)

    def lane(self, state: State) -> str:
        return "revert"

    def own_command_id(self) -> str:
        return command_id_for(self.reverted_command_id, self.after_seq, self.upto_seq, self.scope)

    def label(self) -> str:
        if self.reverted_command_id:
            return f"command {self.reverted_command_id}"
        where = f" in {self.scope}" if self.scope else ""
        # "after N": N itself is not reverted (h136: "seqs 28..32" named one it left alone)
        return f"seqs after {self.after_seq} up to {self.upto_seq}{where}"


@command
@dataclass(frozen=True)
class RevertPlan(Revert):
    """The same decision, appended never (``--dry-run``)."""

    NAME: ClassVar[str] = "revert.plan"
    READ_ONLY: ClassVar[bool] = True


def decide_revert(state: State, req: Request, pending: Pending) -> Decision:
    cmd = req.command
    assert isinstance(cmd, Revert)
    if not cmd.events:
        raise NothingToRevert(f"nothing to revert for {cmd.label()}")
    marker_seq = state.seq_of(REVERT_SUBJECT)
    if cmd.markers_upto is not None and marker_seq > cmd.markers_upto:
        # Whether these events were reverted already is what the client saw of the markers,
        # not the fold (which keeps no record of what a marker undid): one stored since may
        # have undone them, and a second compensation would undo a later change (review h113).
        # A marker appended after this decision is caught by the log: the batch's OCC check
        # on the markers' subject, decided again on a state that holds it.
        raise RevertRaced(
            f"a revert (#{marker_seq}) was appended after this one read the revert markers"
            f" (up to #{cmd.markers_upto}): read them again",
            markers_upto=cmd.markers_upto,
            marker_seq=marker_seq,
        )
    for s in cmd.events:
        # The client read these from the log: they must lie in the past of the state this
        # decision is made on (else this replica has not folded them yet).
        if not s.event.accepts_subject(s.subject):
            raise InvalidField(f"#{s.seq} {s.event.TYPE} does not belong on {s.subject}")
        if not folded(state, s.seq, s.subject):  # (a deleted network's: its entry may be gone)
            raise ServiceBehind(
                f"the service has not yet seen #{s.seq} on {s.subject}; try again", seq=s.seq
            )
    why = f"{req.command_id}: revert of {cmd.label()}"
    plan = compensate(state, cmd.events, why, dict(cmd.owners))
    if not plan.events:
        raise NothingToRevert(
            f"nothing to revert for {cmd.label()}: only reported facts (leases, releases,"
            " host events), which a revert leaves as they are",
            skipped=plan.skipped,
        )
    # The service appends the placements the compensations bring (a mapping per floating
    # association change, a join per host's first address: events/placement.py) in the same
    # atomic batch: counted here, else a batch over the limit is never appended and the lane
    # answers conflict_retries_exhausted after 64 rounds (found by review hrev10).
    extra = len(companions(state, plan.events, set(), pending))
    if len(plan.events) + 1 + extra > MAX_REVERT_EVENTS:
        raise RevertTooLarge(
            f"the revert needs {len(plan.events)} compensating events and {extra} placements;"
            f" one atomic batch holds {MAX_REVERT_EVENTS - 1} plus the marker: narrow it with"
            " --scope",
            count=len(plan.events),
        )
    marker = ChangeReverted(
        reverted_command_id=cmd.reverted_command_id,
        after_seq=cmd.after_seq,
        upto_seq=cmd.upto_seq,
        scope=cmd.scope,
        reverted_seqs=plan.reverted,
        skipped_seqs=plan.skipped,
        compensations=len(plan.events),
    )
    # The marker goes last: it lands right after the compensations in the same atomic batch.
    events = [*plan.events, marker]
    result = {
        "revert_command_id": req.command_id,
        "reverted_command_id": cmd.reverted_command_id,
        "after_seq": cmd.after_seq,
        "upto_seq": cmd.upto_seq,
        "scope": cmd.scope,
        "reverted_seqs": plan.reverted,
        "skipped_seqs": plan.skipped,
        "events": [{"type": e.TYPE, "subject": e.subject(), "data": e.to_data()} for e in events],
        "appended": not cmd.READ_ONLY,
    }
    return Decision(events, result)


DECIDERS[Revert] = decide_revert
DECIDERS[RevertPlan] = decide_revert

__all__ = [
    "MAX_REVERT_EVENTS",
    "REVERT_SUBJECT",
    "SKIPPED_TYPES",
    "ChangeReverted",
    "NothingToRevert",
    "Plan",
    "Revert",
    "RevertConflict",
    "RevertPlan",
    "RevertRaced",
    "RevertTooLarge",
    "StoredEvent",
    "command_id_for",
    "compensate",
    "in_scope",
    "is_skipped",
    "pack_events",
    "pack_owners",
    "unpack_events",
    "unpack_owners",
]
