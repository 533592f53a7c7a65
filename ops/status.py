"""``netledger status``: is the system healthy? One look at every part of it.

* the stream: messages, bytes, sequences, replicas and the cluster leader (``stream_info``);
* command-service replicas, found with NATS service discovery: each runs a
  :class:`StatusResponder` that answers the NATS micro-service protocol (``$SRV.PING``,
  ``$SRV.INFO``, ``$SRV.STATS``, also per name ``$SRV.STATS.netledger`` and per id), so
  ``nats micro ls`` sees them as well;
* projectors: each ``--db`` file's checkpoint (``projection_state.last_seq``) against the
  stream's last sequence, its rejected events, and whether its daemon is live — the stamp it
  rewrites every period once it has all the stream holds (projector/liveness.py): at lag 0 a
  dead projector and an idle one have the same checkpoint;
* host executors: each host's liveness in the ``NETLEDGER_LIVE`` bucket (``host.<h>.status``:
  its last pass, applied sequence, events of its share still to read, changes, failures) — or,
  for an executor from before the liveness bucket, its last ``HostReconciled`` in the log
  (direct gets, newest first); and each host subject's last event (:mod:`.status_hosts`).

A component more than ``max_lag`` sequences behind the stream is *lagging*; any problem makes
``healthy`` false (and ``netledger status`` exit with 1, so it can be a health check).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg

from netledger.common.output import plural
from netledger.journal.stream import Connection
from netledger.ops.status_hosts import _iso, hosts_and_retired
from netledger.ops.status_hosts import hosts_status as hosts_status  # (imported from here)
from netledger.projector.liveness import STOPPED, liveness_fields, read_stamp

SERVICE_NAME = "netledger"
SRV_PREFIX = "$SRV"
DEFAULT_MAX_LAG = 100
#: Reply subjects a discovery request is never answered on: netledger's own and the server's
#: ($JS, $KV, ...). The sender chooses its reply subject and the service answers with its own
#: rights — on the log's subjects, or a host's liveness key (service/requests.py refuses such
#: command requests the same way; review hrev12).
NOT_AN_INBOX = ("netledger.", "$")


def package_version() -> str:
    try:
        return version("netledger")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0"


# --- the responder each long-running component runs ----------------------------------------


def service_stats(service: Any) -> dict[str, Any]:
    """What a command-service replica reports about itself (from ``CommandService``)."""
    st = service.stats
    total = sum(st.commands.values())
    errors = sum(n for k, n in st.commands.items() if not k.endswith(":ok"))
    return {
        "applied_seq": service.follower.applied_seq,
        "commands": total,
        "errors": errors,
        "conflicts": st.conflicts,
        "batches": st.batches,
        "batched_events": st.batched_events,
        # single-event decisions appended as pipelined chains; decisions appended right after
        # their placements (a host's first address in a network) and such appends broken by
        # another writer (then atomic batches): service/prelink.py
        "pipelined": st.pipelined,
        "prelinked": st.prelinked,
        "prelink_broken": st.prelink_broken,
        "rejected": service.rejected_total,
        "ready_seconds": getattr(service, "ready_seconds", None),
        "snapshots": service.snapshotter.stats.as_dict() if service.snapshotter else None,
        # whether the log takes writes, why not, the store's usage, restarts (issue 16)
        "log": service.health.as_dict() if getattr(service, "health", None) else None,
    }


class StatusResponder:
    """Answers NATS micro-service discovery for one component (several replicas: several ids).

    ``data()`` is called on each ``STATS`` request; its dict is the endpoint's ``data``.
    Owns its subscriptions: ``await close()`` (or ``async with``) removes them.
    """

    def __init__(
        self,
        conn: Connection,
        data: Callable[[], dict[str, Any]],
        *,
        component: str = "command-service",
        subject: str = "netledger.cmd.>",
        queue_group: str = "netledger-command",
        name: str = SERVICE_NAME,
    ) -> None:
        self.conn = conn
        self.data = data
        self.component = component
        self.subject = subject
        self.queue_group = queue_group
        self.name = name
        self.id = uuid.uuid4().hex
        self.started = time.time()
        self._started_mono = time.monotonic()
        self._subs: list[Any] = []

    @classmethod
    def for_service(cls, conn: Connection, service: Any) -> StatusResponder:
        return cls(conn, lambda: service_stats(service), queue_group=service.queue)

    def _base(self, kind: str) -> dict[str, Any]:
        return {
            "type": f"io.nats.micro.v1.{kind}_response",
            "name": self.name,
            "id": self.id,
            "version": package_version(),
            "metadata": {"component": self.component},
        }

    def _endpoint(self) -> dict[str, Any]:
        return {"name": self.component, "subject": self.subject, "queue_group": self.queue_group}

    def response(self, verb: str) -> dict[str, Any]:
        if verb == "PING":
            return self._base("ping")
        if verb == "INFO":
            return {
                **self._base("info"),
                "description": f"netledger {self.component}",
                "endpoints": [self._endpoint()],
            }
        data = dict(self.data())
        data["uptime_s"] = round(time.monotonic() - self._started_mono, 3)
        return {
            **self._base("stats"),
            "started": _iso(self.started),
            "endpoints": [
                {
                    **self._endpoint(),
                    "num_requests": data.get("commands", 0),
                    "num_errors": data.get("errors", 0),
                    "processing_time": 0,
                    "average_processing_time": 0,
                    "last_error": "",
                    "data": data,
                }
            ],
        }

    async def _on(self, msg: Msg) -> None:
        # Checked first: a consumer delivering the log here (its replies $JS.ACK...) costs
        # nothing but this check per message.
        if not msg.reply or msg.reply.startswith(NOT_AN_INBOX):
            return
        verb = msg.subject.split(".")[1]
        try:
            body = json.dumps(self.response(verb), default=str).encode()
        except Exception as exc:  # a broken stats reader must not hide the replica
            body = json.dumps({**self._base(verb.lower()), "error": str(exc)}).encode()
        await msg.respond(body)

    async def start(self) -> None:
        nc = self.conn.nc
        for verb in ("PING", "INFO", "STATS"):
            for subj in (
                f"{SRV_PREFIX}.{verb}",
                f"{SRV_PREFIX}.{verb}.{self.name}",
                f"{SRV_PREFIX}.{verb}.{self.name}.{self.id}",
            ):
                self._subs.append(await nc.subscribe(subj, cb=self._on))
        await nc.flush()

    async def close(self) -> None:
        subs, self._subs = self._subs, []
        for s in subs:
            try:
                await s.unsubscribe()
            except Exception:
                pass

    async def __aenter__(self) -> StatusResponder:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def discover(
    conn: Connection, verb: str = "STATS", name: str = SERVICE_NAME, wait: float = 0.5
) -> list[dict[str, Any]]:
    """Every responder's answer to ``$SRV.<verb>.<name>`` within ``wait`` seconds."""
    nc = conn.nc
    inbox = nc.new_inbox()
    answers: list[dict[str, Any]] = []

    async def on(msg: Msg) -> None:
        try:
            answers.append(json.loads(msg.data))
        except ValueError:
            pass

    sub = await nc.subscribe(inbox, cb=on)
    try:
        await nc.publish(f"{SRV_PREFIX}.{verb}.{name}", b"", reply=inbox)
        await nc.flush()
        await asyncio.sleep(wait)
    finally:
        await sub.unsubscribe()
    return sorted(answers, key=lambda a: str(a.get("id")))


# --- gathering -------------------------------------------------------------------------------


@dataclass
class Thresholds:
    max_lag: int = DEFAULT_MAX_LAG


async def stream_status(conn: Connection) -> dict[str, Any]:
    info = await conn.js.stream_info(conn.stream)
    st = info.state
    out: dict[str, Any] = {
        "name": conn.stream,
        "messages": st.messages,
        "bytes": st.bytes,
        "first_seq": st.first_seq,
        "last_seq": st.last_seq,
        "consumers": st.consumer_count,
        "replicas": info.config.num_replicas or 1,
        "leader": None,
        "cluster": None,
        "peers": [],
    }
    cl = info.cluster
    if cl is not None:
        out["cluster"] = cl.name
        out["leader"] = cl.leader
        out["peers"] = [
            {
                "name": p.name,
                "current": bool(p.current),
                "offline": bool(p.offline),
                "lag": p.lag or 0,
                "active_s": (p.active or 0) / 1e9 if p.active else None,
                "silent": not p.offline and (p.active or 0) / 1e9 > SILENT_S,
            }
            for p in cl.replicas or []
        ]
    return out


#: A stream replica the leader has not heard from for longer than this (seconds; the
#: replicas answer its heartbeats every second or so) is said to be silent: nats-server marks a
#: killed node ``offline`` only after tens of seconds (41 s measured, review h135), and until
#: then the replica looked "online, behind".
SILENT_S = 5.0


def replica_state(peer: dict[str, Any]) -> str:
    """A stream replica in words: offline, not heard from for N s, or online."""
    if peer["offline"]:
        return "offline"
    if peer.get("silent"):
        return f"not heard from for {peer['active_s']:.0f} s"
    return "online"


def projector_status(db: Path, stream_last: int, max_lag: int) -> dict[str, Any]:
    """A projection file's checkpoint and rejected events (read-only, never locks a writer)."""
    out: dict[str, Any] = {"db": str(db), "error": None}
    if not db.is_file():
        return {**out, "error": "no such file", "lagging": True}
    try:
        conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            row = conn.execute(
                "SELECT last_seq, schema_version FROM projection_state WHERE id = 1"
            ).fetchone()
            rejected = conn.execute(
                "SELECT seq, subject, type, reason FROM rejected_events ORDER BY seq DESC LIMIT 10"
            ).fetchall()
            n_rejected = conn.execute("SELECT count(*) FROM rejected_events").fetchone()[0]
            stamp = read_stamp(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return {**out, "error": f"not a netledger projection: {exc}", "lagging": True}
    last = int(row[0] or 0) if row else 0
    lag = max(0, stream_last - last)
    return {
        **out,
        "last_seq": last,
        "schema_version": row[1] if row else None,
        "lag": lag,
        "lagging": lag > max_lag,
        "rejected": n_rejected,
        "recent_rejected": [
            {"seq": r[0], "subject": r[1], "type": r[2], "reason": r[3]} for r in rejected
        ],
        **liveness_fields(stamp),
    }


def _services(
    answers: list[dict[str, Any]], stream_last: int, max_lag: int
) -> list[dict[str, Any]]:
    out = []
    for a in answers:
        eps = a.get("endpoints") or [{}]
        data = dict(eps[0].get("data") or {})
        applied = data.get("applied_seq")
        lag = max(0, stream_last - applied) if isinstance(applied, int) else None
        out.append(
            {
                "id": a.get("id"),
                "component": (a.get("metadata") or {}).get("component"),
                "version": a.get("version"),
                "started": a.get("started"),
                **data,
                "lag": lag,
                "lagging": lag is not None and lag > max_lag,
                # its STATS answer when reading its figures raised (StatusResponder._on): a
                # problem, not a replica with nothing to say (review hrev21)
                "error": a.get("error"),
            }
        )
    return out


async def gather(
    conn: Connection,
    dbs: list[Path] | None = None,
    *,
    max_lag: int = DEFAULT_MAX_LAG,
    wait: float = 0.5,
) -> dict[str, Any]:
    """Everything ``netledger status`` shows, as one JSON-able dict."""
    stream = await stream_status(conn)
    last = int(stream["last_seq"])
    answers, (hosts, retired) = await asyncio.gather(
        discover(conn, wait=wait), hosts_and_retired(conn, last, max_lag)
    )
    services = _services(answers, last, max_lag)
    projectors = [projector_status(Path(db), last, max_lag) for db in dbs or []]
    problems = problems_of(stream, services, projectors, hosts, max_lag)
    return {
        "healthy": not problems,
        "problems": problems,
        "max_lag": max_lag,
        "stream": stream,
        "services": services,
        "projectors": projectors,
        "hosts": hosts,
        #: hosts retired (`host retire`) and silent since: not listed, not problems
        "retired_hosts": retired,
        "rejected": sum(p.get("rejected") or 0 for p in projectors),
    }


def log_problems(service: dict[str, Any]) -> list[str]:
    """A replica's log trouble (its ``log``: journal/loghealth.py), one sentence."""
    lg = service.get("log")
    if not isinstance(lg, dict) or lg.get("state") in (None, "ok"):
        return []
    who = f"{service.get('component')} {service.get('id')}"
    code = f" [{lg['code']}]" if lg.get("code") else ""
    state = str(lg["state"])
    if lg.get("writable", True):
        return [f"{who}: appends to the log fail{code}: {lg.get('reason')}"]
    return [f"{who} refuses writes ({state}){code}: {lg.get('reason')}"]


def _not_live(p: dict[str, Any]) -> str:
    age = p.get("age_s")
    since = "a while" if age is None else f"{age:.0f}s"
    if p.get("mode") == STOPPED:
        return f"projector {p['db']}: its daemon stopped {since} ago (pid {p.get('pid')})"
    why = "not running, hung or cut off from NATS"
    if p.get("lag"):
        why += ", or still catching up"
    return (
        f"projector {p['db']} has not confirmed it has the whole stream for {since} (every"
        f" {p.get('period_s')}s expected): {why} (pid {p.get('pid')})"
    )


def problems_of(
    stream: dict[str, Any],
    services: list[dict[str, Any]],
    projectors: list[dict[str, Any]],
    hosts: list[dict[str, Any]],
    max_lag: int,
) -> list[str]:
    """What an operator should look at, one sentence each (empty: healthy)."""
    out: list[str] = []
    if stream["replicas"] > 1 and not stream["leader"]:
        out.append(f"stream {stream['name']} has no leader")
    for p in stream["peers"]:
        if p["offline"] or p.get("silent"):
            out.append(f"stream replica {p['name']} is {replica_state(p)}")
        elif not p["current"]:
            out.append(f"stream replica {p['name']} is behind")
    cmd = [s for s in services if s.get("component") == "command-service"]
    if not cmd:
        out.append("no command-service replica answered")
    for s in services:
        if s.get("error"):
            out.append(f"{s['component']} {s['id']} cannot report its state: {s['error']}")
        if s["lagging"]:
            out.append(f"{s['component']} {s['id']} is {plural(s['lag'], 'sequence')} behind")
        out += log_problems(s)
    for p in projectors:
        if p.get("error"):
            out.append(f"projector {p['db']}: {p['error']}")
        elif p["lagging"]:
            out.append(
                f"projector {p['db']} is {plural(p['lag'], 'sequence')} behind (> {max_lag})"
            )
        if p.get("rejected"):
            out.append(f"projector {p['db']} rejected {plural(p['rejected'], 'stream message')}")
        if p.get("live") is False:
            out.append(_not_live(p))
    for h in hosts:
        if h.get("retired_seq") is not None:
            out.append(
                f"host {h['host']} was retired (seq {h['retired_seq']}) but its executor still"
                " reports: stop it, or restart it to bring the host back"
            )
        if h.get("error"):
            out.append(f"host {h['host']}: {h['error']}")
        elif h["applied_seq"] is None:
            out.append(f"host {h['host']} has not reported a reconcile")
        elif h.get("live") is False:
            out.append(f"host {h['host']} has not reported for {h['age_s']:.0f}s")
        elif h["lagging"]:
            out.append(f"host {h['host']} is {plural(h['lag'], 'sequence')} behind (> {max_lag})")
    return out
