"""The projection itself, pure: one stored event -> the row changes it makes.

``project(seq, subject, envelope, view)`` reads the current rows through ``view`` (a read-only
:class:`View`: the SQLite batch in production, a dict in tests) and returns an :class:`Outcome`:
the row upserts and deletes, plus the ``events`` index row. It performs no I/O itself and never
raises for a bad event: an event that cannot be applied (an allocation in an unknown network,
a type on the wrong subject, a lease of an address not in use) comes back as a rejection, which
the writer records in ``rejected_events`` while the projector goes on with the next message.

Rows carry the stream sequence and the event's own time, never the wall clock, so projecting
the same stream twice gives byte-identical tables.

The handlers live in ``project_domain`` (networks, fixed and floating IPs, reverts) and
``project_hosts`` (what executors report); the outcome types and the per-event transaction they
write through in ``project_tx``. This module holds the entry point: the subject check, dispatch,
the ``events`` index row, and :class:`MemoryStore`. Names other modules import from here
(``Outcome``, ``reject``, ``View``...) are re-exported so they keep importing from one place.
"""

from __future__ import annotations

import operator
import types
import typing
from typing import Any

import orjson

from netledger.events.codec import Envelope
from netledger.events.field_types import field_hints
from netledger.events.host_events import HostEvent
from netledger.events.types import Event

from . import project_domain, project_hosts
from .project_hosts import host_row
from .project_tx import (
    DEL_BYTE,
    INDEX_COLUMNS,
    MAX_RAW,
    Change,
    Outcome,
    Rejected,
    Tx,
    View,
    bare,
    field_names,
    reject,
    rejected_row,
    same_in_orjson,
    to_json,
)
from .tables import EVENTS, HOSTS, Key, Row

__all__ = [
    "MAX_RAW",
    "Change",
    "MemoryStore",
    "Outcome",
    "Rejected",
    "View",
    "apply_event",
    "event_data",
    "expected_subject",
    "project",
    "reject",
]

# --- dispatch -------------------------------------------------------------------------------------

_HANDLERS: dict[type[Event], Any] = {**project_domain.HANDLERS, **project_hosts.HANDLERS}

#: Host event types handled by name (newer executor events ``project_hosts`` need not import).
_BY_NAME: dict[str, Any] = project_hosts.BY_NAME

#: Event fields copied into the events index when a handler did not set them.
_INDEXED = INDEX_COLUMNS
_index_values = operator.itemgetter(*INDEX_COLUMNS)


def expected_subject(ev: Event) -> str:
    """The subject an event is stored on: the aggregate its type declares (some types also
    accept an older layout's subject: ``Event.accepts_subject``)."""
    return ev.subject()


_INDEXED_FIELDS: dict[type[Event], tuple[str, ...]] = {}


def _indexed_fields(cls: type[Event]) -> tuple[str, ...]:
    names = _INDEXED_FIELDS.get(cls)
    if names is None:
        own = set(field_names(cls))
        names = _INDEXED_FIELDS[cls] = tuple(n for n in _INDEXED if n in own)
    return names


def _host_seen(tx: Tx, ev: HostEvent) -> None:
    """A host event this projector has no table for: the host was still active."""
    tx.put(HOSTS, host_row(tx, ev.host))


#: Per event type: its handler (None: it changes no row) and the fields copied into the events
#: index when the handler did not set them — one lookup for both, for every event.
_DISPATCH: dict[type[Event], tuple[Any, tuple[str, ...]]] = {}


def _dispatch(cls: type[Event]) -> tuple[Any, tuple[str, ...]]:
    handler = _HANDLERS.get(cls) or _BY_NAME.get(cls.TYPE)
    if handler is None and issubclass(cls, HostEvent):
        handler = _host_seen
    got = _DISPATCH[cls] = (handler, _indexed_fields(cls))
    return got


#: Per event type: its number of fields if every field is declared ``str``, ``int``, ``bool`` or
#: ``None`` (or a union of them), else 0. Such an event's data, as decode gives it (it checks
#: every field against its declared type), holds no float, list or map: orjson writes it as the
#: stdlib encoder does without :func:`to_json` looking at each value's type first (~5,000 of the
#: ~14,000 instructions of an allocation's ``data``; its text is still checked for non-ASCII).
_PLAIN_DATA: dict[type[Event], int] = {}
_PLAIN_TYPES = frozenset({str, int, bool, type(None)})
#: Per event type: its number of fields and those not declared as plain (above): a list, a map,
#: a float, ``Any``. Only their values are looked at before orjson writes the data (a host's
#: MACs, a link's detail, a reconcile's duration); the others are plain as decode gives them.
#: Looking at every value (:func:`to_json`) was half of such an event's ``data`` (a host event
#: of four kinds in ten: ~3-4.7 us against ~0.8 for a plain one, measured on a cloud's log).
_DATA_CHECKS: dict[type[Event], tuple[int, tuple[str, ...]]] = {}
_orjson_dumps = orjson.dumps
_SORTED = orjson.OPT_SORT_KEYS


def _plain_data(cls: type[Event]) -> int:
    names = field_names(cls)
    hints = _hints(cls)
    plain = bool(names) and all(_declared_plain(hints.get(n, Any)) for n in names)
    n = _PLAIN_DATA[cls] = len(names) if plain else 0
    return n


def _hints(cls: type[Event]) -> dict[str, Any]:
    try:
        return field_hints(cls)
    except Exception:  # an annotation that does not resolve: every value is looked at
        return {}


def _data_checks(cls: type[Event]) -> tuple[int, tuple[str, ...]]:
    names = field_names(cls)
    hints = _hints(cls)
    checks = _DATA_CHECKS[cls] = (
        len(names),
        tuple(n for n in names if not _declared_plain(hints.get(n, Any))),
    )
    return checks


def _declared_plain(hint: Any) -> bool:
    if hint in _PLAIN_TYPES:
        return True
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return all(a in _PLAIN_TYPES for a in typing.get_args(hint))
    return False


def event_data(ev: Event) -> str:
    """The event's data as compact JSON (the ``events.data`` column)."""
    return _data(ev, type(ev))


def _data(ev: Event, cls: type[Event]) -> str:
    checks = _DATA_CHECKS.get(cls)
    if checks is None:
        checks = _data_checks(cls)
    n, looked_at = checks
    own = getattr(ev, "__dict__", None)
    if own is not None and len(own) == n:  # a frozen dataclass's __dict__: exactly its fields
        for name in looked_at:
            if not same_in_orjson(own[name]):
                break
        else:
            try:
                out = _orjson_dumps(own, option=_SORTED)
            except TypeError:  # an int beyond 64 bits, a key that is not a str: below
                pass
            else:
                if out.isascii() and DEL_BYTE not in out:
                    return out.decode("ascii")
        return to_json(own)
    return to_json({n: getattr(ev, n) for n in field_names(cls)})


#: The ``events`` columns in the order :func:`apply_event` builds its row (checked below).
_EVENT_ROW = (
    "seq", "time", "stream_time", "subject", "type", "event_id", "command_id", "actor_project",
    "actor_role", "actor_user", "network_id", "address", "fixed_address", "instance", "project",
    "host", "pool", "data", "address_v6",
)  # fmt: skip
if _EVENT_ROW != EVENTS.columns:  # pragma: no cover - a table change must update both
    raise RuntimeError("projector.project builds events rows in another column order")


def apply_event(
    seq: int, subject: str, env: Envelope, view: View, stream_time: float | None = None
) -> tuple[Tx | None, tuple[Any, ...] | Row]:
    """The work of :func:`project` without building an :class:`Outcome`: ``(tx, events row as a
    tuple in column order)`` when the event applies (``tx.changes`` holds its row changes), or
    ``(None, rejected_events row)``. Never raises for bad data. The writer calls this for every
    message, so it builds nothing it does not need."""
    ev = env.event
    try:
        ok = ev.accepts_subject(subject)
        want = "" if ok else expected_subject(ev)
    except Exception as exc:  # a malformed event whose subject cannot even be named
        return None, rejected_row(
            seq, subject, f"{ev.TYPE}: {exc}", type_name=ev.TYPE, stream_time=stream_time
        )
    if not ok:
        return None, rejected_row(
            seq,
            subject,
            f"{ev.TYPE} belongs on {want}, not {subject}",
            type_name=ev.TYPE,
            stream_time=stream_time,
        )
    tx = Tx(seq, env, view)
    cls = type(ev)
    dispatch = _DISPATCH.get(cls)
    if dispatch is None:
        dispatch = _dispatch(cls)
    handler, names = dispatch
    try:
        if handler is not None:
            handler(tx, ev)
    except Rejected as exc:
        return None, rejected_row(
            seq, subject, str(exc), type_name=ev.TYPE, stream_time=stream_time
        )
    except Exception as exc:  # bad field types in a decodable event: record, do not stop
        return None, rejected_row(
            seq,
            subject,
            f"{ev.TYPE} could not be applied: {exc.__class__.__name__}: {exc}",
            type_name=ev.TYPE,
            stream_time=stream_time,
        )
    idx = tx.index
    for name in names:
        if idx[name] is None:
            value = getattr(ev, name)
            if isinstance(value, str) and value:
                idx[name] = bare(value) if name == "address" else value
    network_id, address, fixed, instance, project, host, pool, address_v6 = _index_values(idx)
    actor = env.actor
    row = (
        seq, env.time, stream_time, subject, ev.TYPE, env.event_id, env.command_id,
        actor.project, actor.role, actor.user, network_id, address, fixed, instance, project,
        host, pool, _data(ev, cls), address_v6,
    )  # fmt: skip
    return tx, row


def project(
    seq: int, subject: str, env: Envelope, view: View, stream_time: float | None = None
) -> Outcome:
    """The row changes stored event ``seq`` makes, or its rejection. Never raises for bad data."""
    tx, row = apply_event(seq, subject, env, view, stream_time)
    if tx is None:
        assert isinstance(row, dict)
        return Outcome(rejected=row)
    changes = tuple(Change(t, k, r) for (t, k), r in tx.changes.items())
    return Outcome(changes=changes, event=dict(zip(_EVENT_ROW, row, strict=True)))


# --- an in-memory store: the same projection without SQLite (tests, tools) ------------------------


class MemoryStore:
    """Tables as dicts, fed by :func:`project`; the reference the SQLite writer must match."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[Key, Row]] = {}
        self.events: dict[int, Row] = {}
        self.rejected: dict[int, Row] = {}
        self.last_seq = 0

    def get(self, table: str, key: Key) -> Row | None:
        return self.tables.get(table, {}).get(key)

    def select(self, table: str, column: str, value: Any) -> list[Row]:
        return [r for r in self.tables.get(table, {}).values() if r.get(column) == value]

    def apply(self, seq: int, outcome: Outcome) -> None:
        for ch in outcome.changes:
            t = self.tables.setdefault(ch.table, {})
            if ch.row is None:
                t.pop(ch.key, None)
            else:
                t[ch.key] = ch.row
        if outcome.event is not None:
            self.events[seq] = outcome.event
        if outcome.rejected is not None:
            self.rejected[seq] = outcome.rejected
        self.last_seq = max(self.last_seq, seq)

    def feed(
        self, seq: int, subject: str, env: Envelope, stream_time: float | None = None
    ) -> Outcome:
        out = project(seq, subject, env, self, stream_time)
        self.apply(seq, out)
        return out

    def rows(self, table: str) -> list[Row]:
        return [self.tables.get(table, {})[k] for k in sorted(self.tables.get(table, {}), key=repr)]
