"""``netledger`` with a probe inside (bench/alloc_tail.py starts serve through it; by hand).

    .venv/bin/python bench/tail_probe.py OUT.json --nats URL serve --data DIR

What it records in the command service's process, written to ``OUT.json`` at exit, all on
``time.monotonic()`` (one clock for every process of the machine):

- each allocation's path (keyed by its instance): ``queued`` (parsed in the read loop and put
  in its lane), ``taken`` (its lane's round began), ``pub`` / ``ack`` (the publish of its event
  and the acknowledgement, the round's append call), ``done`` (its answer settled and queued for
  writing);
- every cyclic-GC collection and the event loop's stalls with what ran (bench/loop_probe.py,
  shared with bench/executor_probe.py; a stall here is a wake-up later than ``STALL_S``).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from typing import Any

from loop_probe import LoopWatch

STALL_S = 0.005
now = time.monotonic

paths: dict[str, dict[str, float]] = {}
watch = LoopWatch(STALL_S, look_every=0.002)
gcs, stalls, stacks = watch.gcs, watch.stalls, watch.stacks
#: (start, seconds, what): a snapshot's write, its prune_all, its fork, its encoding and upload
#: (by the child; ``PROBE_SNAPSHOT_UPLOAD=parent``: encoded by the child, uploaded by the
#: service over its own connection, as before Dec 7 afternoon), the pruning after it
spans: list[tuple[float, float, str]] = []


def install() -> None:
    from netledger.journal.append import Appender
    from netledger.service.lane_queue import Job
    from netledger.service.lanes import Lanes
    from netledger.service.service import CommandService

    def key(job: Any) -> str | None:
        return getattr(job.req.command, "instance", None)

    orig_init = Job.__init__

    def init(self: Any, *a: Any, **kw: Any) -> None:
        orig_init(self, *a, **kw)
        k = key(self)
        if k:
            paths.setdefault(k, {})["queued"] = self.queued

    Job.__init__ = init  # type: ignore[method-assign]

    def settled(self: Any) -> None:
        k = key(self)
        if k:
            paths.setdefault(k, {})["done"] = now()
        orig_settled(self)

    orig_settled = Job._settled
    Job._settled = settled  # type: ignore[method-assign]

    orig_decide = Lanes._decide_and_append

    async def decide_and_append(self: Any, jobs: list[Any]) -> None:
        t = now()
        for j in jobs:
            k = key(j)
            if k:
                p = paths.setdefault(k, {})
                p.setdefault("taken", t)
                p["round"] = len(jobs)
        await orig_decide(self, jobs)

    Lanes._decide_and_append = decide_and_append  # type: ignore[method-assign]

    by_cmd: dict[str, str] = {}
    orig_init2 = init

    def init2(self: Any, *a: Any, **kw: Any) -> None:
        orig_init2(self, *a, **kw)
        k = key(self)
        if k:
            by_cmd[self.req.command_id] = k

    Job.__init__ = init2  # type: ignore[method-assign]

    def stamp(messages: list[Any], field: str, t: float) -> None:
        for m in messages:
            k = by_cmd.get(m.msg_id.split(":", 1)[0])
            if k:
                paths.setdefault(k, {}).setdefault(field, t)

    orig_append = Appender.append
    orig_chain = Appender.append_chain

    async def append(self: Any, messages: list[Any], *a: Any, **kw: Any) -> int:
        stamp(messages, "pub", now())
        try:
            return await orig_append(self, messages, *a, **kw)
        finally:
            stamp(messages, "ack", now())

    async def append_chain(self: Any, messages: list[Any], *a: Any, **kw: Any) -> Any:
        stamp(messages, "pub", now())
        for m in messages:
            k = by_cmd.get(m.msg_id.split(":", 1)[0])
            if k:
                paths[k]["chain"] = len(messages)
        try:
            return await orig_chain(self, messages, *a, **kw)
        finally:
            stamp(messages, "ack", now())

    Appender.append = append  # type: ignore[method-assign]
    Appender.append_chain = append_chain  # type: ignore[method-assign]

    orig_start = CommandService.start

    async def start(self: Any) -> None:
        await orig_start(self)
        self._tasks.add(watch.start())

    CommandService.start = start  # type: ignore[method-assign]

    import netledger.service.snapshotter as snapshotter
    from netledger.journal.snapshot_store import SnapshotStore

    def timed(owner: Any, name: str, what: str, is_async: bool) -> None:
        orig = getattr(owner, name)
        if is_async:

            async def wrapped_async(*a: Any, **kw: Any) -> Any:
                t = now()
                try:
                    return await orig(*a, **kw)
                finally:
                    spans.append((t, now() - t, what))

            setattr(owner, name, wrapped_async)
        else:

            def wrapped(*a: Any, **kw: Any) -> Any:
                t = now()
                try:
                    return orig(*a, **kw)
                finally:
                    spans.append((t, now() - t, what))

            setattr(owner, name, wrapped)

    if os.environ.get("PROBE_SNAPSHOT_NICE") is not None:  # (an A/B of the writer's niceness)
        import netledger.journal.snapshot_store as store

        store.CHILD_NICE = int(os.environ["PROBE_SNAPSHOT_NICE"])
    if os.environ.get("PROBE_SNAPSHOT_UPLOAD") == "parent":  # (an A/B: the upload as before)
        from netledger.journal.snapshot_store import write_forked

        async def parent_upload(
            store: Any, state: Any, seen: Any, *, seq: int, created: str, anchor: Any,
            tmpdir: str | None = None,
        ) -> Any:  # fmt: skip
            path, sha = await write_forked(
                state, seen, seq=seq, stream=store.conn.stream, created=created, tmpdir=tmpdir
            )
            try:
                return await store.put(path, seq, sha, await anchor())
            finally:
                os.unlink(path)

        snapshotter.put_forked = parent_upload  # type: ignore[assignment]
        timed(snapshotter, "write_forked", "encode (forked)", True)
    timed(snapshotter.Snapshotter, "write", "snapshot", True)
    timed(snapshotter, "prune_all", "prune_all", False)
    timed(snapshotter, "put_forked", "encode + upload (forked)", True)
    timed(SnapshotStore, "put", "upload", True)
    timed(SnapshotStore, "stored", "prune", True)
    orig_fork = os.fork

    def fork() -> int:
        t = now()
        pid = orig_fork()
        if pid:
            spans.append((t, now() - t, "fork"))
        return pid

    os.fork = fork
    watch.watch_collections()


def main() -> None:
    out = sys.argv[1]
    del sys.argv[1]

    pid = os.getpid()

    def dump() -> None:
        if os.getpid() != pid:  # a forked child (the snapshot encoder, a reader)
            return
        from collections import Counter

        types = Counter(type(o).__qualname__ for o in gc.get_objects())
        tracked = {
            "non_frozen": sum(types.values()),
            "frozen": gc.get_freeze_count(),
            "top": types.most_common(15),
        }
        with open(out, "w") as f:
            json.dump(
                {
                    "paths": paths,
                    "gcs": gcs,
                    "stalls": stalls,
                    "stacks": stacks,
                    "spans": spans,
                    "tracked": tracked,
                },
                f,
            )

    install()
    from netledger.cli import cli

    try:
        cli(prog_name="netledger")
    except SystemExit:
        pass
    dump()
    os._exit(0)  # as netledger's own main (cli.py _quick_exit)


if __name__ == "__main__":
    main()
