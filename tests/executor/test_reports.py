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


async def test_events_the_log_refused_are_appended_first_once_it_takes_writes(
    conn: Connection, tmp_path: Path
) -> None:
    """The record folds a pass's events at once; the log refusing them left it ahead of the
    log until a restart (the warning promised the next full pass would record them, and it
    could not: the record already held them). Now they are kept and appended, in order,
    before anything newer (found by review)."""
    from netledger.events.codec import decode
    from netledger.events.host_events import HostLinkCreated
    from netledger.journal.stream import last_seq
    from netledger.replay.reader import read_range

    ex = _executor(conn, tmp_path)
    real = ex._appender.append
    calls = 0

    async def refuse_once(*args: object, **kw: object) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise LogStorageFull("the stream is full")
        return await real(*args, **kw)  # type: ignore[arg-type]

    ex._appender.append = refuse_once  # type: ignore[method-assign]

    def link(name: str) -> HostLinkCreated:
        return HostLinkCreated(host="rp", name=name, kind="bridge", network_id="1", drift=False)

    first = ex._envelopes([link("br1"), link("br2")])
    before = await last_seq(conn)
    try:
        await ex._append(first)
    except LogStorageFull:
        pass
    else:
        raise AssertionError("the refusal was not raised")
    assert ex._unsent == first and await last_seq(conn) == before
    await ex._append(ex._envelopes([link("br3")]))
    assert ex._unsent == []
    stored = [m async for m in read_range(conn, before + 1, await last_seq(conn))]
    names = [decode(m.data).event.name for m in stored]  # type: ignore[attr-defined]
    assert names == ["br1", "br2", "br3"]
    await ex._append([])  # nothing left: nothing appended
    assert await last_seq(conn) == before + 3
    await ex.close()


async def test_a_refused_sighting_is_not_kept_for_later(conn: Connection, tmp_path: Path) -> None:
    """A sightings report the log refused is dropped (the reporter observes again), never
    appended later: stored under a later sequence, an old observation would pass for one made
    after what came in between — an allocation, for reclaim (found by review)."""
    from netledger.events.host_events import HostInstancesSeen, HostLinkCreated

    ex = _executor(conn, tmp_path)

    async def refuse(*args: object, **kw: object) -> int:
        raise LogStorageFull("the stream is full")

    ex._appender.append = refuse  # type: ignore[method-assign]
    seen = HostInstancesSeen(host="rp", macs=["02:00:00:00:00:01"], networks=["1"],
                             reason="change", leases=0)  # fmt: skip
    link = HostLinkCreated(host="rp", name="br1", kind="bridge", network_id="1", drift=False)
    envs = ex._envelopes([seen, link])
    try:
        await ex._append(envs)
    except LogStorageFull:
        pass
    assert [e.event for e in ex._unsent] == [link]
    await ex.close()
