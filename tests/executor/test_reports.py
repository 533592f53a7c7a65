"""What a pass reports goes out after it (executor/reports.py): a report that fails for any
reason leaves the record in memory ahead of the log, and no view snapshot is written of it."""

from __future__ import annotations

from pathlib import Path

from netledger.events.errors import LogStorageFull
from netledger.executor.daemon import Executor
from netledger.executor.desired import HostConfig
from netledger.executor.options import Options
from netledger.journal.stream import Connection


def _executor(conn: Connection, tmp_path: Path) -> Executor:
    cfg = HostConfig(host="rp", physical_interface="eth1", network_host=True, dhcp=False)
    return Executor(conn, cfg, Options(snapshot_path=str(tmp_path / "view.snapshot")))


async def test_a_report_failing_for_any_reason_stops_view_snapshots(
    conn: Connection, tmp_path: Path
) -> None:
    ex = _executor(conn, tmp_path)

    async def ok() -> None:
        return None

    async def broken() -> None:
        raise ConnectionResetError("the connection went away mid-append")

    ex._later(ok)
    await ex.flush()
    assert not ex._record_diverged and ex._jobs == 0
    ex._later(broken)
    ex._later(ok)  # the outbox goes on with the next report
    await ex.flush()
    assert ex._record_diverged and ex._jobs == 0
    await ex.close()


async def test_a_log_refusal_stops_them_too(conn: Connection, tmp_path: Path) -> None:
    ex = _executor(conn, tmp_path)

    async def refused() -> None:
        err = LogStorageFull("the stream is full")
        ex._log_refused(err)
        raise err

    ex._later(refused)
    await ex.flush()
    assert ex._record_diverged and ex.log_trouble is not None
    assert ex.log_trouble["code"] == "log_storage_full"
    await ex.close()
