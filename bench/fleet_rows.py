"""The fleet benchmark's rows (bench/fleet.py): each figure next to its raw limit of the run."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from benchlib import Row, Stack, percentile
from fleet_loop import Arrival, Delivered, Sent, account, appended, applied_times, instance

from netledger.events.ids import network_subject
from netledger.events.types import FixedIpAllocated, FixedIpDeallocated

NAME = "fleet"


@dataclass
class FleetStart:
    #: seconds, server / service / workers CPU seconds (fleet.Meter)
    cpu: dict[str, float]
    #: host -> its follower's filter subjects once ready
    subjects: dict[str, list[str]]
    #: events read by all hosts together
    read: int
    #: the workers' peak RSS together, less theirs before any host (MB)
    rss_mb: float
    #: raw: the hosts that read their share (the rest scaled from theirs); 0: every host
    sampled: int = 0
    #: views whose start failed and was tried again (bench/fleet_worker.py), and why
    failed: list[str] = field(default_factory=list)


@dataclass
class Loop:
    sent: list[Sent]
    cpu: dict[str, float]
    first: int
    last: int
    #: what the hosts saw (fleet.Fleet.dump), with a fleet attached
    seen: dict[str, Any] = field(default_factory=dict)

    @property
    def answered(self) -> int:
        return sum(1 for s in self.sent if s.answered is not None)

    def per_command_us(self, what: str) -> float:
        return self.cpu[what] / max(1, self.answered) * 1e6


@dataclass
class RawRun:
    plan: list[Arrival]
    sent: list[Sent]
    cpu: dict[str, float]
    seen: dict[str, Any]


def _ms(xs: list[float], p: float) -> float:
    return percentile(xs, p) * 1e3


def followers(subjects: dict[str, list[str]]) -> dict[str, set[str]]:
    """network -> the hosts whose filter subjects name it."""
    out: dict[str, set[str]] = {}
    prefix = network_subject("")
    for host, subs in subjects.items():
        for s in subs:
            if s.startswith(prefix) and not s.endswith(">"):
                out.setdefault(s[len(prefix) :], set()).add(host)
    return out


def view_latencies(
    plan: list[Arrival], loop: Loop, d: Delivered, prefix: str
) -> dict[str, list[float]]:
    """Per arrival: due -> its host's view applied its event (``all``; ``join``: the allocations
    that made their host join), answer -> applied (``after``), due -> the last host whose share
    it is in applied it (``last``); ``missing``: answered, never applied by its host."""
    applied = applied_times(loop.seen["views"])
    out: dict[str, list[float]] = {
        "all": [], "join": [], "steady": [], "after": [], "last": [], "missing": []
    }  # fmt: skip
    for i, (a, s) in enumerate(zip(plan, loop.sent, strict=True)):
        if s.answered is None:
            continue
        if a.undoes is None:
            inst, typ = instance(prefix, i), FixedIpAllocated.TYPE
        else:
            inst, typ = instance(prefix, a.undoes), FixedIpDeallocated.TYPE
        t = applied.get((a.host, inst, typ))
        if t is None:
            out["missing"].append(float(i))
            continue
        out["all"].append(t - s.due)
        out["after"].append(t - s.answered)
        if typ == FixedIpAllocated.TYPE and inst in d.joins:
            out["join"].append(t - s.due)
        else:
            out["steady"].append(t - s.due)
        seq = d.seq_of.get((inst, typ))
        if seq is not None:
            ts = [applied.get((h, inst, typ)) for h in d.receivers.get(seq, ())]
            if ts and all(x is not None for x in ts):
                out["last"].append(max(x for x in ts if x is not None) - s.due)
    return out


def raw_latencies(
    run: RawRun, follow: dict[str, set[str]], prefix: str
) -> tuple[dict[str, list[float]], int, int]:
    """Per publish: due -> the raw consumer of its host (or, when its host does not follow the
    network — a join —, of the network's first follower) got it; ack -> got; and the messages
    delivered to all raw consumers against those whose filter names the subject."""
    got = {(host, payload): t for host, xs in run.seen["raw"].items() for payload, t in xs}
    delivered = sum(len(xs) for xs in run.seen["raw"].values())
    expected = 0
    out: dict[str, list[float]] = {"all": [], "after": []}
    for i, (a, s) in enumerate(zip(run.plan, run.sent, strict=True)):
        f = follow.get(a.network, set())
        expected += len(f)
        if s.answered is None or not f:
            continue
        host = a.host if a.host in f else min(f)
        t = got.get((host, instance(prefix, i)))
        if t is not None:
            out["all"].append(t - s.due)
            out["after"].append(t - s.answered)
    return out, delivered, expected


async def fleet_rows(
    st: Stack,
    *,
    cloud_note: str,
    last_seq_before: int,
    hosts: list[str],
    network_hosts: set[str],
    single: set[str],
    held: dict[str, dict[str, int]],
    model: dict[str, list[str]],
    plan: list[Arrival],
    started: FleetStart,
    raw_started: FleetStart,
    idle: dict[str, dict[str, float]],
    ours: Loop,
    raw: RawRun,
    lone: RawRun,
    bare: list[Loop],
    resubscribed: int,
    workers: int,
    shipped_limit: int,
) -> list[Row]:
    assert st.conn is not None
    n = len(hosts)
    rows = [
        Row(NAME, "the cloud: events in the log when the fleet starts", last_seq_before,
            "events", note=cloud_note),
    ]  # fmt: skip
    need = n + 2  # a follower a host, the service's and its projector's
    rows.append(
        Row(NAME, "consumers a stream accepts as shipped (nats-server default_max_consumers)",
            shipped_limit, "consumers", shipped_limit / need, "consumers the fleet follows with",
            f"{need:,} needed at once (a follower a host, the service's, its projector's) and"
            f" one more a subject while a host reads its share at start or on a join; measured"
            f" on a stream defined as netledger's log (no limit of its own); the benchmark's"
            f" log is given room (as `nats stream edit NETLEDGER --max-consumers N` would)")
    )  # fmt: skip
    rows += start_rows(n, workers, model, started, raw_started)
    events = await appended(st.conn, ours.first, ours.last)
    seqs = {h: v["seqs"] for h, v in ours.seen["views"].items()}
    d = account(events, held, single, network_hosts, hosts, seqs)
    lat = view_latencies(plan, ours, d, "fa")
    follow = followers(started.subjects)
    rlat, r_delivered, r_expected = raw_latencies(raw, follow, "fr")
    failed = sum(1 for s in ours.sent if s.error)
    what = f"{n:,} views, Poisson {len(plan) / max(1e-9, plan[-1].at):.0f} commands/s"
    rnote = (
        f"{len(raw.plan):,} publishes on the network's subject of a twin stream at the same"
        f" arrivals; {n:,} raw ordered consumers with the views' filter subjects (1 s"
        f" heartbeats, as the followers); at the host's consumer (a join's: the network's"
        f" first follower's)"
    )
    for label, p in (("p50", 50.0), ("p99", 99.0), ("max", 100.0)):
        rv, ov = _ms(rlat["all"], p), _ms(lat["all"], p)
        rows.append(Row(NAME, f"raw publish -> the host's raw consumer, {label}", rv, "ms",
                        baseline="raw limit", note=rnote if label == "p50" else ""))  # fmt: skip
        note = ""
        if label == "p50":
            note = (
                f"{len(lat['all']):,} of {len(plan):,} commands ({failed} failed,"
                f" {len(lat['missing'])} answered but never applied by their host), from each"
                f" arrival's time to the instance's host's view applying its event; after the"
                f" answer: p50 {_ms(lat['after'], 50):.1f} ms, p99 {_ms(lat['after'], 99):.1f}"
                f" ms (raw after the ack: {_ms(rlat['after'], 50):.1f} / "
                f"{_ms(rlat['after'], 99):.1f} ms)"
            )
        elif label == "p99":
            note = (
                f"the commands that are not joins: p99 {_ms(lat['steady'], 99):.1f} ms, max"
                f" {_ms(lat['steady'], 100):.1f} ms; the last of the hosts whose share it is in:"
                f" p50 {_ms(lat['last'], 50):.1f} ms, p99 {_ms(lat['last'], 99):.1f} ms, max"
                f" {_ms(lat['last'], 100):.1f} ms"
            )
        rows.append(Row(NAME, f"{what}: command -> its host's view applied it, {label}", ov,
                        "ms", rv / ov if ov > 0 else None, f"raw publish -> consumer {label}",
                        note))  # fmt: skip
    for label, p in (("p50", 50.0), ("max", 100.0)):
        rv, ov = _ms(rlat["all"], p), _ms(lat["join"], p)
        rows.append(Row(NAME, f"{what}: a join (the host's first instance there) -> its view"
                        f" applied it, {label}", ov, "ms", rv / ov if ov > 0 else None,
                        f"raw publish -> consumer {label}",
                        f"{len(lat['join'])} joins: the view resubscribes with the network"
                        f" added and reads its history first; {resubscribed:,} resubscriptions"
                        " during the loop (joins and leaves)" if label == "p50" else ""))  # fmt: skip
    rows += delivery_rows(d, len(events), ours.answered, r_delivered, r_expected, len(raw.plan))
    rows += cpu_rows(n, ours, bare, raw, lone, idle)
    return rows


def start_rows(
    n: int, workers: int, model: dict[str, list[str]], ours: FleetStart, raw: FleetStart
) -> list[Row]:
    differ = sum(1 for h, s in ours.subjects.items() if sorted(s) != sorted(model.get(h, [])))
    subjects = statistics.mean(len(s) for s in ours.subjects.values()) if ours.subjects else 0
    rs, os_ = raw.cpu, ours.cpu
    retried = (
        f"{len(ours.failed)} starts failed and were tried again (first: {ours.failed[0]})"
        if ours.failed
        else "no start failed"
    )
    sampled = (
        f"{raw.sampled:,} of the hosts read theirs at once, the figures scaled to {n:,}"
        if raw.sampled and raw.sampled < n
        else "every host at once"
    )
    rows = [
        Row(NAME, f"raw fleet start: {n:,} hosts read their share raw, then subscribe",
            rs["seconds"], "s", baseline="raw limit",
            note=f"{raw.read / n:,.0f} events a host (one ordered consumer per subject, counted"
            f" not decoded; {sampled}), then one raw ordered consumer with the views' filter"
            f" subjects (every host); server CPU {rs['server']:.1f} s, workers' CPU"
            f" {rs['workers']:.1f} s"),
        Row(NAME, f"fleet start: {n:,} views ready (all at once, {workers} worker processes)",
            os_["seconds"], "s", rs["seconds"] / os_["seconds"], "raw fleet start",
            f"{os_['seconds'] / n * 1e3:.0f} ms a host; {ours.read / n:,.0f} events read a host"
            f" ({ours.read / max(1, raw.read):.2f}x the raw read's); {subjects:.1f} filter"
            f" subjects a host; {differ} views' subjects differ from executor/share.py's rule"
            f" on the history's model; {retried}"),
        Row(NAME, "fleet start: nats-server CPU", os_["server"], "s",
            rs["server"] / os_["server"] if os_["server"] else None,
            "raw fleet start's server CPU",
            f"{os_['server'] / n * 1e3:.1f} ms a host (raw {rs['server'] / n * 1e3:.1f})"),
        Row(NAME, "fleet start: the workers' CPU", os_["workers"], "s",
            rs["workers"] / os_["workers"] if os_["workers"] else None,
            "raw fleet start's workers' CPU",
            f"{os_['workers'] / n * 1e3:.0f} ms a host (raw {rs['workers'] / n * 1e3:.0f});"
            f" the workers' peak RSS {ours.rss_mb:,.0f} MB together (less their imports'),"
            f" {ours.rss_mb / n:.1f} MB a host (raw {raw.rss_mb / n:.1f})"),
    ]  # fmt: skip
    return rows


def delivery_rows(
    d: Delivered, events: int, commands: int, r_delivered: int, r_expected: int, publishes: int
) -> list[Row]:
    per = max(1, commands)
    return [
        Row(NAME, "messages handed to the fleet's views per command", d.delivered / per,
            "msg/cmd", d.expected / d.delivered if d.delivered else None,
            "messages in the concerned hosts' shares",
            f"{events / per:.2f} events a command, in {d.expected / per:.2f} hosts' shares"
            f" (host x event); handed: {d.in_share:,} in the share, {d.backfill} read on a"
            f" join (the network's history), {d.after_leave} after a leave before the view"
            f" resubscribed, {d.outside} outside the host's share; {d.missed} in a share"
            f" never handed; raw consumers: {r_delivered:,} handed of {r_expected:,} named by"
            f" their filters ({publishes:,} publishes)"),
    ]  # fmt: skip


def cpu_rows(
    n: int,
    ours: Loop,
    bare: list[Loop],
    raw: RawRun,
    lone: RawRun,
    idle: dict[str, dict[str, float]],
) -> list[Row]:
    def rate(x: dict[str, float], what: str) -> float:
        return x[what] / x["seconds"] * 1e3  # ms a second

    def less_idle(cpu: dict[str, float], idle_ms: float, count: int) -> float:
        """us per command of the server's CPU less what it spends idle meanwhile."""
        return (cpu["server"] - idle_ms / 1e3 * cpu["seconds"]) / max(1, count) * 1e6

    def answered(sent: list[Sent]) -> int:
        return sum(1 for s in sent if s.answered is not None)

    none_idle = rate(idle["none"], "server")
    fleet_idle = rate(idle["fleet"], "server")
    raw_idle = rate(idle["raw"], "server")
    bare_server = statistics.mean(b.per_command_us("server") for b in bare)
    bare_busy = statistics.mean(less_idle(b.cpu, none_idle, b.answered) for b in bare)
    bare_service = statistics.mean(b.per_command_us("service") for b in bare)
    server = ours.per_command_us("server")
    busy = less_idle(ours.cpu, fleet_idle, ours.answered)
    service = ours.per_command_us("service")
    n_raw, n_lone = answered(raw.sent), answered(lone.sent)
    raw_server = raw.cpu["server"] / max(1, n_raw) * 1e6
    raw_busy = less_idle(raw.cpu, raw_idle, n_raw)
    lone_server = lone.cpu["server"] / max(1, n_lone) * 1e6
    lone_busy = less_idle(lone.cpu, none_idle, n_lone)
    raw_workers = raw.cpu["workers"] / max(1, n_raw) * 1e6
    workers = ours.per_command_us("workers")
    each = " and ".join(f"{b.per_command_us('server'):.0f}" for b in bare)
    return [
        Row(NAME, "nats-server CPU per command, no fleet", bare_server, "us/cmd",
            baseline="raw limit",
            note=f"{each} in the runs before the fleet's start and after it; less the server's"
            f" idle rate ({none_idle:.1f} ms/s): {bare_busy:.0f} us/cmd"),
        Row(NAME, f"nats-server CPU per command, {n:,} views attached", server, "us/cmd",
            bare_server / server if server else None, "no fleet",
            f"less its idle rate with the fleet attached ({fleet_idle:.1f} ms/s: the followers'"
            f" heartbeats, 1 s each): {busy:.0f} us/cmd, {busy / bare_busy:.2f}x no fleet's"
            f" {bare_busy:.0f}"),
        Row(NAME, "nats-server CPU per raw publish, no consumer", lone_server, "us/msg",
            baseline="raw limit",
            note=f"{n_lone:,} acknowledged publishes on the twin stream; less the idle rate:"
            f" {lone_busy:.0f} us/msg"),
        Row(NAME, f"nats-server CPU per raw publish, {n:,} raw consumers attached", raw_server,
            "us/msg", lone_server / raw_server if raw_server else None, "no consumer",
            f"the views' filter subjects on the twin stream; less the idle rate"
            f" ({raw_idle:.1f} ms/s): {raw_busy:.0f} us/msg, {raw_busy / lone_busy:.2f}x no"
            f" consumer's {lone_busy:.0f}: what nats-server itself pays a message for"
            f" {n:,} filtered consumers"),
        Row(NAME, f"command service CPU per command, {n:,} views attached", service, "us/cmd",
            bare_service / service if service else None, "no fleet",
            f"with its projector's processes; no fleet {bare_service:.0f} us/cmd"),
        Row(NAME, "the fleet's CPU per command (every view together)", workers, "us/cmd",
            raw_workers / workers if workers else None, "raw consumers per publish",
            f"the workers' CPU over the loop: {rate(ours.cpu, 'workers'):.0f} ms/s, idle"
            f" {rate(idle['fleet'], 'workers'):.0f} ms/s (raw consumers idle"
            f" {rate(idle['raw'], 'workers'):.0f} ms/s)"),
    ]  # fmt: skip
