"""``netledger status``'s text: the projectors table says whether each projector is live (its
``live`` column: the stamp's verdict and age), and a projector that is not live is not marked
``ok`` at lag 0 — it was, and showed only under problems. Real ``projector run`` daemons (one
following, one killed, one stopped), a ``--once`` file and a file nothing stamped, read by the
real ``netledger status`` command."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from netledger.journal.stream import Connection
from netledger.ops.status import StatusResponder, projector_status
from netledger.projector.runner import project_until
from netledger.service.service import CommandService
from tests.ops.test_projector_liveness import NETLEDGER, daemon, some_events, until


def _row(text: str, db: Path) -> list[str]:
    """The projectors table's row of ``db``, cell by cell (rich's box: │ between cells)."""
    [line] = [x for x in text.splitlines() if x.startswith(f"│ {db} ")]
    return [c.strip() for c in line.split("│")[1:-1]]


async def test_the_projectors_table_has_a_live_column(
    conn: Connection, service: CommandService, tmp_path: Path, nats_url: str
) -> None:
    last = await some_events(conn)
    live, dead, stopped = (tmp_path / f"{n}.db" for n in ("live", "dead", "stopped"))
    once, bare = tmp_path / "once.db", tmp_path / "bare.db"
    procs = [await daemon(nats_url, db) for db in (live, dead, stopped)]
    try:
        for db in (live, dead, stopped):
            await until(
                f"{db.name} is live",
                lambda db=db: projector_status(db, last, 0),  # type: ignore[misc]
                lambda p: p["live"] is True,
            )
        procs[1].kill()
        await procs[1].wait()
        procs[2].terminate()
        await procs[2].communicate()
        await until(
            "the killed daemon is not live",
            lambda: projector_status(dead, last, 0),
            lambda p: p["live"] is False,
        )
        r = await asyncio.to_thread(
            subprocess.run,
            [NETLEDGER, "--nats", nats_url, "projector", "run", "--once", "--db", str(once)],
            capture_output=True,
        )
        assert r.returncode == 0, r.stderr.decode()
        await project_until(conn, bare)

        async with StatusResponder.for_service(conn, service):
            await service.follower.wait_for(last)
            proc = await asyncio.create_subprocess_exec(
                NETLEDGER, "--nats", nats_url, "status", "--wait", "0.3",
                *(a for db in (live, dead, stopped, once, bare) for a in ("--db", str(db))),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            out, err = await proc.communicate()
    finally:
        for p in procs:
            if p.returncode is None:
                p.terminate()
                await p.communicate()

    text = out.decode()
    assert proc.returncode == 1, err.decode()  # the killed and the stopped one: problems
    header = next(x for x in text.splitlines() if "last seq" in x and "rejected" in x)
    assert [c.strip() for c in header.split("┃")[1:-1]] == [
        "db", "last seq", "lag", "rejected", "live", ""
    ]  # fmt: skip
    rows = {db.name: _row(text, db) for db in (live, dead, stopped, once, bare)}
    for cells in rows.values():
        assert cells[1:4] == [str(last), "0", "0"], cells  # every one at lag 0
    assert rows["live.db"][4].startswith("yes, ") and rows["live.db"][4].endswith("s ago")
    assert rows["live.db"][5] == "ok"
    assert rows["dead.db"][4].startswith("no, ") and rows["dead.db"][5] == "not live"
    assert rows["stopped.db"][4].startswith("stopped, ")
    assert rows["stopped.db"][5] == "not live"
    assert rows["once.db"][4].startswith("once, ") and rows["once.db"][5] == "ok"
    assert rows["bare.db"][4:] == ["-", "ok"]
    # the problems say why, as before
    assert f"projector {dead} has not confirmed it has the whole stream" in text
    assert f"projector {stopped}: its daemon stopped" in text
