"""``netledger`` with a probe inside the executor daemon (bench/kernel_tail.py starts it).

    .venv/bin/python bench/executor_probe.py OUT.json --nats URL executor run --host H ...

What it records in the executor's process, written to ``OUT.json`` at exit, on
``time.monotonic()`` (one clock for every process of the machine, and ``perf_counter``'s too):

- each network's way in (keyed by network id): ``joined`` / ``alloc`` (this host's
  ``NetworkHostJoined`` / ``FixedIpAllocated`` folded by the view: the follower's delivery);
- each pass: its start, the networks it took (``dirty``; None: all), ``planned`` (the plan made),
  its netlink batches on the loop's thread (start, end), its end, its reason;
- the share's resubscriptions (``set_subjects``: start, seconds);
- every cyclic-GC collection and the event loop's stalls with what ran (bench/loop_probe.py,
  shared with bench/tail_probe.py; a stall here is a wake-up later than ``STALL_S``);
- spans (start, seconds, what, thread): the sweep's dump of the kernel, its read of NAT and
  forwarding, its check up to the verdict, the sighting reporter's observation, liveness
  status puts, view snapshot writes and their fork, ``in_netns`` threads, nft runs.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import threading
import time
from typing import Any

from loop_probe import LoopWatch

STALL_S = 0.003
now = time.monotonic

nets: dict[str, dict[str, float]] = {}
passes: list[dict[str, Any]] = []
resubs: list[tuple[float, float]] = []
watch = LoopWatch(STALL_S, look_every=0.001)
gcs, stalls, stacks = watch.gcs, watch.stalls, watch.stacks
spans: list[tuple[float, float, str, str]] = []
_cur: list[dict[str, Any] | None] = [None]
tracked: list[dict[str, Any]] = [{"non_frozen": 0, "top": []}]


def _tracked() -> None:
    """The objects the collector tracks outside the freeze, while the executor still holds
    its view, and what a full collection over them costs now (a daemon up for days has made
    more of them: this is the cost after one run)."""
    from collections import Counter

    types = Counter(type(o).__qualname__ for o in gc.get_objects())
    t, cpu = now(), time.thread_time()
    gc.collect()
    tracked[0] = {
        "non_frozen": sum(types.values()),
        "frozen": gc.get_freeze_count(),
        "top": types.most_common(20),
        "full_collect_ms": round((now() - t) * 1000, 2),
        "full_collect_cpu_ms": round((time.thread_time() - cpu) * 1000, 2),
    }


def _span(owner: Any, name: str, what: str) -> None:
    orig = getattr(owner, name)
    if asyncio.iscoroutinefunction(orig):

        async def wrapped_async(*a: Any, **kw: Any) -> Any:
            t = now()
            try:
                return await orig(*a, **kw)
            finally:
                spans.append((t, now() - t, what, threading.current_thread().name))

        setattr(owner, name, wrapped_async)
    else:

        def wrapped(*a: Any, **kw: Any) -> Any:
            t = now()
            try:
                return orig(*a, **kw)
            finally:
                spans.append((t, now() - t, what, threading.current_thread().name))

        setattr(owner, name, wrapped)


def install() -> None:
    import netledger.executor.netlink as netlink
    from netledger.events.placement_events import NetworkHostJoined
    from netledger.events.types import FixedIpAllocated
    from netledger.executor import nft
    from netledger.executor.cache import KernelCache
    from netledger.executor.converge import Converger
    from netledger.executor.daemon import Executor
    from netledger.executor.netlink import RtSocket
    from netledger.executor.sightings import SightingReporter
    from netledger.executor.snapshot import ViewSnapshots
    from netledger.executor.sweeping import Sweeping
    from netledger.executor.view import HostView
    from netledger.journal.follow import Follower

    orig_handle = HostView._handle

    def handle(self: Any, seq: int, subject: str, env: Any) -> None:
        ev = env.event
        if isinstance(ev, NetworkHostJoined) and ev.host == self.host:
            nets.setdefault(ev.network_id, {}).setdefault("joined", now())
        elif isinstance(ev, FixedIpAllocated) and ev.host == self.host:
            nets.setdefault(ev.network_id, {}).setdefault("alloc", now())
        orig_handle(self, seq, subject, env)

    HostView._handle = handle  # type: ignore[method-assign]

    orig_take = HostView.take_dirty

    def take_dirty(self: Any) -> Any:
        dirty = orig_take(self)
        cur = _cur[0]
        if cur is not None:
            cur["dirty"] = None if dirty is None else sorted(dirty)
            cur["taken"] = now()
        return dirty

    HostView.take_dirty = take_dirty  # type: ignore[method-assign]

    orig_reconcile = Executor.reconcile

    async def reconcile(self: Any, reason: str) -> Any:
        cur: dict[str, Any] = {"start": now(), "reason": reason, "batches": []}
        _cur[0] = cur
        try:
            return await orig_reconcile(self, reason)
        finally:
            cur["end"] = now()
            _cur[0] = None
            passes.append(cur)

    Executor.reconcile = reconcile  # type: ignore[method-assign]

    orig_plan = Executor._plan_pass

    def plan_pass(self: Any, *a: Any, **kw: Any) -> Any:
        plan = orig_plan(self, *a, **kw)
        if _cur[0] is not None:
            _cur[0]["planned"] = now()
        return plan

    Executor._plan_pass = plan_pass  # type: ignore[method-assign]

    orig_batch = RtSocket.batch
    main_thread = threading.main_thread()

    def batch(self: Any, *a: Any, **kw: Any) -> Any:
        t = now()
        try:
            return orig_batch(self, *a, **kw)
        finally:
            cur = _cur[0]
            if cur is not None and threading.current_thread() is main_thread:
                cur["batches"].append((t, now()))

    RtSocket.batch = batch  # type: ignore[method-assign]

    orig_subjects = Follower.set_subjects

    async def set_subjects(self: Any, *a: Any, **kw: Any) -> Any:
        t = now()
        try:
            return await orig_subjects(self, *a, **kw)
        finally:
            resubs.append((t, now() - t))

    Follower.set_subjects = set_subjects  # type: ignore[method-assign]

    _span(KernelCache, "resync", "cache dump")
    _span(Converger, "read_host", "read NAT + forwarding")
    _span(Sweeping, "_sweep_check", "sweep check")
    _span(SightingReporter, "observe", "sightings observe")
    _span(SightingReporter, "report_once", "sightings report")
    _span(Executor, "_put_status", "status put")
    _span(ViewSnapshots, "write", "view snapshot")
    _span(netlink, "in_netns", "in_netns")
    _span(nft, "read", "nft read")
    _span(nft, "apply", "nft apply")
    # kernel.py took this name at import: its own too (nft is used through its module)
    import netledger.executor.kernel as kernel

    kernel.in_netns = netlink.in_netns  # type: ignore[attr-defined]
    orig_fork = os.fork

    def fork() -> int:
        t = now()
        pid = orig_fork()
        if pid:
            spans.append((t, now() - t, "fork", "MainThread"))
        return pid

    os.fork = fork

    orig_run = Executor.run_forever

    async def run_forever(self: Any) -> None:
        beat = watch.start()
        try:
            await orig_run(self)
        finally:
            beat.cancel()
            _tracked()

    Executor.run_forever = run_forever  # type: ignore[method-assign]
    watch.watch_collections()


def main() -> None:
    out = sys.argv[1]
    del sys.argv[1]
    pid = os.getpid()

    def dump() -> None:
        if os.getpid() != pid:  # a forked child (the snapshot encoder)
            return
        with open(out, "w") as f:
            json.dump(
                {
                    "nets": nets,
                    "passes": passes,
                    "resubs": resubs,
                    "gcs": gcs,
                    "stalls": stalls,
                    "stacks": stacks,
                    "spans": spans,
                    "tracked": tracked[0],
                    "switchinterval": sys.getswitchinterval(),
                },
                f,
            )

    install()
    if os.environ.get("PROBE_SWITCH_INTERVAL"):  # an A/B of the interpreter's switch interval
        from netledger.executor import daemon

        switch = float(os.environ["PROBE_SWITCH_INTERVAL"])
        orig_forever = daemon.Executor._run_forever

        def set_after_start(self: Any) -> Any:
            sys.setswitchinterval(switch)
            return orig_forever(self)

        daemon.Executor._run_forever = set_after_start  # type: ignore[method-assign]
    from netledger.cli import cli

    try:
        cli(prog_name="netledger")
    except SystemExit:
        pass
    dump()
    os._exit(0)


if __name__ == "__main__":
    main()
