"""``netledger status`` tells a dead projector from an idle one (issue 13/ops).

In a quiet cloud the stream does not move: a projector's lag stays 0 whether it runs or died an
hour ago. The daemon (``projector run``) stamps its file every ``--live-period`` once it has all
the stream holds (projector/liveness.py); ``status`` calls it not live after 3 periods without
a stamp, at once when it stopped, and expects nothing of a file ``--once`` filled. Real
nats-server, real ``projector run`` processes, real SQLite files.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from netledger.journal.stream import Connection, last_seq
from netledger.ops.status import StatusResponder, gather, projector_status
from netledger.projector.liveness import (
    DEAD_AFTER_PERIODS,
    FOLLOW,
    ONCE,
    STOPPED,
    Stamp,
    is_live,
    read_stamp,
    write_stamp,
)
from netledger.projector.runner import project_until
from netledger.service.client import Client
from netledger.service.service import CommandService

NETLEDGER = shutil.which("netledger", path=os.path.dirname(sys.executable)) or "netledger"
PERIOD = 0.5
#: a guard against a hang only: every wait below ends when what it waits for happens
HANG_S = 60.0


async def until(what: str, check: Callable[[], dict[str, Any]], ok: Callable[[dict], bool]) -> Any:
    end = time.monotonic() + HANG_S
    while True:
        got = check()
        if ok(got):
            return got
        assert time.monotonic() < end, f"never happened: {what}; last seen {got}"
        await asyncio.sleep(0.05)


async def some_events(conn: Connection) -> int:
    c = Client(conn)
    [net] = await c.create_networks(label="n", cidr="10.3.0.0/24", mode="flat", bridge="br3")
    for i in range(3):
        await c.allocate_fixed_ip(f"i-{i}", network_id=net["id"], host="h1")
    return await last_seq(conn)


async def daemon(nats_url: str, db: Path) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        NETLEDGER, "--nats", nats_url, "projector", "run", "--db", str(db),
        "--live-period", str(PERIOD), "--notify-ready",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await proc.stdout.readline()
    assert json.loads(line)["ready"], line
    return proc


async def status_cli(nats_url: str, db: Path) -> tuple[int, dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(
        NETLEDGER, "--nats", nats_url, "status", "--json", "--db", str(db), "--wait", "0.3",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None, err.decode()
    return proc.returncode, json.loads(out)


def children(pid: int) -> list[int]:
    """The processes ``pid`` forked (a projector's: its writer)."""
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def test_a_killed_projector_is_not_live_although_its_lag_is_0(
    conn: Connection, service: CommandService, tmp_path: Path, nats_url: str
) -> None:
    last = await some_events(conn)
    db = tmp_path / "p.db"
    proc = await daemon(nats_url, db)
    try:
        live = await until(
            "the daemon is live",
            lambda: projector_status(db, last, 0),
            lambda p: p["live"] is True,
        )
        assert (live["lag"], live["mode"], live["pid"]) == (0, FOLLOW, proc.pid)
        assert live["period_s"] == PERIOD and live["age_s"] <= DEAD_AFTER_PERIODS * PERIOD

        # Idle, it goes on stamping; the log gains nothing meanwhile.
        await until(
            "a later stamp",
            lambda: projector_status(db, last, 0),
            lambda p: p["stamped_at"] != live["stamped_at"],
        )
        assert await last_seq(conn) == last
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()  # SIGKILL: its writers die with it (PR_SET_PDEATHSIG)

    dead = await until(
        "the killed daemon is not live",
        lambda: projector_status(db, last, 0),
        lambda p: p["live"] is False,
    )
    assert (dead["lag"], dead["lagging"], dead["mode"]) == (0, False, FOLLOW)
    assert dead["age_s"] > DEAD_AFTER_PERIODS * PERIOD

    async with StatusResponder.for_service(conn, service):
        await service.follower.wait_for(last)
        st = await gather(conn, [db], max_lag=0, wait=0.3)
        code, cli = await status_cli(nats_url, db)
    assert not st["healthy"]
    [problem] = st["problems"]
    assert problem.startswith(f"projector {db} has not confirmed it has the whole stream for ")
    assert f"(pid {proc.pid})" in problem
    assert code == 1
    [p] = cli["projectors"]
    assert (p["lag"], p["live"], p["mode"]) == (0, False, FOLLOW)
    assert any(x.startswith(f"projector {db} has not confirmed") for x in cli["problems"])


async def test_a_stopped_projector_says_so_and_once_expects_nothing(
    conn: Connection, service: CommandService, tmp_path: Path, nats_url: str
) -> None:
    """A daemon stopped (SIGTERM: its runner closes) says so at once; a ``--once`` run after
    it leaves a file nobody is expected to follow — ``status`` judges it by its lag alone, as
    before the stamps. So does a file ``--once`` alone ever filled, and one a library call
    filled (no stamp at all)."""
    last = await some_events(conn)
    db = tmp_path / "p.db"
    proc = await daemon(nats_url, db)
    try:
        await until(
            "the daemon is live",
            lambda: projector_status(db, last, 0),
            lambda p: p["live"] is True,
        )
    finally:
        proc.terminate()
        _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    stopped = projector_status(db, last, 0)
    assert (stopped["live"], stopped["mode"], stopped["lag"]) == (False, STOPPED, 0)

    once_only = tmp_path / "once.db"
    library = tmp_path / "library.db"
    await project_until(conn, library)
    for path in (db, once_only):
        r = await asyncio.to_thread(
            subprocess.run,
            [NETLEDGER, "--nats", nats_url, "projector", "run", "--once", "--db", str(path)],
            capture_output=True,
        )
        assert r.returncode == 0, r.stderr.decode()

    async with StatusResponder.for_service(conn, service):
        await service.follower.wait_for(last)
        st = await gather(conn, [db, once_only, library], max_lag=0, wait=0.3)
    assert st["healthy"], st["problems"]
    after_stop, once, lib = st["projectors"]
    for p in (after_stop, once):
        assert (p["live"], p["mode"], p["lag"]) == (None, ONCE, 0), p
        assert p["age_s"] is not None and p["stamped_at"] is not None
    assert (lib["live"], lib["mode"], lib["stamped_at"], lib["lag"]) == (None, None, None, 0)

    # A daemon again on the file: live again, the --once stamp replaced.
    proc = await daemon(nats_url, db)
    try:
        again = await until(
            "the new daemon is live",
            lambda: projector_status(db, last, 0),
            lambda p: p["live"] is True,
        )
        assert again["mode"] == FOLLOW and again["pid"] == proc.pid
    finally:
        proc.terminate()
        await proc.communicate()


async def test_a_hung_projector_is_not_live_and_live_again_once_it_goes_on(
    conn: Connection, service: CommandService, tmp_path: Path, nats_url: str
) -> None:
    """Its writer stopped (SIGSTOP): the process runs, the one event appended meanwhile is never
    committed, so no stamp confirms the stream's end — not live at a lag of 1, far below
    --max-lag. Let go (SIGCONT), it commits and stamps again."""
    last = await some_events(conn)
    db = tmp_path / "p.db"
    proc = await daemon(nats_url, db)
    writers: list[int] = []
    try:
        await until(
            "the daemon is live",
            lambda: projector_status(db, last, 0),
            lambda p: p["live"] is True,
        )
        writers = children(proc.pid)
        assert writers, "the daemon has no writer process"
        for pid in writers:
            os.kill(pid, signal.SIGSTOP)
        c = Client(conn)
        await c.create_networks(label="m", cidr="10.4.0.0/24", mode="flat", bridge="br4")
        now = await last_seq(conn)
        hung = await until(
            "the hung daemon is not live",
            lambda: projector_status(db, now, 100),
            lambda p: p["live"] is False,
        )
        assert (hung["lag"], hung["lagging"], hung["mode"]) == (1, False, FOLLOW)
        async with StatusResponder.for_service(conn, service):
            await service.follower.wait_for(now)
            st = await gather(conn, [db], wait=0.3)
        [problem] = st["problems"]
        assert problem.startswith(f"projector {db} has not confirmed it has the whole stream")
        assert problem.endswith(f"or still catching up (pid {proc.pid})")

        for pid in writers:
            os.kill(pid, signal.SIGCONT)
        writers = []
        # (A stamp written as it is let go may confirm the end its period asked for before the
        # one event, still uncommitted: live at a lag of 1 for a moment — seen once in a loaded
        # run. Both come: its commit, then a stamp of the end with it.)
        again = await until(
            "the daemon goes on and is live again, the event committed",
            lambda: projector_status(db, now, 0),
            lambda p: p["live"] is True and p["lag"] == 0,
        )
        assert again["lag"] == 0 and again["live"] is True
    finally:
        for pid in writers:
            os.kill(pid, signal.SIGCONT)
        if proc.returncode is None:
            proc.terminate()
        await proc.communicate()


def test_the_stamp_is_judged_by_mode_and_age(tmp_path: Path) -> None:
    assert is_live(None, 0.0) is None
    assert is_live(Stamp(ONCE, 0.0, 5), 1e9) is None
    follow = Stamp(FOLLOW, 0.0, 5, period_s=10.0)
    assert is_live(follow, 30.0) is True and is_live(follow, 30.1) is False
    assert is_live(Stamp(STOPPED, 0.0, 5, period_s=10.0), 0.0) is False

    db = tmp_path / "p.db"
    write_stamp(db, follow)
    write_stamp(db, Stamp(FOLLOW, 1.0, 6, period_s=10.0, pid=42))  # rewrites the one row
    conn = sqlite3.connect(db)
    try:
        assert read_stamp(conn) == Stamp(FOLLOW, 1.0, 6, period_s=10.0, pid=42)
        assert conn.execute("SELECT count(*) FROM projector_liveness").fetchone() == (1,)
        # a row another version (or a hand) wrote wrong: unknown, never a failure of status
        conn.execute("UPDATE projector_liveness SET at = 'soon'")
        conn.commit()
        assert read_stamp(conn) is None
    finally:
        conn.close()
