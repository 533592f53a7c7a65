"""CPU per event of the command service's fold, without NATS: ``python bench/fold_cpu.py``.

What a service start pays for each message of the log's tail in its own process: the catch-up
child's frame unpickled (journal/catchup.py), ``CommandService._fold_raw`` — ``wire_of`` (no
envelope built), ``State.fold_wire``, the ``seen`` bookkeeping and ``snapshotter.since`` — with
the garbage collector's thresholds of the start's catch-up. The log is bench/history_gen.py's
cloud (1,000 hosts, 5,000 networks: its fill, ~136 k events, then churn), generated once and
kept in the system's temp folder. CPU time (``time.process_time``), the median of ``--repeats`` folds, each
in a fresh process (a fold from an empty state, as a start from sequence 1).

    python bench/fold_cpu.py                      # µs/event: total, fill, churn; by type
    python bench/fold_cpu.py --ab HEAD~3          # interleaved A/B: that commit vs this tree
    python bench/fold_cpu.py --profile            # cProfile of one fold (top 30, tottime)
    python bench/fold_cpu.py --tail 10000 --ab HEAD~1   # a start from a snapshot: its tail
                                                        # (by type: of the tail's events)

``--tail N`` measures what a start from a snapshot folds (bench/history_service.py's
``service_from_snapshot``): the fold of all but the last ``N`` events, written as a snapshot and
loaded (the cyclic GC frozen after it, as ``CommandService.start``), then the last ``N`` —
``prepare`` (what the fold builds before its first message, ms: the start overlaps it with the
child's consumer creation), ``first`` (the first message, ms) and ``tail`` (µs/event).

Issue 13 wants the fold at >= 0.6 of the raw read rate: <= ~7 µs/event here at a raw read of
~130-170 k events/s. The other process of the start, the catch-up child, pays ~10 µs of CPU a
message in nats-py (its reading, not measured here): on two cores shared with nats-server the
two together bound the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "events", "journal", "service", "projector", "executor", "replay", "ops")
#: The catch-up child's frames hold this many messages each (journal/catchup.py CHUNK)
CHUNK = 512


def history(events: int, seed: int) -> tuple[list[tuple[int, str, bytes]], int]:
    """The generated log's messages (seq, subject, data) and where its churn begins."""
    sys.path.insert(0, str(REPO / "bench"))
    from history_gen import generator_version

    name = f"netledger-fold-cpu-{events}-{seed}-{generator_version()}.pickle"
    path = Path(tempfile.gettempdir()) / name
    if path.exists():
        with path.open("rb") as f:
            got: tuple[list[tuple[int, str, bytes]], int] = pickle.load(f)
            return got
    from history_gen import Cloud

    out: list[tuple[int, str, bytes]] = []

    def sink(batch: list[tuple[str, bytes, str]]) -> None:
        # (the sequences counted before the batch: a generator over ``len(out)`` would count
        # the batch's own messages too, leaving gaps and sequences a subject had already seen)
        first = len(out) + 1
        out.extend((first + i, s, d) for i, (s, d, _) in enumerate(batch))

    cloud = Cloud(seed=seed)
    cloud.sink = sink
    asyncio.run(cloud.build(None, 0))
    fill = len(out)
    asyncio.run(cloud.extend(None, events - fill))
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        pickle.dump((out, fill), f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)
    return out, fill


def service() -> Any:
    """A command service that is never started: only its fold is used."""
    from netledger.service.service import CommandService
    from netledger.service.snapshotter import SnapshotPolicy

    return CommandService(
        None,  # type: ignore[arg-type]
        snapshots=SnapshotPolicy(),
        reap_interval=None,
        child_catch_up=None,
    )


def frames(messages: list[tuple[int, str, bytes]]) -> list[bytes]:
    """The child's frames of ``messages`` as the measured tree's child writes them (its
    ``frame``), without their length."""
    from netledger.journal.catchup import frame

    return [frame(("msgs", messages[i : i + CHUNK]))[4:] for i in range(0, len(messages), CHUNK)]


def fold(messages: list[tuple[int, str, bytes]], fill: int) -> dict[str, float]:
    """One fold of every message, as the start's catch-up folds it: CPU µs per event."""
    from netledger.service.service import CATCH_UP_GC

    svc = service()
    fold_raw = svc._fold_raw
    head, tail = frames(messages[:fill]), frames(messages[fill:])
    threshold = gc.get_threshold()
    gc.collect()
    gc.set_threshold(max(threshold[0], CATCH_UP_GC[0]), *CATCH_UP_GC[1:])
    try:
        times = []
        for part in (head, tail):
            t = time.process_time()
            for body in part:
                _, msgs = pickle.loads(body)
                for seq, subject, data in msgs:
                    fold_raw(seq, subject, data)
            times.append(time.process_time() - t)
    finally:
        gc.set_threshold(*threshold)
    if svc.rejected_total:
        raise AssertionError(f"{svc.rejected_total} rejected: {list(svc.rejected)[:3]}")
    n, c = len(messages), len(messages) - fill
    return {
        "total": 1e6 * sum(times) / n,
        "fill": 1e6 * times[0] / fill,
        "churn": 1e6 * times[1] / c if c else 0.0,
    }


def snapshot_of(messages: list[tuple[int, str, bytes]], n: int, args: argparse.Namespace) -> Path:
    """The snapshot body of the fold of all but the last ``n`` messages (made once, by this
    tree, and kept in the system's temp folder: each measuring process only loads it, as a
    start does — nothing of the fold before it is warm there)."""
    from history_gen import generator_version

    from netledger.events import snapshot

    path = Path(tempfile.gettempdir()) / (
        f"netledger-fold-cpu-{args.events}-{args.seed}-{generator_version()}-tail{n}"
        f"-f{snapshot.SNAPSHOT_FORMAT}-v{snapshot.FOLD_VERSION}.snapshot"
    )
    if not path.exists():
        svc = service()
        gc.disable()
        for seq, subject, data in messages[:-n]:
            svc._fold_raw(seq, subject, data)
        body = snapshot.dumps(svc.state, svc.seen, seq=messages[-n - 1][0], stream="S", created="c")
        gc.enable()
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(body)
        tmp.replace(path)
    return path


def tail(messages: list[tuple[int, str, bytes]], n: int, path: Path) -> dict[str, float]:
    """A start from the snapshot at ``path`` (:func:`snapshot_of`), then the fold of the last
    ``n`` messages: CPU ms of ``prepare`` and of the first message, µs per event of the rest."""
    from netledger.events import snapshot
    from netledger.service import service as module

    svc = service()
    rest = frames(messages[-n:])
    body = path.read_bytes()
    snap = snapshot.loads(body, sha256=snapshot.digest(body), stream="S", created="c")
    svc.state, svc.seen = snap.state, snap.seen
    gc.freeze()  # (CommandService.start)
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], module.CATCH_UP_GC[0]), *module.CATCH_UP_GC[1:])
    try:
        t = time.process_time()
        prepare = getattr(module, "_prepare_fold_raw", None)  # (a tree from before it)
        if prepare is not None:
            prepare()
        t1 = t2 = time.process_time()
        fold_raw = svc._fold_raw
        for i, frame in enumerate(rest):
            _, msgs = pickle.loads(frame)
            for seq, subject, data in msgs:
                fold_raw(seq, subject, data)
                if i == 0 and seq == msgs[0][0]:
                    t2 = time.process_time()
        t3 = time.process_time()
    finally:
        gc.set_threshold(*threshold)
    if svc.rejected_total:
        raise AssertionError(f"{svc.rejected_total} rejected: {list(svc.rejected)[:3]}")
    return {
        "tail": 1e6 * (t3 - t2) / (n - 1),
        "prepare": 1e3 * (t1 - t),
        "first": 1e3 * (t2 - t1),
    }


def by_type(
    messages: list[tuple[int, str, bytes]], n: int = 0, path: Path | None = None
) -> dict[str, tuple[int, float]]:
    """Wall µs per event of each type (one timer pair per event, its own cost subtracted): of
    the whole log's fold, or (``n``) of the last ``n`` events folded after the snapshot at
    ``path`` (:func:`snapshot_of`), as :func:`tail` folds them."""
    from netledger.events import snapshot
    from netledger.events.wire_fast import decode_fast
    from netledger.service import service as module
    from netledger.service.service import CATCH_UP_GC

    svc = service()
    if n:
        assert path is not None
        body = path.read_bytes()
        snap = snapshot.loads(body, sha256=snapshot.digest(body), stream="S", created="c")
        svc.state, svc.seen = snap.state, snap.seen
        messages = messages[-n:]
        gc.freeze()  # (CommandService.start)
        prepare = getattr(module, "_prepare_fold_raw", None)
        if prepare is not None:
            prepare()
    fold_raw = svc._fold_raw
    clock = time.perf_counter_ns
    empty = []
    for _ in range(100_000):
        t = clock()
        empty.append(clock() - t)
    overhead = statistics.median(empty)
    names = [decode_fast(d).type for _, _, d in messages]
    spent: dict[str, list[int]] = defaultdict(list)
    gc.collect()
    gc.set_threshold(CATCH_UP_GC[0], *CATCH_UP_GC[1:])
    for (seq, subject, data), name in zip(messages, names, strict=True):
        t = clock()
        fold_raw(seq, subject, data)
        spent[name].append(clock() - t - overhead)
    return {k: (len(v), sum(v) / len(v) / 1e3) for k, v in spent.items()}


def tree(rev: str) -> Path:
    """An importable ``netledger`` of commit ``rev`` (a git worktree plus a tree of symlinks,
    as .ci/typecheck builds it), ahead of the editable install on ``sys.path``."""
    root = Path(tempfile.gettempdir()) / "netledger-fold-cpu-trees"
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", rev], check=True, capture_output=True, text=True
    ).stdout.strip()
    work = root / f"wt-{sha[:12]}"
    if not work.exists():
        root.mkdir(exist_ok=True)
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(work), sha],
            check=True,
            capture_output=True,
        )
    return links(work, root / f"links-{sha[:12]}")


def links(work: Path, at: Path) -> Path:
    pkg = at / "netledger"
    if not pkg.exists():
        pkg.mkdir(parents=True)
        for f in (work / "netledger").iterdir():
            (pkg / f.name).symlink_to(f)
        for p in PACKAGES:
            (pkg / p).symlink_to(work / p)
    return at


def child(args: argparse.Namespace, path: Path | None) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", "--events", str(args.events)]
    cmd += ["--seed", str(args.seed)]
    if args.tail:
        cmd += ["--tail", str(args.tail)]
    if path is not None:
        cmd += ["--tree", str(path)]
    # One hash seed for every run: the dicts of the fold then collide alike in each.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    got: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return got


def report(name: str, runs: list[dict[str, float]]) -> None:
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    low = {k: min(r[k] for r in runs) for k in runs[0]}
    if "tail" in med:
        print(
            f"{name:>12}: median {med['tail']:6.2f} µs/event of the tail, prepare"
            f" {med['prepare']:.1f} ms, first message {med['first']:.1f} ms; min {low['tail']:.2f}"
            f" µs/event, {low['prepare'] + low['first']:.1f} ms before the second message"
        )
        return
    print(
        f"{name:>12}: median {med['total']:6.2f} µs/event (fill {med['fill']:.2f}, churn"
        f" {med['churn']:.2f}); min {low['total']:.2f} (fill {low['fill']:.2f}, churn"
        f" {low['churn']:.2f})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ab", metavar="REV", help="compare with this commit, interleaved")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--no-types", action="store_true", help="skip the by-type table")
    ap.add_argument("--tail", type=int, default=0, help="a start from a snapshot + this tail")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.tree:
        sys.path.insert(0, args.tree)
    messages, fill = history(args.events, args.seed)
    if args.child:
        if args.tail:
            print(json.dumps(tail(messages, args.tail, snapshot_of(messages, args.tail, args))))
        else:
            print(json.dumps(fold(messages, fill)))
        return
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.runcall(fold, messages, fill)
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        return
    print(f"{len(messages):,} events ({fill:,} fill, {len(messages) - fill:,} churn), CPU time")
    if args.tail:
        snapshot_of(messages, args.tail, args)  # made once, by this tree
    name = hashlib.sha256(str(REPO).encode()).hexdigest()[:12]
    here = links(REPO, Path(tempfile.gettempdir()) / "netledger-fold-cpu-trees" / f"here-{name}")
    base = tree(args.ab) if args.ab else None
    runs: dict[str, list[dict[str, float]]] = {"this tree": [], args.ab or "": []}
    for _ in range(args.repeats):
        if base is not None:
            runs[args.ab].append(child(args, base))
        runs["this tree"].append(child(args, here))
    if base is not None:
        report(args.ab, runs[args.ab])
    report("this tree", runs["this tree"])
    if not args.no_types:
        print(f"\n{'type':<26}{'events':>9}{'µs/event':>10}{'share':>8}")
        path = snapshot_of(messages, args.tail, args) if args.tail else None
        types = by_type(messages, args.tail, path)
        total = sum(n * us for n, us in types.values())
        for name, (n, us) in sorted(types.items(), key=lambda kv: -kv[1][0] * kv[1][1]):
            print(f"{name:<26}{n:>9,}{us:>10.2f}{n * us / total:>8.1%}")


if __name__ == "__main__":
    main()
