"""The floor under any projector of netledger's schema in Python + SQLite (issue 13 point 4).

``projector run`` reads, decodes, projects the domain tables and writes them beside the
``events`` table (every event, with its index columns and its data as JSON: what ``audit``
queries). Whatever a projector does beyond that, it must at least, per event:

* **decode** the stored envelope (the projector's own decoder, ``wire_fast.decode_fast``);
* build its **events row** (the 19 columns: envelope, actor, the index columns the event
  names, its data as JSON — the projector's own ``_data``);
* **insert** it (the projector's own multi-row ``INSERT ... VALUES (..), (..)``,
  ``projector.store._insert``: 3.3 µs a row against ``executemany``'s 5.0, bench/sqlite_floor.py;
  batches of 2,000, one transaction each, WAL,
  ``synchronous=NORMAL``, the table as the migrations create it, its indexes dropped as a long
  catch-up drops them);
* **build the events indexes** at the end (the 8 partial indexes, as ``projector.bulk`` does).

:func:`floor` measures each step's CPU per event on messages read from the log (no domain
tables, no process boundary, nothing read twice). Beside the raw read's own CPU and the
nats-server's, it gives the most any such projector could reach on this machine's cores if every
step ran perfectly in parallel: a row of its own, so the goal (0.6 of the raw read) is seen
against what the stack allows (bench/README.md §4).
"""

from __future__ import annotations

import gc
import sqlite3
import time
from pathlib import Path
from typing import Any

from netledger.events.wire_fast import decode_fast
from netledger.projector import schema
from netledger.projector.project import _data, _index_values, _indexed_fields
from netledger.projector.project_tx import INDEX_COLUMNS, bare
from netledger.projector.store import _insert
from netledger.projector.tables import EVENTS

BATCH = 2000


def _rows(messages: list[tuple[int, str, Any]], envs: list[Any]) -> list[tuple[Any, ...]]:
    out = []
    blank = dict.fromkeys(INDEX_COLUMNS)
    for (seq, subject, _), env in zip(messages, envs, strict=True):
        ev = env.event
        cls = type(ev)
        idx = dict(blank)
        for name in _indexed_fields(cls):
            v = getattr(ev, name)
            if isinstance(v, str) and v:
                idx[name] = bare(v) if name == "address" else v
        a = env.actor
        network_id, address, fixed, instance, project, host, pool, address_v6 = _index_values(idx)
        out.append(
            (
                seq, env.time, 0.0, subject, ev.TYPE, env.event_id, env.command_id,
                a.project, a.role, a.user, network_id, address, fixed, instance, project, host,
                pool, _data(ev, cls), address_v6,
            )
        )  # fmt: skip
    return out


def floor(payloads: list[bytes], db_path: Path) -> dict[str, float]:
    """CPU seconds per event of each step above over ``payloads`` (stored envelopes, in log
    order), the cyclic GC off as the projector's writer keeps it nearly off."""
    import sqlite_utils

    n = len(payloads)
    was = gc.isenabled()
    gc.disable()
    try:
        t = time.process_time()
        envs = [decode_fast(d) for d in payloads]
        decode = time.process_time() - t
        messages = [(seq, env.event.subject(), None) for seq, env in enumerate(envs, 1)]
        t = time.process_time()
        rows = _rows(messages, envs)
        row = time.process_time() - t
        del envs, messages
        db = sqlite_utils.Database(db_path)
        schema._migrations().apply(db)
        db.close()
        c = sqlite3.connect(db_path, isolation_level=None)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")
        for name in schema.EVENTS_INDEXES:
            c.execute(f"DROP INDEX IF EXISTS {name}")
        t = time.process_time()
        for i in range(0, n, BATCH):
            c.execute("BEGIN")
            _insert(c, "INSERT", EVENTS, rows[i : i + BATCH])
            c.execute("COMMIT")
        insert = time.process_time() - t
        t = time.process_time()
        for create in schema.EVENTS_INDEXES.values():
            c.execute(create)
        index = time.process_time() - t
        c.close()
    finally:
        if was:
            gc.enable()
    return {"decode": decode / n, "row": row / n, "insert": insert / n, "index": index / n}
