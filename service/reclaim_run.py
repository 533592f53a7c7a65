"""Running reclaims inside the command service: decide, append with two OCC checks, retry.

A reclaim batch is ``[FloatingIpDisassociated…, FixedIpReclaimed…, FixedIpReclaimSealed]``.
The first message on the network's subject carries the usual
``Nats-Expected-Last-Subject-Sequence`` (the network as decided on); the seal, last, carries
``Nats-Expected-Last-Subject-Sequence`` = the host subject's sequence the decision read, with
``Nats-Expected-Last-Subject-Sequence-Subject`` naming the host's subject. JetStream checks both
when it commits the batch, all or nothing: the command service never writes the host's subject
(NATS permissions deny it), yet a report appended there after the decision rejects the reclaim.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, Protocol

from netledger.events.codec import SYSTEM, Envelope
from netledger.events.commands import Request
from netledger.events.decide import decide
from netledger.events.decide_common import live_network
from netledger.events.decide_host import host_present
from netledger.events.errors import HostNotFound, LogUnavailable
from netledger.events.ids import host_subject
from netledger.events.placement import mappings
from netledger.events.reclaim import FixedIpReclaim, FixedIpReclaimSweep, Heartbeats, survey
from netledger.events.state import State
from netledger.journal.append import MaybeApplied, WrongLastSequence, build_messages

log = logging.getLogger("netledger.reclaim")


class CommandService(Protocol):
    """What a reclaim uses of the running command service (service/service.py's
    ``CommandService``): its fold, the command ids it has seen, its appender and follower, its
    conflict counter, the hosts' heartbeats. Named here rather than imported: the service imports
    this module to run reclaims, and an import back would make the two a cycle."""

    state: State
    seen: Any
    appender: Any
    follower: Any
    stats: Any

    def heartbeats_now(self) -> Heartbeats: ...


MAX_ATTEMPTS = 64


async def reclaim_one(
    svc: CommandService, network_id: str, host: str, grace: float, command_id: str | None = None
) -> dict[str, Any]:
    """Decide and append the reclaims of one (network, host); retry on any conflict."""
    command_id = command_id or f"reclaim-{uuid.uuid4().hex}"
    for attempt in range(MAX_ATTEMPTS):
        # The host's latest heartbeat (liveness bucket), read again on every attempt.
        hb = svc.heartbeats_now().get(host)
        req = Request(
            FixedIpReclaim(network_id=network_id, host=host, grace=grace, heartbeat=hb),
            command_id,
            SYSTEM,
        )
        if command_id in svc.seen:  # an earlier attempt landed after all (lost ack)
            return {"network_id": network_id, "host": host, "reclaimed": [], "landed": True}
        d = decide(svc.state, req)
        if not d.events:
            return d.result
        now = time.time()
        # The network-side unmapping of each floating IP let go, before the seal (last).
        events = [*d.events[:-1], *mappings(d.events), d.events[-1]]
        envelopes = [
            Envelope(ev, f"{command_id}:{i}", command_id, now, SYSTEM)
            for i, ev in enumerate(events)
        ]
        expected = {s: svc.state.seq_of(s) for s in {ev.subject() for ev in events}}
        guard = (host_subject(host), int(d.result["host_seq"]))
        try:
            seq = await svc.appender.append(build_messages(envelopes), expected, guard)
        except WrongLastSequence:
            svc.stats.conflicts += 1
            log.info("reclaim in %s on %s: the log moved, deciding again", network_id, host)
            await svc.follower.catch_up()
            await asyncio.sleep(0.001 * min(attempt, 20))
            continue
        except MaybeApplied:
            await svc.follower.catch_up()
            continue
        await svc.follower.wait_for(seq)
        log.info(
            "reclaimed %s in network %s (host %s) at seq %d",
            ", ".join(r["address"] for r in d.result["reclaimed"]),
            network_id,
            host,
            seq,
        )
        return {**d.result, "seq": seq}
    raise RuntimeError(f"reclaim in {network_id} on {host}: too many concurrent changes")


async def sweep(svc: CommandService, cmd: FixedIpReclaimSweep) -> dict[str, Any]:
    """Every candidate (dry run), or reclaim them: one decision per (network, host). A
    ``network_id`` no network has is :class:`NetworkNotFound`, as every command naming a
    network answers it ("0 candidates" read as a network with nothing to reclaim); a ``host``
    no allocation names and not in the cloud is :class:`HostNotFound`."""
    await svc.follower.catch_up()
    if cmd.network_id is not None:
        live_network(svc.state, cmd.network_id)  # checked on the state caught up to the log
    if (
        cmd.host is not None
        and not svc.state.host_macs.get(cmd.host)
        and not host_present(svc.state, cmd.host)
    ):
        # A host no allocation names and no executor announced (a typo, most often): not
        # "0 candidates". One that holds allocations is surveyed whatever its executor did.
        raise HostNotFound(
            f"host {cmd.host} holds no allocation and is not in the cloud", host=cmd.host
        )
    surveyed = survey(
        svc.state,
        cmd.grace,
        host=cmd.host,
        network_id=cmd.network_id,
        heartbeats=svc.heartbeats_now(),
    )
    found = surveyed.candidates
    held_back = [h.as_dict() for h in surveyed.held_back]
    for h in surveyed.held_back:
        c = h.candidate
        # Said at every sweep while it lasts: an allocation that names the wrong host is an
        # operator's to fix (the instance's host will never prove it gone).
        log.warning(
            "not reclaiming %s in network %s (instance %s): absent from host %s for %.0fs,"
            " but listed by the newest report of %s",
            c.address,
            c.network_id,
            c.instance,
            c.host,
            c.absence.span,
            ", ".join(h.seen_on),
        )
    if cmd.dry_run:
        return {
            "dry_run": True,
            "grace": cmd.grace,
            "candidates": [c.as_dict() for c in found],
            "held_back": held_back,
        }
    reclaimed: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    # Candidates no batch can free (more floating IPs than it holds): the decision leaves them
    # to an operator, so the answer must name them (h136: the sweep dropped them, and nothing
    # said why an address the dry run listed was never freed).
    too_large: dict[tuple[str, str], dict[str, Any]] = {}
    for network_id, host in sorted({(c.network_id, c.host) for c in found}):
        try:
            while True:  # one decision appends at most one batch (reclaim.MAX_RECLAIM_MESSAGES)
                r = await reclaim_one(svc, network_id, host, cmd.grace)
                for item in r.get("reclaimed", []):
                    reclaimed.append({**item, "seq": r.get("seq"), "host_seq": r.get("host_seq")})
                for address in r.get("too_large", []):
                    too_large[(network_id, address)] = {
                        "network_id": network_id,
                        "host": host,
                        "address": address,
                    }
                if not r.get("more") or not r.get("reclaimed"):
                    break
        except LogUnavailable:
            raise  # the log's trouble: every pair would fail alike
        except Exception as exc:
            # One (network, host) that fails must not stop the others, every sweep again
            # (found by review): said, and tried again next sweep.
            log.warning("reclaim on network %s, host %s failed: %s", network_id, host, exc)
            failed.append({"network_id": network_id, "host": host, "error": str(exc)})
    for t in too_large.values():
        log.warning(
            "not reclaiming %s in network %s (host %s): more floating IPs on it than one"
            " atomic batch can let go with it; deallocate it",
            t["address"],
            t["network_id"],
            t["host"],
        )
    out: dict[str, Any] = {
        "dry_run": False,
        "grace": cmd.grace,
        "reclaimed": reclaimed,
        "held_back": held_back,
        "too_large": list(too_large.values()),
    }
    if failed:
        out["failed"] = failed
    return out


async def reclaim_forever(svc: CommandService, grace: float, interval: float) -> None:
    """The periodic reclaim of ``serve --reclaim-after``: every replica may run it (OCC)."""
    while True:
        await asyncio.sleep(interval)
        try:
            r = await sweep(svc, FixedIpReclaimSweep(grace=grace))
        except Exception:
            log.exception("periodic reclaim failed")
            continue
        if r["reclaimed"]:
            log.info("reclaimed %d address(es) of instances gone", len(r["reclaimed"]))
