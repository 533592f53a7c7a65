"""The projection database: opening it, and its named, transactional migrations.

Migrations are sqlite-utils ``Migrations`` (each one and the record that it ran commit together,
in ``_sqlite_migrations``). Add a new one at the end; never edit one that has shipped. The
schema version is the number of migrations applied, stored in ``projection_state`` too so a
plain ``sqlite3`` user sees it.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import SchemaTooNew
from .tables import (
    EVENTS,
    FIXED_IPS,
    FLOATING_IPS,
    FLOATING_POOLS,
    HOST_ADDRESSES,
    HOST_LINKS,
    HOST_NAT,
    HOSTS,
    NETWORKS,
    PROJECTS,
    REJECTED_EVENTS,
    Table,
)

if TYPE_CHECKING:
    import sqlite_utils
    from sqlite_utils.migrations import Migrations

MIGRATION_SET = "netledger.projector"
#: Names of the migrations this code knows, in order (the schema version is their count).
MIGRATION_NAMES: list[str] = []


MigrationFn = Callable[["sqlite_utils.Database"], None]
_REGISTERED: list[tuple[str, MigrationFn]] = []


def _migration(name: str) -> Callable[[MigrationFn], MigrationFn]:
    MIGRATION_NAMES.append(name)

    def register(fn: MigrationFn) -> MigrationFn:
        _REGISTERED.append((name, fn))
        return fn

    return register


@functools.cache
def _migrations() -> Migrations:
    """The sqlite-utils ``Migrations`` of this schema. sqlite-utils is imported here, when a
    file must be created or migrated: its import (~0.1 s, dateutil and plugins with it) was
    a third of every ``projector run --once`` that resumes an up-to-date file."""
    from sqlite_utils.migrations import Migrations

    m = Migrations(MIGRATION_SET)
    for name, fn in _REGISTERED:
        m(name=name)(fn)
    return m


def __getattr__(name: str) -> Any:
    if name == "migrations":  # the registry as before, built on first use
        return _migrations()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_INT, _STR, _FLOAT, _BYTES = int, str, float, bytes

#: Column types; a column not named here is TEXT.
_TYPES: dict[str, type] = {
    "vlan": _INT, "vni": _INT, "vpn_public_port": _INT, "multi_host": _INT, "mtu": _INT,
    "deleted": _INT, "allocated": _INT, "leased": _INT, "leased_v6": _INT, "network_host": _INT, "drift": _INT,
    "nat_drift": _INT, "nat_fixed_space": _INT, "changes": _INT, "drift_repairs": _INT, "applied_seq": _INT,
    "duration_ms": _FLOAT, "seq": _INT, "time": _FLOAT, "stream_time": _FLOAT, "raw": _BYTES,
    "last_seq": _INT, "schema_version": _INT, "highest_seq": _INT,
}  # fmt: skip


def _column_type(name: str) -> type:
    if name in _TYPES:
        return _TYPES[name]
    if name.endswith("_seq"):
        return _INT
    if name.endswith("_at"):
        return _FLOAT
    return _STR


#: Columns that later migrations add (appended, in this order): the first migration creates a
#: table without them, so a new database and a migrated one end with the same columns.
ADDED: dict[str, dict[str, tuple[str, ...]]] = {
    "0003_ipv6": {
        "networks": ("gateway_v6", "ipv6_mode"),
        "fixed_ips": ("address_v6",),
        "events": ("address_v6",),
    },
    "0004_leased_v6": {"fixed_ips": ("leased_v6",)},
    "0005_nat_fixed_space": {"hosts": ("nat_fixed_space",)},
    "0006_host_retired": {"hosts": ("retired_seq", "retired_at")},
}


def _added_later(table: str) -> set[str]:
    return {c for added in ADDED.values() for c in added.get(table, ())}


def _create(db: sqlite_utils.Database, table: Table, not_null: set[str] | None = None) -> None:
    later = _added_later(table.name)
    db[table.name].create(  # type: ignore[union-attr]
        {c: _column_type(c) for c in table.columns if c not in later},
        pk=table.pk[0] if len(table.pk) == 1 else table.pk,
        not_null=not_null or set(table.pk),
    )


@_migration("0001_initial")
def _m0001_initial(db: sqlite_utils.Database) -> None:
    for t in (
        NETWORKS,
        FIXED_IPS,
        FLOATING_POOLS,
        FLOATING_IPS,
        PROJECTS,
        HOSTS,
        HOST_LINKS,
        HOST_ADDRESSES,
        HOST_NAT,
        EVENTS,
        REJECTED_EVENTS,
    ):
        _create(db, t)
    # One row: the checkpoint. last_seq is written in the same transaction as the rows it made.
    db["projection_state"].create(  # type: ignore[union-attr]
        {
            "id": int,
            "last_seq": int,
            "schema_version": int,
            "highest_seq": int,
            "stream": str,
            "stream_created": str,
        },
        pk="id",
    )
    db.execute(
        "INSERT INTO projection_state (id, last_seq, schema_version, highest_seq) VALUES (1, 0, 0, 0)"
    )
    # Queries people run: what is in use where, and the audit trail of one thing.
    for table, col in [
        ("fixed_ips", "address"), ("fixed_ips", "instance"), ("fixed_ips", "project"),
        ("fixed_ips", "host"), ("floating_ips", "project"), ("floating_ips", "fixed_address"),
        ("networks", "project"), ("host_nat", "fixed_address"),
    ]:  # fmt: skip
        db[table].create_index([col])  # type: ignore[union-attr]
    # The events index grows with the log: partial indexes skip the rows where the column is
    # empty (most events concern no fixed_address, many no host), so appends stay cheap.
    # ``WHERE col = ?`` implies ``col IS NOT NULL``, so SQLite uses them for every lookup.
    for col in ("address", "fixed_address", "instance", "project", "network_id", "host", "time"):
        db.execute(f"CREATE INDEX idx_events_{col} ON events ({col}, seq) WHERE {col} IS NOT NULL")


@_migration("0002_views")
def _m0002_views(db: sqlite_utils.Database) -> None:
    # Per-project usage, for people poking at the file with sqlite3 or datasette.
    db.execute(
        """
        CREATE VIEW project_usage AS
        SELECT p.project, p.network_id,
               (SELECT count(*) FROM fixed_ips f WHERE f.project = p.project) AS fixed_ips,
               (SELECT count(*) FROM floating_ips f WHERE f.project = p.project) AS floating_ips,
               p.first_seq, p.last_seq
        FROM projects p
        """
    )


@_migration("0003_ipv6")
def _m0003_ipv6(db: sqlite_utils.Database) -> None:
    # Issue 14: networks serve IPv6 (gateway_v6, ipv6_mode; cidr may now be NULL on an
    # IPv6-only network: no constraint to change), allocations carry address_v6, and the
    # events index names it so ``audit address <IPv6>`` is an index scan too.
    for table, columns in ADDED["0003_ipv6"].items():
        for c in columns:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {c} TEXT")
    db["fixed_ips"].create_index(["address_v6"])  # type: ignore[union-attr]
    db.execute(
        "CREATE INDEX idx_events_address_v6 ON events (address_v6, seq)"
        " WHERE address_v6 IS NOT NULL"
    )


@_migration("0004_leased_v6")
def _m0004_leased_v6(db: sqlite_utils.Database) -> None:
    # A dual-stack dhcpv6 allocation holds two DHCP leases, which end apart: the IPv6 one
    # has its own flag (found by review). Rows written before had one lease at most.
    db.execute("ALTER TABLE fixed_ips ADD COLUMN leased_v6 INTEGER NOT NULL DEFAULT 0")


@_migration("0005_nat_fixed_space")
def _m0005_nat_fixed_space(db: sqlite_utils.Database) -> None:
    # A host's NAT record may say "the registry's fixed ranges" instead of listing them
    # (HostNatApplied.fixed_space): 1 then, and snat_ranges is []; NULL without a table.
    db.execute("ALTER TABLE hosts ADD COLUMN nat_fixed_space INTEGER")
    # Every record so far listed its ranges: 0 where the last one is a table (snat_ranges is
    # set by HostNatApplied alone), as a rebuild of the same log says (`verify`).
    db.execute("UPDATE hosts SET nat_fixed_space = 0 WHERE snat_ranges IS NOT NULL")


@_migration("0006_host_retired")
def _m0006_host_retired(db: sqlite_utils.Database) -> None:
    # A host taken out of the cloud (`host retire`: HostRetired): its last retirement, NULL
    # while it is in (never retired, or announced since). No log before held one.
    db.execute("ALTER TABLE hosts ADD COLUMN retired_seq INTEGER")
    db.execute("ALTER TABLE hosts ADD COLUMN retired_at FLOAT")


#: The events table's secondary indexes, exactly as migrations 0001 and 0003 create them (a test
#: checks that a migrated database has these and no other). A long catch-up drops them and
#: builds them again at its end (:mod:`.bulk`): one sort instead of a B-tree insert per row.
EVENTS_INDEXES: dict[str, str] = {
    f"idx_events_{col}": (
        f"CREATE INDEX idx_events_{col} ON events ({col}, seq) WHERE {col} IS NOT NULL"
    )
    for col in (
        "address", "fixed_address", "instance", "project", "network_id", "host", "time",
        "address_v6",
    )
}  # fmt: skip


#: The domain tables' secondary indexes, exactly as migrations 0001 and 0003 create them
#: (sqlite-utils' ``create_index``; a test checks that a migrated database has these). The
#: projector never reads through them — it looks rows up by their primary key or its first
#: column — so a long catch-up defers them with the events indexes: a fixed IP is in five.
DOMAIN_INDEXES: dict[str, str] = {
    f"idx_{table}_{col}": f'CREATE INDEX "idx_{table}_{col}"\n    ON "{table}" ("{col}")'
    for table, col in (
        ("fixed_ips", "address"), ("fixed_ips", "instance"), ("fixed_ips", "project"),
        ("fixed_ips", "host"), ("fixed_ips", "address_v6"), ("floating_ips", "project"),
        ("floating_ips", "fixed_address"), ("networks", "project"), ("host_nat", "fixed_address"),
    )
}  # fmt: skip

#: Every index a long catch-up drops and builds again at its end (:mod:`.bulk`).
DEFERRED_INDEXES: dict[str, str] = {**EVENTS_INDEXES, **DOMAIN_INDEXES}


def schema_version() -> int:
    """The version this code writes: the number of migrations it knows."""
    return len(MIGRATION_NAMES)


def open_db(path: str | Path) -> sqlite_utils.Database:
    """Open (creating if needed) and migrate the projection at ``path``; WAL mode.

    ``check_same_thread=False``: the projector hands the connection to its one writer thread
    and never uses it from two threads at once.
    """
    import sqlite_utils

    create_private(path)
    conn = sqlite3.connect(str(path), check_same_thread=False)
    db = sqlite_utils.Database(conn)
    try:
        db.enable_wal()
        _tune(conn)
        migrate(db)
    except BaseException:
        conn.close()
        raise
    return db


#: A new projection's mode: every project's allocations are in it, so not for every local user
#: (found by review: it was 0644 under the process's umask). SQLite gives its ``-wal`` and
#: ``-shm`` files the database file's mode.
PROJECTION_MODE = 0o640


def create_private(path: str | Path) -> None:
    """Create ``path`` empty with :data:`PROJECTION_MODE` unless it exists (then left as it
    is: an operator's own mode stays)."""
    try:
        fd = os.open(str(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, PROJECTION_MODE)
    except FileExistsError:
        return
    os.fchmod(fd, PROJECTION_MODE)  # whatever the umask
    os.close(fd)


def _tune(conn: sqlite3.Connection) -> None:
    # NORMAL in WAL mode: a process crash loses nothing committed; a power loss may lose
    # the last batches, never consistency (they are replayed from the log).
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")


def open_connection(path: str | Path) -> sqlite3.Connection:
    """:func:`open_db`'s connection, without sqlite-utils when the file is already migrated
    by this code (every migration it knows applied, in order, and no other; its schema
    version recorded): the projector's writer opens the file this way at every start."""
    create_private(path)
    conn = sqlite3.connect(str(path), check_same_thread=False)
    try:
        if _up_to_date(conn):
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=wal")
            conn.execute("PRAGMA recursive_triggers=on")  # as sqlite-utils' Database sets it
            _tune(conn)
            return conn
    except sqlite3.Error:
        pass  # whatever it is, the full path below says it
    conn.close()
    return open_db(path).conn


def _up_to_date(conn: sqlite3.Connection) -> bool:
    try:
        applied = conn.execute(
            "SELECT name FROM _sqlite_migrations WHERE migration_set = ? ORDER BY rowid",
            [MIGRATION_SET],
        ).fetchall()
        (version,) = conn.execute(
            "SELECT schema_version FROM projection_state WHERE id = 1"
        ).fetchone()
    except (sqlite3.OperationalError, TypeError):  # no such table, no such row
        return False
    return [r[0] for r in applied] == MIGRATION_NAMES and version == schema_version()


def migrate(db: sqlite_utils.Database) -> None:
    known = set(MIGRATION_NAMES)
    migrations = _migrations()
    unknown = [m.name for m in migrations.applied(db) if m.name not in known]
    if unknown:
        raise SchemaTooNew(
            f"the projection was migrated by a newer netledger ({', '.join(unknown)});"
            " upgrade, or rebuild it into a new file",
            migrations=unknown,
        )
    migrations.apply(db)
    with db.atomic():
        db.execute(
            "UPDATE projection_state SET schema_version = ? WHERE id = 1", [schema_version()]
        )
