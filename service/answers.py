"""What the command service answers: replies on the wire, and the answer to a command that
already landed (a retry with the same command id gets the first answer, not a new decision).

Kept apart from :mod:`netledger.service.service` (lanes, appends, retries): these are pure.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    FixedIpMoved,
    FloatingIpAllocated,
    NetworkCreated,
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


def _reclaimed(seen: Mapping[str, SeenEvents], e: _Allocation) -> FixedIpReclaimed | None:
    """The reclaim among the commands ``seen`` that freed the allocation ``e``, if any.

    Sound for an allocation still in ``seen``: commands enter it in the log's order and leave it
    oldest first, so a reclaim (always after the allocation it frees) is there while the
    allocation is. A scan, but only for a retry whose allocation holds its address no more."""
    for raws in seen.values():
        if not any(b"FixedIpReclaimed" in raw for raw in raws):
            continue
        for ev in seen_events(raws):
            if (
                isinstance(ev, FixedIpReclaimed)
                and (ev.network_id, ev.address, ev.instance)
                == (e.network_id, e.address, e.instance)
                and ev.mac.lower() == e.mac.lower()
            ):
                return ev
    return None


def _not_reclaimed(
    state: State, req: Request, e: _Allocation, seen: Mapping[str, SeenEvents] | None
) -> None:
    """Raise :class:`CommandIdReused` when the allocation ``e`` (stored by ``req``'s first
    attempt) was reclaimed since. A client is told that a retry with the same command id is
    safe, whenever it comes; told the first answer after the instance — waiting for it — went
    unseen for the grace and its address was reclaimed, and maybe given to another instance,
    the retry held an address another instance holds (found by review h131). An allocation the
    client itself deallocated keeps its first answer (a retry gets what the command did)."""
    if seen is None or _held(state, e) is not None:
        return
    gone = _reclaimed(seen, e)
    if gone is None:
        return
    raise CommandIdReused(
        f"command {req.command_id} allocated {e.address} to instance {e.instance} in network"
        f" {e.network_id}; it was reclaimed since ({gone.reason}): allocate with a new"
        " command id",
        command_id=req.command_id,
        address=e.address,
        network_id=e.network_id,
        instance=e.instance,
        reclaimed=True,
    )


def result_from_events(
    state: State,
    req: Request,
    events: list[Event],
    seen: Mapping[str, SeenEvents] | None = None,
) -> dict[str, Any]:
    """The answer to a command that already landed (a retry with the same command id);
    ``seen``: the commands the service remembers (a reclaim among them voids an allocation's
    first answer)."""
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
            _not_reclaimed(state, req, e, seen)
        if isinstance(e, FixedIpAllocated):
            _not_reclaimed(state, req, e, seen)
            return {
                "address": e.address,
                "address_v6": e.address_v6,
                "network_id": e.network_id,
                "instance": e.instance,
                "mac": e.mac,
                "host": e.host,
                "project": e.project,
            }
        if isinstance(e, FloatingIpAllocated):
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
