"""The floor's SQLite part, questioned: ``python bench/sqlite_floor.py`` (issue 13 point 4).

Diagnostic, by hand (not in ``bench/run``). bench/projection_floor.py put the floor of any
Python projector of netledger's schema at 0.43 of the raw read, 12 of its 26.9 µs an event
being SQLite's insert of the ``events`` row (bound row by row with ``executemany``) and the
build of its indexes. This script asks whether that insert must cost what it did, on the
``events`` rows the projector itself makes of history_gen's log (bench/projector_cpu.py's
200,000 messages, kept in the system's temp folder; decoded with ``decode_fast`` and projected
with ``apply_event`` over a :class:`~netledger.projector.project.MemoryStore`), each way into a
fresh database as a long catch-up has it (migrated, WAL, ``synchronous=NORMAL``, the deferred
indexes dropped), batches of 2,000 rows, one transaction each:

* ``executemany``: one row bound at a time (projection_floor.py's assumption);
* ``values``: the projector's own way (:func:`netledger.projector.store._insert`: multi-row
  ``INSERT ... VALUES (..), (..)``, NULLs bound as NaN);
* ``json_each``: the whole batch encoded once by msgspec (C), one statement that SQLite takes
  apart in C: ``INSERT INTO events SELECT value->>0, value->>1, ... FROM json_each(?)``; its
  encoding counted in (``encode``) and on its own;
* ``json_each, data raw``: the same with each event's ``data`` carried in the batch as a JSON
  object (not a string) and stored as SQLite's minified text of it (``value->17``) — the
  ``data`` column taken from the batch encoding instead of built per event.

Then every way's table is compared with ``executemany``'s row for row (``EXCEPT`` both ways,
and each column's ``typeof``): a way that does not store the same values does not count. Also:
the per-event ``data`` as the projector builds it (``_data``: orjson), against msgspec encoding
the same dicts; where SQLite's JSON time goes (parse, extractions); ``decode_fast`` against
msgspec's untyped decode; the pickling of the raw messages the reader sends the writer; and
bench/projection_floor.py's own steps on the same messages. Last, the floor (projection_floor's
sum: raw read's CPU + nats-server's + decode + events row + insert + events indexes, over every
core as if perfectly parallel; no domain table) with each insert, and with every step at the
least measured here, against the raw read's rate measured here (the fastest of
``--repeats``: the machine's load moves it) and against 1 / its CPU (it is one process on one
core: its rate on an idle core, which the load moves less). CPU seconds by
``time.process_time`` (this process only: SQLite runs in it), median of ``--repeats`` runs, the
ways interleaved; the raw read uses the history store bench/projector_cpu.py builds.
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

BATCH = 2000
Row = tuple[Any, ...]


def event_rows(msgs: list[tuple[int, str, bytes, float, int]]) -> tuple[list[Row], list[Any]]:
    """The projector's ``events`` rows of ``msgs`` (rejections left out) and each one's event."""
    from netledger.events.wire_fast import decode_fast
    from netledger.projector.project import MemoryStore, apply_event

    store = MemoryStore()
    rows: list[Row] = []
    events: list[Any] = []
    for seq, subject, data, stream_time, _ in msgs:
        env = decode_fast(data)
        tx, row = apply_event(seq, subject, env, store, stream_time)
        if tx is None:
            continue
        for (table, key), changed in tx.changes.items():
            t = store.tables.setdefault(table, {})
            if changed is None:
                t.pop(key, None)
            else:
                t[key] = changed
        rows.append(row)  # type: ignore[arg-type]
        events.append(env.event)
    return rows, events


def fresh(path: Path) -> sqlite3.Connection:
    """A migrated projection with its deferred indexes dropped, as a long catch-up has it."""
    from netledger.projector import bulk, schema

    schema.open_db(path).conn.close()
    conn = schema.open_connection(path)
    conn.isolation_level = None
    bulk.drop(conn)
    return conn


def _columns() -> tuple[str, ...]:
    from netledger.projector.tables import EVENTS

    return EVENTS.columns


def insert_executemany(conn: sqlite3.Connection, rows: list[Row]) -> None:
    cols = _columns()
    sql = f"INSERT INTO events ({', '.join(cols)}) VALUES ({','.join('?' * len(cols))})"
    for i in range(0, len(rows), BATCH):
        conn.execute("BEGIN")
        conn.executemany(sql, rows[i : i + BATCH])
        conn.execute("COMMIT")


def insert_values(conn: sqlite3.Connection, rows: list[Row]) -> None:
    from netledger.projector.store import _insert, nulls_as_nan
    from netledger.projector.tables import EVENTS

    nulls_as_nan(conn)
    for i in range(0, len(rows), BATCH):
        conn.execute("BEGIN")
        _insert(conn, "INSERT", EVENTS, rows[i : i + BATCH])
        conn.execute("COMMIT")


def _json_sql(raw_data: bool) -> str:
    cols = _columns()
    data = cols.index("data")
    picks = [f"value->{k}" if raw_data and k == data else f"value->>{k}" for k in range(len(cols))]
    return f"INSERT INTO events ({', '.join(cols)}) SELECT {', '.join(picks)} FROM json_each(?)"


def insert_json(conn: sqlite3.Connection, rows: list[Row]) -> None:
    import msgspec

    encode = msgspec.json.Encoder().encode
    sql = _json_sql(False)
    for i in range(0, len(rows), BATCH):
        conn.execute("BEGIN")
        conn.execute(sql, (encode(rows[i : i + BATCH]).decode(),))
        conn.execute("COMMIT")


def raw_data_rows(rows: list[Row], events: list[Any]) -> list[list[Any]]:
    """``rows`` with the ``data`` text replaced by the event's fields (a dict, keys sorted when
    encoded): what a batch encoding would carry instead of a per-event JSON text."""
    data = _columns().index("data")
    out = []
    for row, ev in zip(rows, events, strict=True):
        r = list(row)
        r[data] = ev.__dict__
        out.append(r)
    return out


def insert_json_raw(conn: sqlite3.Connection, rows: list[list[Any]]) -> None:
    import msgspec

    encode = msgspec.json.Encoder(order="sorted").encode
    sql = _json_sql(True)
    for i in range(0, len(rows), BATCH):
        conn.execute("BEGIN")
        conn.execute(sql, (encode(rows[i : i + BATCH]).decode(),))
        conn.execute("COMMIT")


def differences(db: Path, other: Path) -> dict[str, int]:
    """Rows of ``other``'s events table not in ``db``'s and back, and rows whose columns'
    storage classes differ (``EXCEPT`` alone takes 1 and '1' for different, 1 and 1.0 not)."""
    cols = _columns()
    types = ", ".join(f"typeof({c})" for c in cols)
    conn = sqlite3.connect(db)
    conn.execute("ATTACH ? AS o", (str(other),))
    got = {
        "missing": conn.execute(
            "SELECT count(*) FROM (SELECT * FROM events EXCEPT SELECT * FROM o.events)"
        ).fetchone()[0],
        "extra": conn.execute(
            "SELECT count(*) FROM (SELECT * FROM o.events EXCEPT SELECT * FROM events)"
        ).fetchone()[0],
        "types": conn.execute(
            f"SELECT count(*) FROM (SELECT seq, {types} FROM events"
            f" EXCEPT SELECT seq, {types} FROM o.events)"
        ).fetchone()[0],
    }
    conn.close()
    return got


def cpu(fn: Callable[[], Any]) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def measure(rows: list[Row], events: list[Any], repeats: int) -> dict[str, float]:
    """CPU µs/row of each way and of the steps beside them (printed); the medians."""
    import msgspec

    from netledger.projector.project import _data

    n = len(rows)
    raw_rows = raw_data_rows(rows, events)
    ways: dict[str, Callable[[sqlite3.Connection], Any]] = {
        "executemany": lambda c: insert_executemany(c, rows),
        "values (the projector's)": lambda c: insert_values(c, rows),
        "json_each (+ encode)": lambda c: insert_json(c, rows),
        "json_each, data raw (+ encode)": lambda c: insert_json_raw(c, raw_rows),
    }
    enc = msgspec.json.Encoder().encode
    enc_sorted = msgspec.json.Encoder(order="sorted").encode
    extra: dict[str, Callable[[], Any]] = {
        "encode the batches (msgspec)": lambda: [
            enc(rows[i : i + BATCH]) for i in range(0, n, BATCH)
        ],
        "encode the batches, data raw (msgspec)": lambda: [
            enc_sorted(raw_rows[i : i + BATCH]) for i in range(0, n, BATCH)
        ],
        "data per event (_data: orjson)": lambda: [_data(ev, type(ev)) for ev in events],
        "data per event (msgspec, sorted)": lambda: [enc_sorted(ev.__dict__) for ev in events],
    }
    spent: dict[str, list[float]] = {
        k: [] for k in (*ways, "SQLite alone (INSERT ... SELECT)", "events indexes", *extra)
    }
    gc.disable()
    with tempfile.TemporaryDirectory(prefix="nl-sqlite-floor-") as d:
        dbs = {}
        for r in range(repeats):
            for k, (name, way) in enumerate(ways.items()):
                db = Path(d) / f"{r}-{k}.db"
                conn = fresh(db)
                spent[name].append(cpu(lambda: way(conn)))  # noqa: B023
                if name == "values (the projector's)":
                    spent["events indexes"].append(build_indexes(conn))
                conn.close()
                if r == 0:
                    dbs[name] = db
                else:
                    for f in db.parent.glob(f"{db.name}*"):
                        f.unlink()
            db = Path(d) / f"{r}-select.db"
            conn = fresh(db)
            spent["SQLite alone (INSERT ... SELECT)"].append(insert_select(conn, rows))
            conn.close()
            for f in db.parent.glob(f"{db.name}*"):
                f.unlink()
            for name, fn in extra.items():
                spent[name].append(cpu(fn))
        print(f"{n:,} events rows, CPU µs/row, median of {repeats} (each run)")
        for name, got in spent.items():
            med = statistics.median(got)
            each = ", ".join(f"{g * 1e6 / n:.2f}" for g in got)
            print(f"  {name:<40} {med * 1e6 / n:6.2f}  ({each})  {n / med:,.0f} rows/s")
        base = dbs["executemany"]
        for name, db in dbs.items():
            if db != base:
                print(f"  {name} vs executemany: {differences(base, db)}")
    gc.enable()
    same = sum(1 for ev in events if enc_sorted(ev.__dict__).decode() == _data(ev, type(ev)))
    print(f"  data per event: msgspec sorted == _data for {same:,} of {n:,} events")
    return {k: statistics.median(v) / n for k, v in spent.items()}


def insert_select(conn: sqlite3.Connection, rows: list[Row]) -> float:
    """SQLite's own share of the insert: the rows copied from a table of the same shape in
    batches (nothing bound from Python): CPU seconds of the copy alone."""
    conn.execute("CREATE TEMP TABLE src AS SELECT * FROM events WHERE 0")
    insert_executemany_into(conn, "temp.src", rows)
    cols = ", ".join(_columns())
    t = time.process_time()
    for i in range(0, len(rows), BATCH):
        conn.execute("BEGIN")
        conn.execute(
            f"INSERT INTO main.events ({cols}) SELECT {cols} FROM temp.src"
            " WHERE rowid > ? AND rowid <= ?",
            (i, i + BATCH),
        )
        conn.execute("COMMIT")
    return time.process_time() - t


def insert_executemany_into(conn: sqlite3.Connection, table: str, rows: list[Row]) -> None:
    cols = _columns()
    sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({','.join('?' * len(cols))})"
    conn.execute("BEGIN")
    conn.executemany(sql, rows)
    conn.execute("COMMIT")


def build_indexes(conn: sqlite3.Connection) -> float:
    """CPU seconds of building the events indexes over the table as it is (as bulk does)."""
    from netledger.projector.schema import EVENTS_INDEXES

    t = time.process_time()
    conn.execute("BEGIN")
    for sql in EVENTS_INDEXES.values():
        conn.execute(sql)
    conn.execute("COMMIT")
    return time.process_time() - t


def json_costs(rows: list[Row]) -> None:
    """Where ``json_each``'s time goes: parsing a batch, and each ``->>`` from a row's ``value``
    (SQLite 3.40 renders each element as text, and every extraction looks it up again), and
    two ways around the extractions: pivoting ``json_tree``'s leaves, or one flat array, by
    ``GROUP BY`` (µs/row, in memory, nothing inserted)."""
    import itertools

    import msgspec

    enc = msgspec.json.Encoder().encode
    batches = [enc(rows[i : i + BATCH]).decode() for i in range(0, len(rows), BATCH)]
    flat = [
        enc(list(itertools.chain.from_iterable(rows[i : i + BATCH]))).decode()
        for i in range(0, len(rows), BATCH)
    ]
    width = len(_columns())
    conn = sqlite3.connect(":memory:")

    def cost(sql: str, of: list[str]) -> float:
        t = time.process_time()
        for b in of:
            conn.execute(sql, (b,)).fetchall()
        return (time.process_time() - t) * 1e6 / len(rows)

    every = "||".join(f"coalesce(value->>{k}, '')" for k in range(width))
    tree = ", ".join(f"max(CASE WHEN key = {k} THEN atom END)" for k in range(width))
    flat_cols = ", ".join(f"max(CASE key % {width} WHEN {k} THEN value END)" for k in range(width))
    got = {
        "parse (json_valid)": cost("SELECT json_valid(?)", batches),
        "json_each rows": cost("SELECT count(*) FROM json_each(?)", batches),
        "json_each rows, one ->>": cost("SELECT sum(value->>0) FROM json_each(?)", batches),
        f"json_each rows, {width} ->>": cost(f"SELECT count({every}) FROM json_each(?)", batches),
        "json_tree pivot": cost(
            f"SELECT count(*) FROM (SELECT {tree} FROM json_tree(?)"
            " WHERE type != 'array' GROUP BY parent)",
            batches,
        ),
        "flat array pivot": cost(
            f"SELECT count(*) FROM (SELECT {flat_cols} FROM json_each(?) GROUP BY key / {width})",
            flat,
        ),
    }
    conn.close()
    print("  SQLite's JSON, µs/row: " + ", ".join(f"{k} {v:.2f}" for k, v in got.items()))


def decode_bound(msgs: list[tuple[int, str, bytes, float, int]]) -> dict[str, float]:
    """The projector's decode (``decode_fast``: msgspec into the event's own types) against
    msgspec's untyped decode into plain dicts (what any Python decode of them must build)."""
    import msgspec

    from netledger.events.wire_fast import decode_fast

    datas = [m[2] for m in msgs]
    plain = msgspec.msgpack.Decoder().decode
    gc.disable()
    t = time.process_time()
    for d in datas:
        decode_fast(d)
    fast = time.process_time() - t
    t = time.process_time()
    for d in datas:
        plain(d)
    dicts = time.process_time() - t
    # A batch's payloads as one msgpack array (header + the stored bytes joined), one call.
    t = time.process_time()
    for i in range(0, len(datas), BATCH):
        part = datas[i : i + BATCH]
        plain(b"\xdd" + len(part).to_bytes(4, "big") + b"".join(part))
    batched = time.process_time() - t
    gc.enable()
    n = len(datas)
    print(
        f"  decode: decode_fast {fast * 1e6 / n:.2f}, msgspec untyped {dicts * 1e6 / n:.2f},"
        f" msgspec untyped a batch in one call {batched * 1e6 / n:.2f} µs/message"
        f" ({sum(map(len, datas)) / n:.0f} bytes on average)"
    )
    return {"decode_fast": fast / n, "decode, msgspec untyped": dicts / n}


def pickling(msgs: list[tuple[int, str, bytes, float, int]], repeats: int) -> None:
    """The reader -> writer frames: lists of raw messages, pickled and unpickled."""
    chunks = [msgs[i : i + 256] for i in range(0, len(msgs), 256)]
    dumps = []
    loads = []
    for _ in range(repeats):
        t = time.process_time()
        frames = [pickle.dumps(c, protocol=pickle.HIGHEST_PROTOCOL) for c in chunks]
        dumps.append(time.process_time() - t)
        t = time.process_time()
        for f in frames:
            pickle.loads(f)
        loads.append(time.process_time() - t)
    n = len(msgs)
    print(
        f"  pickle the raw messages (256 a frame): dumps {statistics.median(dumps) * 1e6 / n:.2f}"
        f" + loads {statistics.median(loads) * 1e6 / n:.2f} µs/message"
    )


async def raw_read(events: int, seed: int, repeats: int) -> tuple[float, float, float]:
    """The raw read of the log (bench/projection.py's: as ``projector run`` reads, no
    decoding), the fastest of ``repeats``: (messages/s, its CPU s/message, nats-server's)."""
    import asyncio

    from projection import _cpu_seconds
    from projection import raw_read as read
    from projector_cpu import _server, store

    from netledger.journal.stream import connect, last_seq

    server = _server(store("history", events, seed))
    await asyncio.to_thread(server.start)
    try:
        conn = await connect(server.url, name="bench")
        n = await last_seq(conn)
        assert server.proc is not None
        best = (0.0, 0.0, 0.0)
        for _ in range(repeats):
            before = _cpu_seconds(server.proc.pid) or 0.0
            rate, read_cpu, _ = await read(conn, n)
            server_cpu = (_cpu_seconds(server.proc.pid) or before) - before
            print(f"  raw read: {rate:,.0f} messages/s, CPU {read_cpu * 1e6 / n:.2f} µs/message"
                  f" + nats-server {server_cpu * 1e6 / n:.2f}")  # fmt: skip
            if rate > best[0]:
                best = (rate, read_cpu / n, server_cpu / n)
        await conn.close()
        return best
    finally:
        await asyncio.to_thread(server.stop)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import asyncio

    from projection_floor import floor
    from projector_cpu import messages

    msgs = messages(argparse.Namespace(kind="history", events=args.events, seed=args.seed))
    print(f"{sqlite3.sqlite_version=}")
    rate, read, server = asyncio.run(raw_read(args.events, args.seed, args.repeats))
    t = time.process_time()
    rows, events = event_rows(msgs)
    print(f"{len(msgs):,} messages -> {len(rows):,} events rows ({time.process_time() - t:.1f} s)")
    got = measure(rows, events, args.repeats)
    json_costs(rows)
    got.update(decode_bound(msgs))
    pickling(msgs, args.repeats)
    with tempfile.TemporaryDirectory(prefix="nl-sqlite-floor-") as d:
        steps = [floor([m[2] for m in msgs], Path(d) / f"{k}.db") for k in range(args.repeats)]
    old = {k: statistics.median(s[k] for s in steps) for k in steps[0]}
    print("  projection_floor's steps, µs/event: " + ", ".join(
        f"{k} {v * 1e6:.2f}" for k, v in old.items()
    ))  # fmt: skip
    cores = os.cpu_count() or 1
    # The raw read is one Python process on one core (its reader's CPU is nearly its wall):
    # 1 / its CPU is its rate on an idle core, which the load of the machine moves less than
    # its measured rate (a second ratio, against that).
    own = 1 / read
    print(
        f"  raw read: {rate:,.0f}/s measured (the fastest of {args.repeats}),"
        f" {own:,.0f}/s by its CPU ({read * 1e6:.2f} µs/message)"
    )
    if rate < 0.8 * own:
        print("  (the read waited for the CPU: the machine is busy, take the ratios by its CPU)")
    bounds = {
        "projection_floor's (executemany)": (old["decode"], old["row"], old["insert"]),
        "the projector's insert (values)": (
            old["decode"], old["row"], got["values (the projector's)"]
        ),
        "SQLite alone (INSERT ... SELECT)": (
            old["decode"], old["row"], got["SQLite alone (INSERT ... SELECT)"]
        ),
        "every step at its least (untyped decode, msgspec data, no binding)": (
            got["decode, msgspec untyped"],
            got["data per event (msgspec, sorted)"],
            got["SQLite alone (INSERT ... SELECT)"],
        ),
    }  # fmt: skip
    for name, (decode, row, insert) in bounds.items():
        total = read + server + decode + row + insert + got["events indexes"]
        ceiling = cores / total
        print(
            f"  floor with {name}: {total * 1e6:.1f} µs/event (read {read * 1e6:.1f} + nats-server"
            f" {server * 1e6:.1f} + decode {decode * 1e6:.1f} + row {row * 1e6:.1f} + insert"
            f" {insert * 1e6:.1f} + indexes {got['events indexes'] * 1e6:.1f}) ->"
            f" {ceiling:,.0f} events/s on {cores} cores = {ceiling / rate:.2f} of the raw read"
            f" measured, {ceiling / own:.2f} by its CPU"
        )


if __name__ == "__main__":
    main()
