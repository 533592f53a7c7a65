"""Where the wall time of a start's tail fold goes: ``serve`` from a snapshot plus a tail, this
tree against another checkout, interleaved (diagnostic, by hand; not in bench/run).

    .venv/bin/python bench/fold_wall.py --old /tmp/old-checkout --rounds 9
    .venv/bin/python bench/fold_wall.py --old /tmp/old-checkout --keep /tmp/fw  # reuse the log

The log is the history benchmark's young cloud (bench/history_gen.py: 1,000 hosts, 5,000
networks, ~136 k events), a snapshot of it written by this tree's service (the same snapshot and
fold versions as the other checkout's, or that one folds the whole log: the run stops), and a
tail of ``--tail`` churn events after it: what bench/history_service.py's
``service_from_snapshot`` starts from. ``--keep DIR`` keeps the nats-server store, so a second
run starts at once. Each round reads the tail raw (bench/history_raw.py) and starts ``serve
--no-projector --snapshot-every 0`` once with each checkout's venv, the order swapped every
round, each start through this file's probe (``probe OUT``: the checkout's own ``netledger``
with timers around its catch-up, its reader child's and its garbage collections). Per start, on
``time.monotonic`` (one clock for every process) and the kernel's per-task counters
(``/proc/<pid>/task/<tid>/schedstat``: nanoseconds on a CPU and waiting for one), every figure
as medians [min-max] over every start and over the quiet ones (the rest of the machine used
under ``QUIET_MS`` of CPU meanwhile), then new - old paired by round:

* ``ready``: the service's own start -> ready, split where the snapshot is decoded (of the
  load: its body fetched, then checked and decoded). A start whose child reads the tail while
  the snapshot is decoded moves work from the fold to before it: compare ``ready``, not
  ``fold``; its ``ask`` is then before the fold starts;
* ``fold``: what the service reports (``fold: N events in S``), and the probe's own wall;
* the parent's main thread over the fold: CPU, run-queue wait, and the rest (asleep: waiting for
  the child's frames, the child's exit, the follower's consumer); its CPU folding frames
  (``_Frames`` — unpickle and fold) and in collections;
* the reader child over its read (asked -> last frame): wall, CPU, run-queue wait; the first
  frame after the ask, the last frame's arrival to the fold's end;
* how often the parent read a frame on the core the child wrote its latest one on (the two
  sharing a core);
* nats-server's CPU over the fold (all its threads); the machine's over the fold
  (``/proc/stat``, 10 ms ticks): busy, of it the others' (not the parent, the child, the
  server), stolen by the hypervisor; its CPU pressure (``/proc/pressure/cpu`` ``some``: the
  share of the wall some task was runnable and waited).

Found with it (bench/README.md, "Why the tail fold's wall moves"): the fold's wall follows the
rest of the machine's load, its CPU the code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import mmap
import os
import re
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

now = time.monotonic


# --- the probe (runs inside ``serve``, with either checkout's venv: netledger only) -------------


def task_sched(pid: int | str = "self", tid: int | None = None) -> tuple[int, int]:
    """(ns on a CPU, ns runnable but waiting for one) of one task, or summed over a process's
    tasks (``tid`` None)."""
    tids = [str(tid)] if tid is not None else os.listdir(f"/proc/{pid}/task")
    cpu = wait = 0
    for t in tids:
        with contextlib.suppress(OSError, ValueError):
            c, w, _ = Path(f"/proc/{pid}/task/{t}/schedstat").read_text().split()
            cpu += int(c)
            wait += int(w)
    return cpu, wait


def on_cpu() -> int:
    """The CPU this thread runs on now (``/proc/thread-self/stat``'s ``processor``)."""
    return int(Path("/proc/thread-self/stat").read_text().rsplit(")", 1)[1].split()[36])


def machine_ms() -> tuple[float, float]:
    """(CPU busy, CPU stolen by the hypervisor) of every core since boot, ms (``/proc/stat``:
    10 ms ticks)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = 1000 / os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = f[:8]
    return (user + nice + system + irq + softirq) * tick, steal * tick


def pressure_us() -> int:
    """Microseconds some task of the machine waited for a CPU, since boot (PSI)."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return int(line.rsplit("total=", 1)[1])
    except (OSError, IndexError, ValueError):
        return 0


#: what the reader child writes down: its times (monotonic), its task's CPU and run-queue wait
#: (ns) when asked and at its latest frame
_CHILD_FIELDS = ("connected", "asked", "first_frame", "frame", "cpu_asked", "wait_asked",
                 "cpu_frame", "wait_frame", "on_cpu")  # fmt: skip
_CHILD = struct.Struct(f"<{len(_CHILD_FIELDS)}d")


def child_figures(mem: Any) -> dict[str, float]:
    return dict(zip(_CHILD_FIELDS, _CHILD.unpack_from(mem, 0), strict=True))


def dump(path: str | Path, obj: Any) -> None:
    Path(path).write_text(json.dumps(obj))


def load(path: str | Path) -> Any:
    """``path``'s JSON; None when there is no such file."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


def _probe(out: str) -> None:
    import netledger.journal.catchup as catchup
    import netledger.service.snapshotter as snapshotter
    from netledger.service.service import CommandService

    parent = os.getpid()
    main_tid = threading.get_native_id()
    server = os.environ.get("PROBE_SERVER_PID")
    rec: dict[str, Any] = {"marks": {"probe": now()}, "gcs": [], "frames_cpu": 0.0}
    rec.update(same_cpu=0, other_cpu=0)
    in_fold = [False]
    gc_at = [0.0, 0.0]

    def mark(key: str) -> None:
        rec["marks"].setdefault(key, now())

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if not in_fold[0]:
            return
        if phase == "start":
            gc_at[0], gc_at[1] = now(), time.thread_time()
        else:
            rec["gcs"].append((info["generation"], now() - gc_at[0], time.thread_time() - gc_at[1]))

    gc.callbacks.append(on_gc)

    orig_load = snapshotter.Snapshotter.load

    async def load(self: Any, *a: Any, **kw: Any) -> Any:
        mark("load0")
        try:
            return await orig_load(self, *a, **kw)
        finally:
            mark("load1")

    snapshotter.Snapshotter.load = load  # type: ignore[method-assign]

    import netledger.journal.snapshot_store as snapshot_store

    orig_body = snapshot_store.SnapshotStore.read

    async def read_body(self: Any, *a: Any, **kw: Any) -> Any:
        rec["marks"]["body0"] = now()  # (the last one read: the one loaded, or the last tried)
        try:
            return await orig_body(self, *a, **kw)
        finally:
            rec["marks"]["body1"] = now()

    snapshot_store.SnapshotStore.read = read_body  # type: ignore[method-assign]

    orig_fork = catchup.Reader.fork.__func__  # type: ignore[attr-defined]

    def fork(cls: Any, conn: Any) -> Any:
        mark("fork")
        return orig_fork(cls, conn)

    catchup.Reader.fork = classmethod(fork)  # type: ignore[assignment,method-assign]

    orig_read = catchup.Reader.read

    async def read(self: Any, *a: Any, **kw: Any) -> Any:
        mark("ask")
        return await orig_read(self, *a, **kw)

    catchup.Reader.read = read  # type: ignore[method-assign]

    orig_ask = getattr(catchup.Reader, "ask", None)
    if orig_ask is not None:  # a tree whose start asks the child ahead of the fold

        def ask(self: Any, *a: Any, **kw: Any) -> Any:
            mark("ask")
            return orig_ask(self, *a, **kw)

        catchup.Reader.ask = ask  # type: ignore[method-assign]

    orig_close = catchup.Reader.close

    async def close(self: Any) -> None:
        mark("close0")
        await orig_close(self)
        mark("close1")

    catchup.Reader.close = close  # type: ignore[method-assign]

    orig_frames = catchup._Frames.data_received

    def data_received(self: Any, data: bytes) -> None:
        mark("first_frame")
        # on the child's core (as it was when it wrote its latest frame) or the other one
        rec["same_cpu" if on_cpu() == child_figures(shared)["on_cpu"] else "other_cpu"] += 1
        t = time.thread_time()
        orig_frames(self, data)
        rec["frames_cpu"] += time.thread_time() - t
        rec["marks"]["last_frame"] = now()

    catchup._Frames.data_received = data_received  # type: ignore[method-assign]

    # The child's side: it is forked from this process, these patches and all; it writes its
    # figures into memory shared with this process (it is killed once it has sent the last
    # message, maybe before its "end" frame).
    shared = mmap.mmap(-1, _CHILD.size)

    def put(field: str, value: float) -> None:
        _CHILD.pack_into(shared, 0, *{**child_figures(shared), field: value}.values())

    orig_wait = catchup._wait_for_range

    def wait_for_range(cmd: int) -> Any:
        put("connected", now())
        got = orig_wait(cmd)
        put("asked", now())
        cpu, wait = task_sched()
        put("cpu_asked", cpu)
        put("wait_asked", wait)
        return got

    catchup._wait_for_range = wait_for_range

    orig_write = catchup._write_all

    def write_all(fd: int, data: bytes) -> None:
        if os.getpid() != parent:
            t = now()
            cpu, wait = task_sched()
            got = child_figures(shared)
            got.update(frame=t, cpu_frame=cpu, wait_frame=wait, on_cpu=on_cpu())
            if not got["first_frame"]:
                got["first_frame"] = t
            _CHILD.pack_into(shared, 0, *got.values())
        orig_write(fd, data)

    catchup._write_all = write_all

    orig_catch_up = CommandService._catch_up

    async def catch_up(self: Any, *a: Any, **kw: Any) -> None:
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        s0 = task_sched(tid=main_tid)
        c0 = time.process_time()
        sv0 = task_sched(server) if server else (0, 0)
        p0 = pressure_us()
        m0 = machine_ms()
        rec["marks"]["fold0"] = now()
        in_fold[0] = True
        try:
            await orig_catch_up(self, *a, **kw)
        finally:
            in_fold[0] = False
            rec["marks"]["fold1"] = now()
            p1 = pressure_us()
            m1 = machine_ms()
            s1 = task_sched(tid=main_tid)
            sv1 = task_sched(server) if server else (0, 0)
            ru1 = resource.getrusage(resource.RUSAGE_SELF)
            ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            rec.update(
                main_cpu=(s1[0] - s0[0]) / 1e9,
                main_wait=(s1[1] - s0[1]) / 1e9,
                server_cpu=(sv1[0] - sv0[0]) / 1e9,
                pressure=(p1 - p0) / 1e6,
                machine_busy=m1[0] - m0[0],
                steal=m1[1] - m0[1],
                main_all_cpu=(time.process_time() - c0),
                minflt=ru1.ru_minflt - ru0.ru_minflt,
                nivcsw=ru1.ru_nivcsw - ru0.ru_nivcsw,
                nvcsw=ru1.ru_nvcsw - ru0.ru_nvcsw,
                child_cpu_total=ch1.ru_utime + ch1.ru_stime - ch0.ru_utime - ch0.ru_stime,
                by_child=self.fold_report.by_child,
                child=child_figures(shared),
            )
            dump(out, rec)

    CommandService._catch_up = catch_up  # type: ignore[method-assign]

    orig_start = CommandService.start

    async def start(self: Any) -> None:
        mark("start0")
        await orig_start(self)
        rec["ready_seconds"] = self.ready_seconds
        dump(out, rec)

    CommandService.start = start  # type: ignore[method-assign]


def probe_main(argv: list[str]) -> None:
    """``fold_wall.py probe OUT <netledger arguments>``: the checkout's ``netledger``, probed."""
    _probe(argv[0])
    sys.argv = ["netledger", *argv[1:]]
    from netledger.cli import main

    main()


# --- the driver (this tree's venv) -------------------------------------------------------------

HERE = Path(__file__).resolve().parent
YOUNG = 100_000
_FOLD = re.compile(r"fold: (\d+) events in ([0-9.]+)s")
_SNAP = re.compile(r"snapshot at seq (\d+) loaded in ([0-9.]+)s")


#: a start (or raw read) during which the rest of the machine used less CPU than this (ms) is
#: "quiet": the three processes of a start's fold had the two cores to themselves
QUIET_MS = 30.0
OTHERS = "  of it others' (not the 3 above)"


async def prepare(d: Path, tail: int) -> tuple[Any, int, int]:
    """The stack on ``d``'s store (built there once): (stack, snapshot seq, last seq)."""
    from benchlib import Stack
    from history_gen import build_history
    from history_service import write_snapshot

    from netledger.journal.stream import last_seq

    st = Stack(d, projector=False)
    conn = await st.start()
    built = d / "built.json"
    got = load(built)
    if got is not None:
        if await last_seq(conn) != got["last"]:
            raise RuntimeError(f"{d}: the stream is not the one built ({got})")
        return st, got["snap"], got["last"]
    h = await build_history(conn, YOUNG, hosts=1000, networks=5000)
    snap = await write_snapshot(st, h)
    h = await h.extend(conn, tail)
    dump(built, {"snap": snap.seq, "last": h.last_seq})
    return st, snap.seq, h.last_seq


async def start(st: Any, python: str, out: Path, snap: int) -> dict[str, Any]:
    """One probed ``serve`` start from the snapshot: the probe's record, the service's figures."""
    err = tempfile.TemporaryFile()
    env = {**os.environ, "PROBE_SERVER_PID": str(st.server.proc.pid)}
    argv = [python, str(HERE / "fold_wall.py"), "probe", str(out), "--nats", st.url]
    argv += ["--log-level", "info", "serve", "--no-projector", "--snapshot-every", "0"]
    p = await asyncio.to_thread(
        subprocess.Popen, argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
        text=True, env=env,
    )  # fmt: skip
    st.service = p
    assert p.stdout is not None
    line = await asyncio.to_thread(p.stdout.readline)
    await st.stop_service()
    err.seek(0)
    logged = err.read().decode(errors="replace")
    fold, loaded = _FOLD.search(logged), _SNAP.search(logged)
    if "ready" not in line or not fold or not loaded or int(loaded.group(1)) != snap:
        raise RuntimeError(f"{python}: not a start from the snapshot at {snap}: {logged[-800:]}")
    rec: dict[str, Any] = load(out)
    rec["reported"] = float(fold.group(2))
    rec["loaded"] = float(loaded.group(2))
    return rec


def figures(r: dict[str, Any]) -> dict[str, float]:
    """One start's figures (ms, but counts)."""
    m, c = r["marks"], r["child"]
    wall = m["fold1"] - m["fold0"]
    gcs = r["gcs"]
    frames = r["same_cpu"] + r["other_cpu"]
    child_cpu = (c["cpu_frame"] - c["cpu_asked"]) / 1e9
    own = (r["main_all_cpu"] + child_cpu + r["server_cpu"]) * 1e3
    return {
        "ready (reported)": r["ready_seconds"] * 1e3,
        "start -> snapshot decoded": (m["load1"] - m["start0"]) * 1e3,
        "  of it: the body fetched": (m["body1"] - m["body0"]) * 1e3,
        "  of it: the body decoded": (m["load1"] - m["body1"]) * 1e3,
        "snapshot decoded -> ready": r["ready_seconds"] * 1e3 - (m["load1"] - m["start0"]) * 1e3,
        "fold (reported)": r["reported"] * 1e3,
        "fold (probe)": wall * 1e3,
        "main: CPU": r["main_cpu"] * 1e3,
        "main: run-queue wait": r["main_wait"] * 1e3,
        "main: asleep": (wall - r["main_cpu"] - r["main_wait"]) * 1e3,
        "main: CPU in frames (unpickle+fold)": r["frames_cpu"] * 1e3,
        "main: collections (n)": len(gcs),
        "main: collections CPU": sum(g[2] for g in gcs) * 1e3,
        "main: minor faults (n)": r["minflt"],
        "main: involuntary switches (n)": r["nivcsw"],
        "fold start -> ask": (m["ask"] - m["fold0"]) * 1e3,
        "ask -> first frame": (m["first_frame"] - m["ask"]) * 1e3,
        "first -> last frame": (m["last_frame"] - m["first_frame"]) * 1e3,
        "last frame -> fold end": (m["fold1"] - m["last_frame"]) * 1e3,
        "  of it: child's close": (m["close1"] - m["close0"]) * 1e3,
        "child: asked -> last frame": (c["frame"] - c["asked"]) * 1e3,
        "child: CPU (asked -> last frame)": (c["cpu_frame"] - c["cpu_asked"]) / 1e6,
        "child: run-queue wait": (c["wait_frame"] - c["wait_asked"]) / 1e6,
        "child: CPU, its whole life": r["child_cpu_total"] * 1e3,
        "child: connected before the ask": (c["asked"] - c["connected"]) * 1e3,
        "child: last frame -> parent's": (m["last_frame"] - c["frame"]) * 1e3,
        "parent: CPU, all threads": r["main_all_cpu"] * 1e3,
        "frames read on the child's core (%)": 100 * r["same_cpu"] / frames if frames else 0.0,
        "nats-server CPU": r["server_cpu"] * 1e3,
        "machine: CPU busy (10 ms ticks)": r["machine_busy"],
        OTHERS: r["machine_busy"] - own,
        "machine: CPU stolen (10 ms ticks)": r["steal"],
        "machine CPU pressure (some)": r["pressure"] / wall * 100 if wall else 0.0,
        "snapshot load (reported)": r["loaded"] * 1e3,
    }


def table(runs: dict[str, list[dict[str, float]]], raws: list[tuple[float, float]]) -> str:
    """Median [min-max] of every figure per checkout, over every start and over the quiet
    ones; ``raws``: (seconds, others' CPU ms) of each raw read."""
    labels = list(runs)
    out = []
    for title, keep in (("every start", lambda f: True), ("quiet starts", quiet)):
        chosen = {x: [f for f in runs[x] if keep(f)] for x in labels}
        if not all(chosen.values()):
            out.append(f"\n{title}: none")
            continue
        out.append(f"\n{title} (n = " + " / ".join(str(len(v)) for v in chosen.values()) + ")")
        out.append(f"{'ms (median [min-max])':38}" + "".join(f"{x:>24}" for x in labels))
        for key in chosen[labels[0]][0]:
            cells = []
            for label in labels:
                xs = sorted(f[key] for f in chosen[label])
                cells.append(f"{statistics.median(xs):8.1f} [{xs[0]:.1f}-{xs[-1]:.1f}]")
            out.append(f"{key:38}" + "".join(f"{c:>24}" for c in cells))
        secs = sorted(s for s, others in raws if title == "every start" or others < QUIET_MS)
        if not secs:
            continue
        raw = statistics.median(secs) * 1e3
        out.append(
            f"{'raw read of the tail (n = ' + str(len(secs)) + ')':38}"
            f"{raw:8.1f} [{secs[0] * 1e3:.1f}-{secs[-1] * 1e3:.1f}]"
        )
        for label in labels:
            fold = statistics.median(f["fold (reported)"] for f in chosen[label])
            out.append(f"ratio raw / fold, {label}: {raw / fold:.2f}")
    return "\n".join(out)


def quiet(f: dict[str, float]) -> bool:
    return f[OTHERS] < QUIET_MS


async def raw_tail(st: Any, start: int, count: int) -> tuple[float, float]:
    """The raw read of the tail: (seconds, the CPU the rest of the machine used meanwhile, ms:
    all but this process and nats-server)."""
    from history_raw import raw_read

    server = st.server.proc.pid
    m0, c0, s0 = machine_ms(), time.process_time(), task_sched(server)
    secs = await raw_read(st.conn, start, count)
    m1, c1, s1 = machine_ms(), time.process_time(), task_sched(server)
    return secs, m1[0] - m0[0] - (c1 - c0) * 1e3 - (s1[0] - s0[0]) / 1e6


async def drive(args: argparse.Namespace) -> None:
    from netledger.journal.stream import last_seq

    d = Path(args.keep or tempfile.mkdtemp(prefix="nl-fold-wall-"))
    os.makedirs(d, exist_ok=True)
    st, snap, last = await prepare(d, args.tail)
    new = str(Path(args.new) / ".venv/bin/python") if args.new else sys.executable
    pythons = {"old": str(Path(args.old) / ".venv/bin/python"), "new": new}
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in pythons}
    raws: list[tuple[float, float]] = []
    records: list[dict[str, Any]] = []
    try:
        for i in range(args.rounds):
            raws.append(await raw_tail(st, snap + 1, last - snap))
            order = list(pythons) if i % 2 == 0 else list(reversed(pythons))
            for label in order:
                rec = await start(st, pythons[label], d / f"probe-{i}-{label}.json", snap)
                rec["label"], rec["round"] = label, i
                records.append(rec)
                runs[label].append(figures(rec))
                f = runs[label][-1]
                print(f"round {i} {label}: fold {f['fold (reported)']:.1f} ms, main CPU"
                      f" {f['main: CPU']:.1f}, child CPU {f['child: CPU (asked -> last frame)']:.1f},"
                      f" pressure {f['machine CPU pressure (some)']:.0f} %", flush=True)  # fmt: skip
        if await last_seq(st.conn) != last:
            raise RuntimeError("a start appended to the log: the runs are not alike")
    finally:
        await st.close()
        dump(d / "records.json", {"starts": records, "raws": raws})
    print(f"\n{last - snap:,} events after the snapshot at seq {snap:,}; {args.rounds} rounds")
    print(table(runs, raws))
    print(paired(runs))


def paired(runs: dict[str, list[dict[str, float]]]) -> str:
    """The fold and the parent's CPU, new - old within each round (a drift of the machine's
    load hits both sides of a round alike)."""
    out = []
    for key in (
        "ready (reported)",
        "snapshot decoded -> ready",
        "fold (reported)",
        "main: CPU",
        "child: CPU (asked -> last frame)",
    ):
        d = sorted(n[key] - o[key] for o, n in zip(runs["old"], runs["new"], strict=True))
        slower = sum(1 for x in d if x > 0)
        out.append(
            f"{key}, new - old in the same round: median {statistics.median(d):+.1f} ms,"
            f" quartiles {d[len(d) // 4]:+.1f} / {d[3 * len(d) // 4]:+.1f}; new higher in"
            f" {slower} of {len(d)}"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--old", required=True, help="the other checkout (with its own .venv)")
    ap.add_argument("--new", help="another checkout in place of this tree (e.g. a bisect step)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--tail", type=int, default=10_000)
    ap.add_argument("--keep", help="a folder for the nats-server store, kept for the next run")
    sys.path.insert(0, str(HERE))
    asyncio.run(drive(ap.parse_args()))


if __name__ == "__main__":
    if sys.argv[1:2] == ["probe"]:
        probe_main(sys.argv[2:])
    else:
        main()
