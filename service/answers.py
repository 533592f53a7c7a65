"""What the command service answers: replies on the wire, and the answer to a command that
already landed (a retry with the same command id gets the first answer, not a new decision).

Kept apart from :mod:`netledger.service.service` (lanes, appends, retries): these are pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgpack

from netledger.events.commands import NetworkCreate, Request
from netledger.events.decide import decide, network_dict
from netledger.events.decide_fixed import fixed_ip_result
from netledger.events.decide_network import network_create_answer
from netledger.events.errors import CommandIdReused, NetledgerError
from netledger.events.placement_events import FloatingIpMapped, NetworkHostJoined
from netledger.events.reclaim_events import FixedIpReclaimed, FixedIpReconfirmed
from netledger.events.revert_events import ChangeReverted
from netledger.events.snapshot import SeenEvents, seen_events
from netledger.events.state import State
from netledger.events.types import (
    Event,
    FixedIpAllocated,
    FixedIpDeallocated,
    FixedIpMoved,
    FloatingIpAllocated,
    FloatingIpAssociated,
    FloatingIpDeallocated,
    FloatingIpDisassociated,
    NetworkCreated,
    NetworkDeleted,
)


def reply_ok(result: dict[str, Any]) -> bytes:
    data: bytes = msgpack.packb({"ok": True, "result": result}, use_bin_type=True)
    return data


def reply_error(err: NetledgerError) -> bytes:
    data: bytes = msgpack.packb(
        {"ok": False, "error": err.to_wire()}, use_bin_type=True, default=str
    )
    return data


def _backfill_id(ev: Event) -> str:
    """The same id from every replica: a backfill written twice is stored once."""
    if isinstance(ev, NetworkHostJoined):
        return f"join-backfill:{ev.host}:{ev.network_id}"
    assert isinstance(ev, FloatingIpMapped)
    return f"map-backfill:{ev.network_id}:{ev.floating}:{ev.fixed}"


#: a stored event of an allocate that names the allocation it answered with
_Allocation = FixedIpAllocated | FixedIpReconfirmed


def _held(state: State, e: _Allocation) -> dict[str, Any] | None:
    """The answer for the allocation ``e`` names while it still holds its address, else None."""
    n = state.networks.get(e.network_id)
    ip = None if n is None else n.fixed.get(e.address)
    if n is None or ip is None or not ip.allocated or (ip.instance, ip.mac) != (e.instance, e.mac):
        return None
    return fixed_ip_result(n, ip)


def _undone_by(
    seen: Mapping[str, SeenEvents], undoes: Callable[[Event], bool]
) -> tuple[str, list[Event]] | None:
    """The command among those ``seen`` — a reclaim or an operator's revert, never a client's
    own later command — that undid what ``undoes`` matches (its id and events), if any.

    Sound for a first attempt still in ``seen`` in the log's order (not put back from the log:
    ``forgotten``): commands enter it in the log's order and leave it oldest first, so what
    undid an outcome (always after it) is there while the outcome is. A scan, but only for a
    retry whose outcome holds no more."""
    for cid, raws in seen.items():
        if not any(b"FixedIpReclaimed" in raw or b"ChangeReverted" in raw for raw in raws):
            continue
        events = seen_events(raws)
        if any(undoes(ev) for ev in events):
            return cid, events
    return None


def _refuse(req: Request, what: str, why: str, **details: Any) -> CommandIdReused:
    return CommandIdReused(
        f"command {req.command_id} {what}; {why}: send it with a new command id",
        command_id=req.command_id,
        **details,
    )


def _still_holds(
    req: Request,
    what: str,
    holder: str | None,
    undo: tuple[str, list[Event]] | None,
    forgotten: bool,
    held: str = "",
    **details: Any,
) -> None:
    """Raise :class:`CommandIdReused` for a first answer (``what`` it did) that holds no more:
    ``holder`` (``held`` says what it is) has it now, or ``undo`` (a reclaim or a revert) took
    it back, or the service cannot tell what did (``forgotten``). A client is told a retry is
    safe whenever it comes; told the first answer then, two instances (projects) believed they
    held one address (found by reviews h131, h134). Taken back by the client's own later
    command (a deallocation) and held by no one, the first answer stands: a retry gets what
    the command did."""
    if holder is not None:
        raise _refuse(req, what, f"{held}{holder} holds it now", held_by=holder, **details)
    if undo is not None:
        cid, events = undo
        reclaims = [ev for ev in events if isinstance(ev, FixedIpReclaimed)]
        if reclaims:
            why = f"it was reclaimed since ({reclaims[0].reason})"
            raise _refuse(req, what, why, undone_by=cid, reclaimed=True, **details)
        why = f"revert {cid} undid it since"
        raise _refuse(req, what, why, undone_by=cid, reverted=True, **details)
    if forgotten:
        why = "it holds no more, and the service no longer knows what undid it"
        raise _refuse(req, what, why, **details)


def _allocation_holds(
    state: State,
    req: Request,
    e: _Allocation,
    seen: Mapping[str, SeenEvents] | None,
    forgotten: bool,
) -> None:
    """:func:`_still_holds` for the fixed address the allocation ``e`` names."""
    if seen is None or _held(state, e) is not None:
        return
    n = state.networks.get(e.network_id)
    ip = None if n is None else n.fixed.get(e.address)
    key = (e.network_id, e.address, e.instance, e.mac.lower())

    def undoes(ev: Event) -> bool:
        return (
            isinstance(ev, FixedIpReclaimed | FixedIpDeallocated)
            and (ev.network_id, ev.address, ev.instance, ev.mac.lower()) == key
        )

    holder = ip.instance if ip is not None and ip.allocated else None
    _still_holds(
        req,
        f"allocated {e.address} to instance {e.instance} in network {e.network_id}",
        holder,
        None if holder is not None else _undone_by(seen, undoes),
        forgotten,
        "instance ",
        address=e.address,
        network_id=e.network_id,
        instance=e.instance,
    )


def _floating_holds(
    state: State,
    req: Request,
    e: FloatingIpAllocated,
    seen: Mapping[str, SeenEvents] | None,
    forgotten: bool,
) -> None:
    """:func:`_still_holds` for the floating IP the allocation ``e`` gave its project."""
    found = state.find_floating(e.address)
    f = None if found is None else found[1]
    if seen is None or (f is not None and f.project == e.project):
        return

    def undoes(ev: Event) -> bool:
        return isinstance(ev, FloatingIpDeallocated) and (ev.address, ev.project) == (
            e.address,
            e.project,
        )

    _still_holds(
        req,
        f"allocated floating IP {e.address} to project {e.project}",
        None if f is None else f.project,
        None if f is not None else _undone_by(seen, undoes),
        forgotten,
        "project ",
        address=e.address,
        project=e.project,
    )


def _association_holds(
    state: State,
    req: Request,
    e: FloatingIpAssociated,
    seen: Mapping[str, SeenEvents] | None,
    forgotten: bool,
) -> None:
    """:func:`_still_holds` for the association ``e``: the floating IP on that instance's fixed
    address (a reclaim disassociates it with the address it frees; a revert, by itself)."""
    found = state.find_floating(e.address)
    f = None if found is None else found[1]
    now = None if f is None else (f.project, f.fixed_address, f.instance)
    if seen is None or now == (e.project, e.fixed_address, e.instance):
        return
    holder, held = None, ""
    if f is not None and f.project != e.project:
        holder, held = f.project, "project "
    elif f is not None and f.fixed_address is not None:
        holder, held = f.fixed_address, f"instance {f.instance} on "

    def undoes(ev: Event) -> bool:
        return isinstance(ev, FloatingIpDisassociated) and (
            ev.address,
            ev.fixed_address,
            ev.instance,
        ) == (e.address, e.fixed_address, e.instance)

    _still_holds(
        req,
        f"associated floating IP {e.address} with {e.fixed_address} (instance {e.instance})",
        holder,
        None if holder is not None else _undone_by(seen, undoes),
        forgotten,
        held,
        address=e.address,
        fixed_address=e.fixed_address,
        project=e.project,
    )


def _networks_hold(
    state: State,
    req: Request,
    created: list[NetworkCreated],
    seen: Mapping[str, SeenEvents] | None,
    forgotten: bool,
) -> None:
    """:func:`_still_holds` for the networks a create made: each still there, and a project's
    still its own (ids only grow: none is another's network; its range may be)."""
    if seen is None:
        return
    for e in created:
        n = state.networks.get(e.network_id)
        if n is not None and (e.project is None or n.project in (None, e.project)):
            continue  # (disassociated since by an admin, and held by no project: as created)
        nid = e.network_id

        def undoes(ev: Event, nid: str = nid) -> bool:
            return isinstance(ev, NetworkDeleted) and ev.network_id == nid

        _still_holds(
            req,
            f"created network {nid} ({e.cidr or e.label})"
            + (f" for project {e.project}" if e.project else ""),
            None if n is None else n.project,
            None if n is not None else _undone_by(seen, undoes),
            forgotten and n is None,
            "project ",
            network_id=nid,
        )


def result_from_events(
    state: State,
    req: Request,
    events: list[Event],
    seen: Mapping[str, SeenEvents] | None = None,
    forgotten: bool = False,
) -> dict[str, Any]:
    """The answer to a command that already landed (a retry with the same command id);
    ``seen``: the commands the service remembers (a reclaim or a revert among them voids an
    allocation's or association's first answer); ``forgotten``: ``events`` were put back in
    ``seen`` from the log after they had left it (what undid them may have left it too)."""
    for i, e in enumerate(events):
        if isinstance(e, ChangeReverted):
            # The first answer (events/revert.py decide_revert): the compensations and the
            # marker, which closes them (the placements appended with them come after it).
            return {
                "already_applied": True,
                "revert_command_id": req.command_id,
                "reverted_command_id": e.reverted_command_id,
                "after_seq": e.after_seq,
                "upto_seq": e.upto_seq,
                "scope": e.scope,
                "reverted_seqs": e.reverted_seqs,
                "skipped_seqs": e.skipped_seqs,
                "events": [
                    {"type": x.TYPE, "subject": x.subject(), "data": x.to_data()}
                    for x in events[: i + 1]
                ],
                "appended": True,
            }
    created = [e for e in events if isinstance(e, NetworkCreated)]
    if created and isinstance(req.command, NetworkCreate):
        _networks_hold(state, req, created, seen, forgotten)
        return network_create_answer(req.command, created)
    if created:
        return {"networks": [network_dict(e) for e in created]}
    for e in events:
        if isinstance(e, FixedIpReconfirmed):
            # The first answer was the allocation held: it still is, or it was reclaimed.
            # (Decided again, an instance still unseen reconfirms again — an answer of events,
            # without the address: found by review h131.)
            answer = _held(state, e)
            if answer is not None:
                return answer
            _allocation_holds(state, req, e, seen, forgotten)
        if isinstance(e, FixedIpAllocated):
            _allocation_holds(state, req, e, seen, forgotten)
            return {
                "address": e.address,
                "address_v6": e.address_v6,
                "network_id": e.network_id,
                "instance": e.instance,
                "mac": e.mac,
                "host": e.host,
                "project": e.project,
            }
        if isinstance(e, FloatingIpAssociated):
            _association_holds(state, req, e, seen, forgotten)
        if isinstance(e, FloatingIpAllocated):
            _floating_holds(state, req, e, seen, forgotten)
            return {"address": e.address, "pool": e.pool, "project": e.project}
    # Other commands are idempotent on the current state: deciding again yields no events.
    try:
        d = decide(state, req)
        if not d.events:
            moved = [e for e in events if isinstance(e, FixedIpMoved)]
            if moved and d.result.get("host") == moved[0].host:
                return {**d.result, "moved_from": moved[0].from_host}
            return d.result
    except NetledgerError:
        pass
    return {"already_applied": True, "events": [e.TYPE for e in events]}
