"""CPU per event of ``projector run --once``, by process: ``python bench/projector_cpu.py``.

Diagnostic, by hand (not in ``bench/run``). The log is bench/history_gen.py's cloud (1,000
hosts, 5,000 networks: its fill, ~136 k events, then churn) written once in atomic batches
into a nats-server store kept in the system's temp folder, or (``--kind alloc``) the projection
benchmark's log (4 networks, nothing but allocations). Each run is ``netledger projector run
--once`` from an empty database as its own process; its CPU is split as the projection
benchmark splits it (the reader's process, the projecting child, the committing grandchild)
plus the nats-server's over the same span: on-CPU time by the scheduler's clock
(/proc/PID/task/*/schedstat), the kernel's ticks beside it. Medians of ``--repeats`` runs;
with ``--ab REV`` that commit's projector runs interleaved with this tree's (A B A B ...), on
the same server and log, and the median of the pairs' differences is printed too.

This machine (2 KVM vCPUs, shared) moves a process's CPU per event by 5-10 % from one run to
the next whatever the code: a change of a few percent needs many pairs, or an instruction
count. For that, ``--stages-child --limit N`` runs the writer's steps over the first N messages
in one process (no NATS, no pipes): under ``valgrind --tool=cachegrind``, the difference of two
limits divided by their difference is instructions per event (load-independent).

    python bench/projector_cpu.py                       # µs/event by process, this tree
    python bench/projector_cpu.py --ab HEAD~2           # interleaved A/B against a commit
    python bench/projector_cpu.py --ab-args "--batch-size 5000"   # ... against options
    python bench/projector_cpu.py --stages              # in one process, no NATS: projecting
                                                        # and committing steps, µs/event
    python bench/projector_cpu.py --stages --profile    # cProfile of those (top 30, tottime)

The floor any Python projector of this schema pays is bench/projection_floor.py's (README §4);
bench/sqlite_floor.py measures its insert each way and the floor with each.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import pickle
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from fold_cpu import links  # noqa: E402

#: where the trees of other commits are checked out (a git worktree of this clone each)
TREES = Path(tempfile.gettempdir()) / f"netledger-projector-cpu-trees-{REPO.name}"


def tree(rev: str | None) -> Path:
    """An importable ``netledger`` of commit ``rev`` (None: this tree), as bench/fold_cpu.py
    builds one, in a folder of this clone's own."""
    if rev is None:
        return links(REPO, TREES / "here")
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", rev], check=True, capture_output=True, text=True
    ).stdout.strip()
    work = TREES / f"wt-{sha[:12]}"
    if not work.exists():
        TREES.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(work), sha],
            check=True,
            capture_output=True,
        )
    return links(work, TREES / f"links-{sha[:12]}")


PARTS = ("reader", "projecting", "committing", "nats-server", "total")


def store(kind: str, events: int, seed: int) -> Path:
    """The folder of a nats-server store holding the log (built on first use)."""
    from history_gen import generator_version

    name = f"netledger-projector-cpu-{kind}-{events}-{seed}-{generator_version()}"
    return Path(tempfile.gettempdir()) / name


async def _build(kind: str, events: int, seed: int, at: Path) -> None:
    from benchlib import Stack

    work = at.with_name(at.name + ".building")
    if work.exists():
        shutil.rmtree(work)  # a build that did not finish
    work.mkdir()
    st = Stack(work, sync_interval="default", projector=False)
    conn = await st.start()
    try:
        if kind == "history":
            from history_gen import build_history

            await build_history(conn, events, seed=seed)
        else:
            from scale import fill_network

            from netledger.service.client import Client

            await st.start_service()
            nets = await Client(conn).create_networks(
                label="p", cidr="10.32.0.0/14", num_networks=4, network_size=65536, mode="vxlan"
            )
            await st.stop_service()
            for k, n in enumerate(nets):
                await fill_network(conn, n["id"], f"10.{32 + k}", events // 4, 0)
    finally:
        await st.close()
    work.rename(at)


def _server(at: Path) -> Any:
    from netledger.common.natsserver import EmbeddedNats, free_port

    return EmbeddedNats(data_dir=at / "nats", port=free_port())


def _times(pid: int) -> tuple[float, float, float] | None:
    """(user, system, on-CPU) seconds of a live process, or None once it is gone. User and
    system are the kernel's tick accounting (/proc/PID/stat); on-CPU is the scheduler's own
    clock summed over its threads (/proc/PID/task/*/schedstat), not sampled at ticks (the
    projector's processes sleep and wake thousands of times a second; the two agreed within
    1 % here)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        run = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            run += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK, run / 1e9


_TICK = os.sysconf("SC_CLK_TCK")


def one_run(
    url: str, server_pid: int, where: Path | None, db: Path, extra: tuple[str, ...] = ()
) -> dict[str, float]:
    """``projector run --once`` into ``db`` from the netledger at ``where``: on-CPU seconds by
    process (``<part>``; the scheduler's clock), their system part (``<part> sys``; the
    kernel's ticks, as ``<part> ticks`` user + system), wall seconds. Each process's figures
    are its last reading, polled every 10 ms while it runs."""
    from netledger.common.peak_rss import descendants

    boot = "import sys; from netledger.cli import main; sys.exit(main())"
    argv = [sys.executable, "-c", boot, "--nats", url, "projector", "run", "--once", *extra]
    argv.append("--db")
    env = dict(os.environ)
    if where is not None:
        env["PYTHONPATH"] = str(where)
    before = _times(server_pid)
    assert before is not None
    t = time.perf_counter()
    p = subprocess.Popen(
        [*argv, str(db)], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    seen: dict[int, tuple[int, tuple[float, float, float]]] = {}
    running = threading.Event()
    running.set()

    def watch() -> None:
        while running.is_set():
            for child, depth in [(p.pid, 0), *descendants(p.pid)]:
                got = _times(child)
                if got is not None:
                    seen[child] = (depth, got)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        _, status, _ = os.wait4(p.pid, 0)
    finally:
        running.clear()
        watcher.join()
    wall = time.perf_counter() - t
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    if p.stderr:
        p.stderr.close()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"projector run --once failed ({status}): {err[-2000:]}")
    after = _times(server_pid)
    assert after is not None
    depths = {"reader": (0, 0), "projecting": (1, 1), "committing": (2, 99)}
    parts = {
        k: tuple(sum(c[i] for d, c in seen.values() if lo <= d <= hi) for i in range(3))
        for k, (lo, hi) in depths.items()
    }
    parts["nats-server"] = tuple(a - b for a, b in zip(after, before, strict=True))
    out = {"wall": wall}
    for k, (user, system, run) in parts.items():
        out[k] = run
        out[f"{k} sys"] = system
        out[f"{k} ticks"] = user + system
    out["total"] = sum(out[k] for k in PARTS[:-1])
    return out


def _remove(db: Path) -> None:
    for f in db.parent.glob(f"{db.name}*"):
        f.unlink()


def report(name: str, runs: list[dict[str, float]], events: int) -> None:
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    parts = " + ".join(
        f"{k} {med[k] * 1e6 / events:.1f} (ticks {med[k + ' ticks'] * 1e6 / events:.1f},"
        f" {med[k + ' sys'] * 1e6 / events:.1f} sys)"
        for k in PARTS[:-1]
    )
    print(
        f"{name:>12}: {med['total'] * 1e6 / events:5.1f} µs/event ({parts});"
        f" {events / med['wall']:,.0f} events/s wall (median of {len(runs)})"
    )


def paired(name: str, other: list[dict[str, float]], this: list[dict[str, float]]) -> None:
    """This tree against ``other`` run by run (each pair ran one after the other): the median
    of the pairs' relative differences, which the machine's swings between pairs move less."""
    diffs = {
        k: statistics.median(t[k] / o[k] - 1 for o, t in zip(other, this, strict=False))
        for k in (*PARTS, "wall")
    }
    print(f"{'':>12}  this tree vs {name}, median of paired differences: " + ", ".join(
        f"{k} {v:+.1%}" for k, v in diffs.items()
    ))  # fmt: skip


async def processes(args: argparse.Namespace) -> None:
    at = store(args.kind, args.events, args.seed)
    if not at.exists():
        print(f"building the log in {at} ...", flush=True)
        await _build(args.kind, args.events, args.seed, at)
    server = _server(at)
    await asyncio.to_thread(server.start)
    try:
        from netledger.journal.stream import connect, last_seq

        conn = await connect(server.url, name="bench")
        events = await last_seq(conn)
        await conn.close()
        print(f"{events:,} events ({args.kind}), CPU time per event, by process")
        assert server.proc is not None
        here = tree(None)
        sides: list[tuple[str, Path, tuple[str, ...]]] = []
        if args.ab:
            sides.append((args.ab, tree(args.ab), ()))
        if args.ab_args is not None:
            sides.append((args.ab_args, here, tuple(shlex.split(args.ab_args))))
        sides.append(("this tree", here, ()))
        runs: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in sides}
        with tempfile.TemporaryDirectory(prefix="nl-projector-cpu-") as d:
            for k in range(args.repeats):
                for label, where, extra in sides:
                    db = Path(d) / f"{k}.db"
                    got = await asyncio.to_thread(
                        one_run, server.url, server.proc.pid, where, db, extra
                    )
                    runs[label].append(got)
                    print(f"  {label}: " + json.dumps({k: round(v, 3) for k, v in got.items()}))
                    await asyncio.to_thread(_remove, db)
        for label, got in runs.items():
            if got:
                report(label, got, events)
        for label, got in runs.items():
            if label != "this tree":
                paired(label, got, runs["this tree"])
    finally:
        await asyncio.to_thread(server.stop)


# --- the writer's two processes in one, without NATS -------------------------------------------


async def _read_messages(args: argparse.Namespace) -> list[tuple[int, str, bytes, float, int]]:
    """The log's messages as the reader hands them to the writer."""
    at = store(args.kind, args.events, args.seed)
    if not at.exists():
        await _build(args.kind, args.events, args.seed, at)
    server = _server(at)
    await asyncio.to_thread(server.start)
    try:
        from netledger.journal.stream import connect, last_seq
        from netledger.projector.frames import stream_time

        conn = await connect(server.url, name="bench")
        n = await last_seq(conn)
        got: list[tuple[int, str, bytes, float, int]] = []
        done = asyncio.get_running_loop().create_future()

        async def cb(msg: Any) -> None:
            md = msg.metadata
            ts = int(msg.reply.rsplit(".", 2)[1])
            got.append((md.sequence.stream, msg.subject, msg.data, stream_time(ts), md.num_pending))
            if len(got) >= n and not done.done():
                done.set_result(None)

        sub = await conn.js.subscribe(
            "netledger.evt.>", cb=cb, ordered_consumer=True, stream=conn.stream,
            pending_msgs_limit=-1, pending_bytes_limit=0,
        )  # fmt: skip
        await asyncio.wait_for(done, 600)
        await sub.unsubscribe()
        await conn.close()
        return got
    finally:
        await asyncio.to_thread(server.stop)


def messages(args: argparse.Namespace) -> list[tuple[int, str, bytes, float, int]]:
    """:func:`_read_messages`, kept in a pickle beside the store after the first time."""
    path = store(args.kind, args.events, args.seed).with_suffix(".messages.pickle")
    if path.exists():
        with path.open("rb") as f:
            got: list[tuple[int, str, bytes, float, int]] = pickle.load(f)
            return got
    got = asyncio.run(_read_messages(args))
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        pickle.dump(got, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)
    return got


STEPS = ("project", "merge", "plan", "frame", "unframe", "write", "build")


def stages(msgs: list[tuple[int, str, bytes, float, int]], db: Path) -> dict[str, float]:
    """The projecting process's and the committing process's work, one after the other in
    this process, batch by batch as they do it (the garbage collector's thresholds theirs, the
    messages frozen out of its sight): CPU seconds of each step."""
    import sqlite3

    from netledger.projector.frames import decode_plan_frame, plan_frame
    from netledger.projector.rowcache import RowCache
    from netledger.projector.store import Batch, Writer, project_into
    from netledger.projector.writer_proc import GC_THRESHOLD

    clock = time.process_time
    spent = dict.fromkeys(STEPS, 0.0)
    writer = Writer(db)
    writer.prepare(msgs[-1][0], bulk_min=0)  # as a long catch-up: the indexes built at the end
    until, writer.bulk_until = writer.bulk_until, None  # built below, timed on its own
    reads = sqlite3.connect(db)
    reads.execute("PRAGMA query_only=1")
    cache = RowCache()
    old = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)
    try:
        cur = Batch(reads, cache=cache)
        last = 0
        for i in range(0, len(msgs), 2000):
            t0 = clock()
            for j in range(i, min(i + 2000, len(msgs)), 256):
                last = project_into(cur, msgs[j : min(j + 256, i + 2000)], last)
            t1 = clock()
            if cur.base is not None:
                cache.merge(cur.base)
                cur.base = None
            t2 = clock()
            plan = cur.plan()
            t3 = clock()
            frame = plan_frame(plan, 0.0)
            t4 = clock()
            got, _ = decode_plan_frame(memoryview(frame)[4:])
            t5 = clock()
            writer.commit_plan(got)
            t6 = clock()
            del got, frame, plan
            cur = Batch(reads, base=cur, cache=cache)
            marks = (t0, t1, t2, t3, t4, t5, t6)
            for step, a, b in zip(STEPS[:-1], marks[:-1], marks[1:], strict=True):
                spent[step] += b - a
        t0 = clock()
        if until is not None:
            writer.end_bulk()
        spent["build"] = clock() - t0
    finally:
        gc.unfreeze()
        gc.set_threshold(*old)
        reads.close()
        writer.close()
    return spent


def stages_child(args: argparse.Namespace) -> None:
    msgs = messages(args)
    if args.limit:
        msgs = msgs[: args.limit]
    with tempfile.TemporaryDirectory(prefix="nl-projector-stages-") as d:
        if args.profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.runcall(stages, msgs, Path(d) / "p.db")
            pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)
            return
        got = stages(msgs, Path(d) / "s.db")
    print(json.dumps({k: v * 1e6 / len(msgs) for k, v in got.items()}))


def run_stages(args: argparse.Namespace) -> None:
    msgs = messages(args)
    n = len(msgs)
    del msgs
    if args.profile:
        stages_child(args)
        return
    here = tree(None)
    base = tree(args.ab) if args.ab else None
    runs: dict[str, list[dict[str, float]]] = {"this tree": [], args.ab or "": []}
    argv = [sys.executable, __file__, "--stages-child", "--kind", args.kind]
    argv += ["--events", str(args.events), "--seed", str(args.seed)]
    for _ in range(args.repeats):
        for label, where in ((args.ab, base), ("this tree", here)):
            if label is None:
                continue
            env = {**os.environ, "PYTHONPATH": str(where), "PYTHONHASHSEED": "0"}
            out = subprocess.run(argv, check=True, capture_output=True, text=True, env=env)
            runs[label].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{n:,} events ({args.kind}), CPU µs/event in one process, median of {args.repeats}")
    print(f"{'':>12}  " + " ".join(f"{s:>8}" for s in (*STEPS, "all")))
    for label, got in runs.items():
        if got:
            med = [statistics.median(r[s] for r in got) for s in STEPS]
            total = statistics.median(sum(r.values()) for r in got)
            print(f"{label:>12}: " + " ".join(f"{v:8.2f}" for v in (*med, total)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kind", choices=("history", "alloc"), default="history")
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ab", metavar="REV", help="compare with this commit, interleaved")
    ap.add_argument(
        "--ab-args",
        metavar="ARGS",
        help="compare with this tree given these `projector run` options",
    )
    ap.add_argument("--stages", action="store_true", help="the writer's steps in one process")
    ap.add_argument("--profile", action="store_true", help="with --stages: cProfile them")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--stages-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--limit", type=int, default=0, help="with --stages: the first N messages")
    args = ap.parse_args()
    if args.stages_child:
        stages_child(args)
    elif args.stages:
        run_stages(args)
    else:
        asyncio.run(processes(args))


if __name__ == "__main__":
    main()
