"""A long catch-up defers the secondary indexes (``projector/bulk.py``: the events table's and the
domain tables') and the writer's row cache.

* The indexes the catch-up drops and builds are exactly the ones migrations create.
* A catch-up with the indexes off ends with the same rows and the same indexes as one with them
  on, however it is cut into batches.
* A writer that dies with the indexes off leaves a consistent projection; the next writer builds
  them, or carries on without them while it is again far behind.
* The projector process does the same against a real stream, and a stop half-way builds them.
* The row cache never holds what is not committed, and forgets everything past its limit.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netledger.events.codec import encode
from netledger.journal.stream import Connection
from netledger.projector import bulk
from netledger.projector.compare import dump
from netledger.projector.rowcache import CACHE_ROWS, RowCache
from netledger.projector.runner import Projector, project_until
from netledger.projector.schema import DEFERRED_INDEXES, open_db
from netledger.projector.store import Batch, Plan, Raw, Writer
from netledger.projector.tables import FIXED_IPS, STATE_TABLES
from tests.projector.stream_helpers import publish_event
from tests.projector.test_projector_props import _run_commands
from tests.projector.test_projector_unit import (
    _memory_rows,
    _normalise,
    _raws,
    _sample_log,
    alloc,
    net,
)


def _index_sql(path: Path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            " AND tbl_name != '_sqlite_migrations'"
        ).fetchall()
    finally:
        conn.close()
    return dict(rows)


def test_the_deferred_indexes_are_those_the_migrations_create(tmp_path: Path) -> None:
    open_db(tmp_path / "p.db").conn.close()
    assert _index_sql(tmp_path / "p.db") == DEFERRED_INDEXES


def test_when_deferring_pays() -> None:
    assert bulk.worth_it(0, bulk.BULK_MIN)
    assert not bulk.worth_it(0, bulk.BULK_MIN - 1)
    # far behind but a small part of what is there already: building would sort it all
    assert not bulk.worth_it(1_000_000, 100_000)
    assert bulk.worth_it(1_000_000, 500_000)


@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_a_catch_up_without_indexes_ends_as_one_with_them(tmp_path: Path, batch: int) -> None:
    log = _sample_log()
    raws = _raws(log)
    w = Writer(tmp_path / "p.db")
    try:
        w.prepare(raws[-1].seq, bulk_min=1)
        assert w.bulk_until == raws[-1].seq
        assert not bulk.present(w.conn)
        for i in range(0, len(raws), batch):
            w.apply(raws[i : i + batch])
        # built by the commit that reached the stream's end as of the start
        assert w.bulk_until is None
    finally:
        w.close()
    assert _index_sql(tmp_path / "p.db") == DEFERRED_INDEXES
    assert _normalise(dump(tmp_path / "p.db")) == _normalise(_memory_rows(log))


def test_with_the_indexes_deferred_every_lookup_is_by_primary_key(tmp_path: Path) -> None:
    # Deferring the domain tables' indexes is only cheap if the projector never reads through
    # them: a lookup by another column would scan the whole table for every event.
    raws = _raws(_sample_log())
    w = Writer(tmp_path / "p.db")
    # As over a file that held rows already: a new file's tables are complete in the cache,
    # and a row it lacks is not looked for at all (test_a_new_file_is_not_read_for_absent_rows).
    w.cache.complete.clear()
    ran: set[str] = set()
    w.conn.set_trace_callback(ran.add)
    try:
        w.prepare(raws[-1].seq, bulk_min=1)
        for i in range(0, len(raws), 7):
            w.apply(raws[i : i + 7])
        w.conn.set_trace_callback(None)
        bulk.drop(w.conn)
        lookups = [
            sql
            for sql in ran
            if sql.lstrip().upper().startswith("SELECT")
            and " WHERE " in sql.upper()
            and "sqlite_master" not in sql
            and "projection_state" not in sql
        ]
        # the sample does look rows up (a host's NAT rules by the first column of their key)
        assert any("FROM host_nat WHERE host" in sql for sql in lookups)
        for sql in lookups:
            plan = [r[3] for r in w.conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
            assert not any(step.startswith("SCAN") for step in plan), (sql, plan)
    finally:
        w.close()


def test_a_writer_that_dies_without_indexes_leaves_them_to_the_next(tmp_path: Path) -> None:
    log = _sample_log()
    raws = _raws(log)
    path = tmp_path / "p.db"
    w = Writer(path)
    w.prepare(raws[-1].seq, bulk_min=1)
    w.apply(raws[:10])
    w.conn.close()  # died: no end_bulk, no close
    assert _index_sql(path) == {}
    # far behind again: carries on without them, builds them at the end
    w = Writer(path)
    assert w.last_seq == 10
    w.prepare(raws[-1].seq, bulk_min=5)
    assert w.bulk_until is not None and not bulk.present(w.conn)
    w.apply(raws[10:20])
    w.conn.close()
    # a short way to go: builds them before projecting
    w = Writer(path)
    w.prepare(raws[-1].seq, bulk_min=len(raws))
    assert w.bulk_until is None and bulk.present(w.conn) == set(DEFERRED_INDEXES)
    w.apply(raws[20:])
    w.close()
    assert _index_sql(path) == DEFERRED_INDEXES
    assert _normalise(dump(path)) == _normalise(_memory_rows(log))


def test_closing_half_way_builds_the_indexes(tmp_path: Path) -> None:
    raws = _raws(_sample_log())
    w = Writer(tmp_path / "p.db")
    w.prepare(raws[-1].seq, bulk_min=1)
    w.apply(raws[:5])
    w.close()
    assert _index_sql(tmp_path / "p.db") == DEFERRED_INDEXES


async def test_the_projector_process_defers_and_builds_them(
    conn: Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await publish_event(conn, net("1"))
    for i in range(3, 43):
        await publish_event(conn, alloc(f"10.0.0.{i}", f"i{i}"), i)
    assert await project_until(conn, tmp_path / "plain.db") == 41
    # The writer is forked: it sees the parent's module state.
    monkeypatch.setattr(bulk, "BULK_MIN", 10)
    assert await project_until(conn, tmp_path / "bulk.db", to_seq=20) == 20
    assert _index_sql(tmp_path / "bulk.db") == DEFERRED_INDEXES  # a bounded run ends complete
    async with Projector(conn, tmp_path / "bulk.db", batch_size=3) as p:
        await p.catch_up(20)
        # A following projector that caught up has them already (built while the last
        # deferred messages were projected, not when it closes).
        assert _index_sql(tmp_path / "bulk.db") == DEFERRED_INDEXES
    assert _index_sql(tmp_path / "bulk.db") == DEFERRED_INDEXES
    assert dump(tmp_path / "bulk.db") == dump(tmp_path / "plain.db")


# --- the row cache ------------------------------------------------------------------------------


def _pipelined_shared(
    path: Path,
    raws: list[Raw],
    cuts: list[int],
    rng: random.Random,
    limit: int = CACHE_ROWS,
    planned: bool = True,
    complete: bool = True,
) -> None:
    """Project as the writer does, with its shared row cache: each batch on top of the previous
    one, which is committed (not merged) at a random point while the next is projected; merged
    into the cache when the next is handed over. ``planned``: as the two processes do it
    (projector/writer_proc.py) — a batch's plan is made at its hand-over, once the batch below
    is merged, and written later from the plan alone; else as one process would (the batch
    itself written, diffed when it is written). ``complete``: the cache knows the new file's
    tables hold nothing but what it merges (as the writer's does); else it reads the file for
    every row it lacks."""
    w = Writer(path)
    w.cache.limit = limit
    reads = sqlite3.connect(path, check_same_thread=False)
    if planned:
        cache = RowCache.starting_from(reads, limit) if complete else RowCache(limit)
    else:
        cache = w.cache
        if not complete:
            cache.complete.clear()
    try:
        below: Batch | None = None
        plan: Plan | None = None
        i = 0
        sizes = iter(cuts * (len(raws) + 1))

        def commit(batch: Batch) -> None:
            if planned:
                assert plan is not None
                w.commit_plan(plan)
            else:
                w.commit(batch, merge=False)

        while i < len(raws):
            n = next(sizes)
            cur = Batch(reads, base=below, cache=cache)
            part = raws[i : i + n]
            split = rng.randint(0, len(part))
            w.project(part[:split], cur)
            if below is not None:
                commit(below)
            w.project(part[split:], cur)
            if below is not None:
                cache.merge(below)
            cur.base = None
            below = cur
            plan = cur.plan() if planned else None
            i += n
        if below is not None:
            commit(below)
        assert w.last_seq == raws[-1].seq
    finally:
        reads.close()
        w.close()


@pytest.mark.parametrize("cut", [1, 2, 5, 13, 1000])
@pytest.mark.parametrize("limit", [3, 200_000])
@pytest.mark.parametrize("planned", [True, False])
@pytest.mark.parametrize("complete", [True, False])
def test_pipelined_batches_with_the_shared_cache_match_the_memory_projection(
    tmp_path: Path, cut: int, limit: int, planned: bool, complete: bool
) -> None:
    log = _sample_log()  # includes NAT tables read with select() across batches
    _pipelined_shared(
        tmp_path / "p.db",
        _raws(log),
        [cut],
        random.Random(cut),
        limit,
        planned=planned,
        complete=complete,
    )
    assert _normalise(dump(tmp_path / "p.db")) == _normalise(_memory_rows(log))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.lists(st.integers(1, 9), min_size=1, max_size=20), st.integers(0, 1 << 30))
def test_pipelined_shared_cache_batches_of_any_history_match_the_memory_projection(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, cuts: list[int], seed: int
) -> None:
    _, log = _run_commands(data, 30)
    if not log:
        return
    raws = [Raw(seq, subj, encode(env), 2000.0 + seq, 0) for seq, subj, env in log]
    path = tmp_path_factory.mktemp("pipe") / "p.db"
    _pipelined_shared(path, raws, cuts, random.Random(seed))
    assert _normalise(dump(path)) == _normalise(_memory_rows(log))


def test_the_cache_takes_in_a_batch_only_once_it_is_committed(tmp_path: Path) -> None:
    log = _sample_log()
    raws = _raws(log)
    w = Writer(tmp_path / "p.db")
    try:
        w.apply(raws[:3])  # two networks, one associated
        b = w.project(raws[3:4])  # an allocation in network 1, not committed
        key = ("1", "10.0.0.3")
        assert b.get(FIXED_IPS.name, key) is not None
        assert key not in w.cache.tables.get(FIXED_IPS.name, {})
        # a batch reading the file beside it does not see it either
        assert Batch(w.conn, cache=w.cache).get(FIXED_IPS.name, key) is None
        w.commit(b)
        assert w.cache.tables[FIXED_IPS.name][key] == b.overlay[FIXED_IPS.name][key]
    finally:
        w.close()


def test_the_cache_forgets_everything_past_its_limit(tmp_path: Path) -> None:
    c = RowCache(limit=3)
    for i in range(3):
        c.put("t", (i,), {"i": i})
    assert c.size == 3
    c.put("t", (3,), None)
    assert c.tables == {"t": {(3,): None}} and c.size == 1
    log = _sample_log()
    w = Writer(tmp_path / "p.db")
    w.cache.limit = 2  # forgets at nearly every step: the rows must still come out right
    try:
        for r in _raws(log):
            w.apply([r])
    finally:
        w.close()
    assert _normalise(dump(tmp_path / "p.db")) == _normalise(_memory_rows(log))


def test_a_new_file_is_not_read_for_absent_rows(tmp_path: Path) -> None:
    raws = _raws(_sample_log())
    w = Writer(tmp_path / "p.db")
    try:
        # every state table of a new file is empty: complete in the cache from the start
        assert w.cache.complete == set(STATE_TABLES)
        ran: list[str] = []
        w.conn.set_trace_callback(ran.append)
        for i in range(0, len(raws), 3):
            w.apply(raws[i : i + 3])
        w.conn.set_trace_callback(None)
        assert not [sql for sql in ran if sql.lstrip().upper().startswith("SELECT")]
        assert w.cache.complete == set(STATE_TABLES)
    finally:
        w.close()
    # Opened again: the tables that hold rows now are read from the file, the others are not.
    w = Writer(tmp_path / "p.db")
    try:
        empty = {name for name in STATE_TABLES if not w.conn.execute(
            f"SELECT count(*) FROM {name}").fetchone()[0]}  # fmt: skip
        assert "networks" not in empty and "host_nat" in empty
        assert w.cache.complete == empty
        ran = []
        w.conn.set_trace_callback(ran.append)
        b = w.project([], Batch(w.conn, cache=w.cache))
        assert b.get("networks", ("1",)) is not None and b.get("networks", ("nope",)) is None
        assert b.get("host_nat", ("h1", "172.16.0.9")) is None
        assert b.select("host_nat", "host", "h1") == []
        assert [sql for sql in ran if "FROM networks" in sql]
        assert not [sql for sql in ran if "FROM host_nat" in sql]
    finally:
        w.close()


def test_the_cache_counts_the_rows_it_holds() -> None:
    c = RowCache(limit=10)

    class Changes:
        overlay = {"networks": {("1",): {"network_id": "1"}, ("2",): None}}

    for _ in range(5):
        c.merge(Changes())
    assert c.size == 2 and c.tables["networks"][("1",)] == {"network_id": "1"}
    # In a complete table a deleted row is no row: nothing is kept for it (a long churn's ever
    # new keys would fill the cache).
    c = RowCache(limit=10)
    c.complete.add("networks")
    for _ in range(5):
        c.merge(Changes())
    assert c.size == 1 and c.tables["networks"] == {("1",): {"network_id": "1"}}


def test_a_batch_of_its_own_caches_what_it_read(tmp_path: Path) -> None:
    raws = _raws(_sample_log())
    w = Writer(tmp_path / "p.db")
    try:
        w.apply(raws[:2])
        b = Batch(w.conn)
        assert b.get("networks", ("1",)) is not None
        assert ("1",) in b.read.tables["networks"]
    finally:
        w.close()
