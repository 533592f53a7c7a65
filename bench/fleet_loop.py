"""The fleet benchmark's commands and its bookkeeping (bench/fleet.py).

* :func:`make_plan`: commands arriving steadily (Poisson), each an allocation on a host in one
  of the cloud's networks — most on a host that already has instances there, a few on a host
  that has none (it *joins* the network: a ``NetworkHostJoined`` on its placement subject, its
  view resubscribes), a few in the single-host networks the network hosts serve — or the
  deallocation of one of the plan's earlier allocations.
* :func:`send_commands` sends them at their times through the command service (open loop:
  sent whatever is still unanswered); :func:`send_raw` publishes one raw message a command on
  the twin stream at the same times (the raw limit).
* :func:`account`: from the events the commands appended, which hosts' shares each one is in
  (who holds an address in its network, the network hosts for a single-host network, the
  host itself for its placement subject) against the messages each host's view was handed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from netledger.events.codec import Envelope, decode
from netledger.events.errors import DecodeError
from netledger.events.placement_events import NetworkHostJoined
from netledger.events.types import FixedIpAllocated, FixedIpDeallocated
from netledger.journal.follow import iter_subject
from netledger.journal.stream import Connection
from netledger.service.client import Client

#: connections the commands are spread over (a cloud's API workers)
CONNECTIONS = 8
#: an allocation goes to a host without instances in the network (a join) this often ...
JOIN_P = 0.1
#: ... and to one of the single-host networks (served by the network hosts) this often
SINGLE_P = 0.05
#: the plan's own live instances: below this an arrival always allocates, at it always frees
MIN_LIVE = 10
MAX_LIVE = 200


@dataclass(frozen=True)
class Arrival:
    at: float
    network: str
    host: str
    #: the index of the allocation this arrival deallocates (None: an allocation)
    undoes: int | None = None


@dataclass
class Sent:
    """One arrival's times on the one clock (``time.monotonic``)."""

    due: float
    answered: float | None = None
    error: str | None = None


def make_plan(
    times: list[float],
    held: dict[str, dict[str, int]],
    single: list[str],
    compute: list[str],
    seed: int,
) -> list[Arrival]:
    """Arrivals at ``times``: allocations and deallocations of them. ``held``: network ->
    host -> instances the host has there (the cloud at the end of its history); ``single``:
    the single-host networks; ``compute``: the hosts an instance may be placed on."""
    rng = random.Random(seed)
    networks = sorted(held)
    have: dict[str, dict[str, int]] = {n: dict(hs) for n, hs in held.items()}
    live: list[int] = []
    out: list[Arrival] = []
    for i, at in enumerate(times):
        free = len(live) >= MAX_LIVE or (len(live) >= MIN_LIVE and rng.random() < 0.5)
        if free:
            k = live.pop(rng.randrange(len(live)))
            a = out[k]
            have[a.network][a.host] -= 1
            out.append(Arrival(at, a.network, a.host, k))
            continue
        r = rng.random()
        if single and r < SINGLE_P:
            net = rng.choice(single)
            host = rng.choice(compute)
        else:
            net = rng.choice(networks)
            serving = [h for h, c in have.get(net, {}).items() if c > 0]
            if serving and r >= SINGLE_P + JOIN_P:
                host = rng.choice(sorted(serving))
            else:
                host = rng.choice(compute)
                while host in serving:
                    host = rng.choice(compute)
        have.setdefault(net, {})
        have[net][host] = have[net].get(host, 0) + 1
        live.append(i)
        out.append(Arrival(at, net, host))
    return out


def instance(prefix: str, i: int) -> str:
    return f"{prefix}-{i}"


async def _at_times(plan: list[Arrival], send: Callable[[int], Awaitable[None]]) -> list[Sent]:
    """Start ``send(i)`` at each arrival's time whatever is still unanswered (open loop)."""
    sent = [Sent(0.0) for _ in plan]
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int) -> None:
        try:
            await send(i)
            sent[i].answered = time.monotonic()
        except Exception as exc:
            sent[i].error = f"{exc.__class__.__name__}: {exc}"

    t0 = time.monotonic() + 0.05
    for i, a in enumerate(plan):
        due = t0 + a.at
        sent[i].due = due
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return sent


async def send_commands(url: str, plan: list[Arrival], prefix: str) -> list[Sent]:
    """The plan through the command service: an allocation (instance ``prefix-i`` on the
    arrival's host and network), or a deallocation once the allocation it undoes is answered."""
    clients = [await Client.connect(url) for _ in range(CONNECTIONS)]
    done = [asyncio.Event() for _ in plan]
    ok = [False] * len(plan)

    async def send(i: int) -> None:
        a = plan[i]
        client = clients[i % CONNECTIONS]
        try:
            if a.undoes is None:
                await client.allocate_fixed_ip(
                    instance(prefix, i), network_id=a.network, host=a.host
                )
            else:
                await done[a.undoes].wait()
                if not ok[a.undoes]:
                    raise RuntimeError("the allocation it undoes failed")
                await client.deallocate_fixed_ip(instance(prefix, a.undoes), a.network)
            ok[i] = True
        finally:
            done[i].set()

    try:
        return await _at_times(plan, send)
    finally:
        for c in clients:
            await c.close()


async def send_raw(
    conn: Connection, plan: list[Arrival], prefix: str, subject: Callable[[str], str], stream: str
) -> list[Sent]:
    """One raw publish (acknowledged) a command, on ``subject(network)`` of the twin stream,
    its payload the name of the arrival."""

    async def send(i: int) -> None:
        await conn.js.publish(subject(plan[i].network), instance(prefix, i).encode(), stream=stream)

    return await _at_times(plan, send)


async def appended(conn: Connection, first: int, last: int) -> list[tuple[int, str, Envelope]]:
    """The events the commands appended: the stream from ``first`` through ``last``."""
    out: list[tuple[int, str, Envelope]] = []
    async for seq, subject, data, _msg in iter_subject(conn, "netledger.evt.>", first, last):
        try:
            out.append((seq, subject, decode(data)))
        except DecodeError:
            continue
    return out


def fold_held(held: dict[str, dict[str, int]], events: list[tuple[int, str, Envelope]]) -> None:
    """Bring ``held`` (network -> host -> instances there) up to date with ``events``."""
    for _seq, _subject, env in events:
        ev = env.event
        if isinstance(ev, FixedIpAllocated | FixedIpDeallocated) and ev.host is not None:
            hs = held.setdefault(ev.network_id, {})
            hs[ev.host] = hs.get(ev.host, 0) + (1 if isinstance(ev, FixedIpAllocated) else -1)


@dataclass
class Delivered:
    """What the fleet was handed of the commands' events, against the hosts' shares."""

    events: int = 0
    #: host x event pairs where the event is in the host's share when it is appended
    expected: int = 0
    delivered: int = 0
    in_share: int = 0
    #: expected but never handed to the host's view
    missed: int = 0
    #: handed to a host that joined the event's network after it: read when it joined
    backfill: int = 0
    #: handed to a host that had just left the network, before its view resubscribed
    after_leave: int = 0
    #: handed to a host whose share it was never in
    outside: int = 0
    #: seq -> the hosts whose share it is in
    receivers: dict[int, set[str]] = field(default_factory=dict)
    #: (instance, event type) -> seq
    seq_of: dict[tuple[str, str], int] = field(default_factory=dict)
    #: instances whose allocation made its host join the network
    joins: set[str] = field(default_factory=set)
    leaves: set[str] = field(default_factory=set)


def account(
    events: list[tuple[int, str, Envelope]],
    held: dict[str, dict[str, int]],
    single: set[str],
    network_hosts: set[str],
    hosts: list[str],
    seqs: dict[str, list[int]],
) -> Delivered:
    """Which hosts' shares each of ``events`` is in (executor/share.py's rule, on the
    benchmark's own model of who holds what: ``held`` as the cloud's history left it, updated
    by the events), against ``seqs``: host -> the sequences its view was handed."""
    d = Delivered(events=len(events))
    count: dict[str, dict[str, int]] = {n: dict(hs) for n, hs in held.items()}
    joined: dict[tuple[str, str], list[int]] = defaultdict(list)
    left: dict[tuple[str, str], list[int]] = defaultdict(list)
    everyone = set(hosts)
    net_of: dict[int, str] = {}
    cmd_joins: set[str] = set()

    def following(net: str) -> set[str]:
        out = {h for h, c in count.get(net, {}).items() if c > 0}
        return out | network_hosts if net in single else out

    for seq, subject, env in events:
        ev = env.event
        kind = subject.split(".")[2]
        if isinstance(ev, FixedIpAllocated) and ev.host is not None:
            net_hosts = count.setdefault(ev.network_id, {})
            if not net_hosts.get(ev.host):
                joined[(ev.host, ev.network_id)].append(seq)
            net_hosts[ev.host] = net_hosts.get(ev.host, 0) + 1
            d.seq_of[(ev.instance, ev.TYPE)] = seq
            if env.command_id in cmd_joins:
                d.joins.add(ev.instance)
        if isinstance(ev, NetworkHostJoined):
            cmd_joins.add(env.command_id)
        if kind == "network":
            net = subject.split(".", 3)[3]
            net_of[seq] = net
            d.receivers[seq] = following(net)
        elif kind in ("host", "placement"):
            d.receivers[seq] = {subject.split(".", 3)[3]}
        elif kind in ("registry", "announce", "retired", "legacy-announcements"):
            d.receivers[seq] = set(everyone)
        else:
            d.receivers[seq] = set()
        if isinstance(ev, FixedIpDeallocated) and ev.host is not None:
            d.seq_of[(ev.instance, ev.TYPE)] = seq
            net_hosts = count.setdefault(ev.network_id, {})
            net_hosts[ev.host] = net_hosts.get(ev.host, 0) - 1
            if net_hosts[ev.host] <= 0:
                left[(ev.host, ev.network_id)].append(seq)
                d.leaves.add(ev.instance)
    d.expected = sum(len(r) for r in d.receivers.values())
    for host in hosts:
        got = set(seqs.get(host, ()))
        want = {s for s, r in d.receivers.items() if host in r}
        d.delivered += len(got)
        d.in_share += len(got & want)
        d.missed += len(want - got)
        for s in got - want:
            on = net_of.get(s)
            if on is not None and any(j > s for j in joined.get((host, on), ())):
                d.backfill += 1
            elif on is not None and any(j < s for j in left.get((host, on), ())):
                d.after_leave += 1
            else:
                d.outside += 1
    return d


def applied_times(views: dict[str, Any]) -> dict[tuple[str, str, str], float]:
    """(host, instance, event type) -> when that host's view applied it (the first time)."""
    out: dict[tuple[str, str, str], float] = {}
    for host, v in views.items():
        for inst, typ, t in v["applied"]:
            out.setdefault((host, inst, typ), t)
    return out
