"""Read-only queries over a projection database (what ``netledger show`` prints).

Opened read-only, so they run safely next to a projector writing the same file (WAL mode:
readers see the last committed batch).
"""

from __future__ import annotations

import ipaddress
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import ProjectionNotFound, SchemaTooOld, not_a_projection
from .liveness import liveness_fields, read_stamp
from .tables import FIXED_IPS, FLOATING_IPS, HOSTS, NETWORKS

Row = dict[str, Any]


@contextmanager
def open_readonly(path: str | Path, *, current: bool = True) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the projection at ``path``, or :class:`ProjectionNotFound`.

    ``current``: the file must hold every migration this code knows (:class:`SchemaTooOld`
    otherwise): the queries name this schema's columns, and a file an older netledger wrote
    lacks some (read-only, it is not migrated here). A newer file is read: its columns are a
    superset.
    """
    p = Path(path)
    if not p.is_file():
        raise ProjectionNotFound(
            f"no projection database at {p} (run `netledger projector run --db {p}`"
            " or `netledger serve`)",
            db=str(p),
        )
    conn = sqlite3.connect(p.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        try:
            conn.execute("SELECT last_seq FROM projection_state WHERE id = 1").fetchone()
        except sqlite3.DatabaseError as exc:
            raise not_a_projection(p, exc) from None
        if current:
            _check_schema(conn, p)
        conn.row_factory = sqlite3.Row
        yield conn
    finally:
        conn.close()


def _check_schema(conn: sqlite3.Connection, path: Path) -> None:
    from .schema import MIGRATION_NAMES, MIGRATION_SET

    try:
        applied = {
            r[0]
            for r in conn.execute(
                "SELECT name FROM _sqlite_migrations WHERE migration_set = ?", [MIGRATION_SET]
            )
        }
    except sqlite3.DatabaseError:
        return  # no record of migrations: whatever it is, the queries say it
    missing = [n for n in MIGRATION_NAMES if n not in applied]
    if missing:
        raise SchemaTooOld(
            f"{path} was written by an older netledger (it lacks the migrations"
            f" {', '.join(missing)}): a projector of this version migrates it when it opens it"
            f" - restart `netledger serve`, or run `netledger projector run --once --db {path}`",
            db=str(path),
            migrations=missing,
        )


def _rows(conn: sqlite3.Connection, sql: str, args: list[Any]) -> list[Row]:
    return [dict(r) for r in conn.execute(sql, args)]


def _ip_key(address: str) -> tuple[int, int]:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return (9, 0)
    return (ip.version, int(ip))


def _where(clauses: list[tuple[str, Any]]) -> tuple[str, list[Any]]:
    """The WHERE of the clauses whose value is not None (a tuple: one value per ``?``)."""
    used = [(sql, v) for sql, v in clauses if v is not None]
    if not used:
        return "", []
    args = [x for _, v in used for x in (v if isinstance(v, tuple) else (v,))]
    return " WHERE " + " AND ".join(sql for sql, _ in used), args


def state(conn: sqlite3.Connection) -> Row:
    """The checkpoint and counters: how far the projection is, and what it rejected."""
    row = dict(conn.execute("SELECT * FROM projection_state WHERE id = 1").fetchone())
    row.pop("id", None)
    row["events"] = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    row["rejected"] = conn.execute("SELECT count(*) FROM rejected_events").fetchone()[0]
    row["lag"] = max(0, (row.get("highest_seq") or 0) - (row.get("last_seq") or 0))
    return row


def liveness(conn: sqlite3.Connection) -> Row:
    """The daemon's liveness stamp (projector/liveness.py ``liveness_fields``: the fields
    ``netledger status`` shows for each projector). Judged by the stamp's age alone: no stream
    to compare with here."""
    return liveness_fields(read_stamp(conn))


def networks(
    conn: sqlite3.Connection,
    *,
    project: str | None = None,
    network_id: str | None = None,
    host: str | None = None,
    include_deleted: bool = False,
) -> list[Row]:
    where, args = _where(
        [
            ("project = ?", project),
            ("network_id = ?", network_id),
            ("network_host = ?", host),
            ("deleted = ?", None if include_deleted else 0),
        ]
    )
    cols = ", ".join(NETWORKS.columns)
    rows = _rows(conn, f"""
        SELECT {cols},
               (SELECT count(*) FROM fixed_ips f WHERE f.network_id = n.network_id) AS in_use
        FROM networks n {where}""", args)  # fmt: skip
    rows.sort(key=lambda r: (len(r["network_id"]), r["network_id"]))
    return rows


def fixed_ips(
    conn: sqlite3.Connection,
    *,
    project: str | None = None,
    network_id: str | None = None,
    host: str | None = None,
    instance: str | None = None,
    address: str | None = None,
) -> list[Row]:
    """``address``: its IPv4 or its IPv6 address (as the log writes it)."""
    # A fixed IP allocated without a project belongs to its network's project.
    where, args = _where(
        [
            ("coalesce(f.project, n.project) = ?", project),
            ("f.network_id = ?", network_id),
            ("f.host = ?", host),
            ("f.instance = ?", instance),
            ("(f.address = ? OR f.address_v6 = ?)", None if address is None else (address,) * 2),
        ]
    )
    cols = ", ".join(f"f.{c}" for c in FIXED_IPS.columns if c != "project")
    rows = _rows(
        conn,
        f"""
        SELECT {cols}, coalesce(f.project, n.project) AS project
        FROM fixed_ips f LEFT JOIN networks n ON n.network_id = f.network_id {where}""",
        args,
    )
    rows.sort(key=lambda r: (len(r["network_id"]), r["network_id"], _ip_key(r["address"])))
    return rows


def floating_ips(
    conn: sqlite3.Connection,
    *,
    project: str | None = None,
    network_id: str | None = None,
    host: str | None = None,
    pool: str | None = None,
    address: str | None = None,
) -> list[Row]:
    """``address``: the floating IP, or the fixed IP it is associated with."""
    where, args = _where(
        [
            ("fl.project = ?", project),
            ("fl.network_id = ?", network_id),
            ("f.host = ?", host),
            ("fl.pool = ?", pool),
            (
                "(fl.address = ? OR fl.fixed_address = ?)",
                None if address is None else (address,) * 2,
            ),
        ]
    )
    cols = ", ".join(f"fl.{c}" for c in FLOATING_IPS.columns)
    rows = _rows(conn, f"""
        SELECT {cols}, f.host AS host
        FROM floating_ips fl
        LEFT JOIN fixed_ips f ON f.network_id = fl.network_id AND f.address = fl.fixed_address
        {where}""", args)  # fmt: skip
    rows.sort(key=lambda r: _ip_key(r["address"]))
    return rows


def hosts(conn: sqlite3.Connection, *, host: str | None = None) -> list[Row]:
    """Hosts with an executor (host events), plus hosts named only by allocations or as a
    network host (their executor columns are empty)."""
    where, args = _where([("names.host = ?", host)])
    cols = ", ".join(f"h.{c}" for c in HOSTS.columns if c != "host")
    return _rows(conn, f"""
        WITH names AS (
            SELECT host FROM hosts
            UNION SELECT host FROM fixed_ips WHERE host IS NOT NULL
            UNION SELECT network_host FROM networks WHERE network_host IS NOT NULL AND deleted = 0
        )
        SELECT names.host AS host, {cols},
               (SELECT count(*) FROM host_links l WHERE l.host = names.host) AS links,
               (SELECT count(*) FROM host_addresses a WHERE a.host = names.host) AS addresses,
               (SELECT count(*) FROM host_nat x WHERE x.host = names.host) AS nat_rules,
               (SELECT count(*) FROM fixed_ips f WHERE f.host = names.host) AS fixed_ips
        FROM names LEFT JOIN hosts h ON h.host = names.host {where}
        ORDER BY names.host""", args)  # fmt: skip


def host_links(conn: sqlite3.Connection, *, host: str | None = None) -> list[Row]:
    where, args = _where([("host = ?", host)])
    return _rows(conn, f"SELECT * FROM host_links {where} ORDER BY host, name", args)
