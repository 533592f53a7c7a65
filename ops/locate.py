"""Where the client finds a projection when it is not told (``--db``, ``$NETLEDGER_DB``), and
the NATS URL of the serve running here when it is given none (``--nats``, ``NATS_URL``, the
configuration file): :func:`serve_url`, the only serve running, or of several the one in the
default data folder — else the default URL.

``netledger serve`` keeps its projection in ``DATA/projection.db``; a client on the same machine
must find it even when serve was started with ``--data DIR``. So a running serve leaves a small
pointer file, ``serve-<pid>.json`` in :func:`pointer_dir` (``$XDG_RUNTIME_DIR/netledger``, else
``~/.local/state/netledger/run``), naming its data folder, projection and NATS URL; it removes
it when it stops. A pointer whose process is gone (killed) is ignored (and pruned by the next
serve): the process id and its start time must both still match.

The order (:func:`projection_db`): ``$NETLEDGER_DATA/projection.db`` if that variable is set;
else the projection of a running serve (the one on the ``--nats`` URL if one was given, the only
one, or the one in the default data folder); else the default data folder's
``~/.local/share/netledger/projection.db``. When none exists: ``projection_not_found``, naming
every place looked at and how to point at one.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from netledger.common.settings import default_data_dir
from netledger.projector.errors import ProjectionNotFound, ProjectorError

log = logging.getLogger("netledger.locate")

PROJECTION = "projection.db"


class ProjectionAmbiguous(ProjectorError):
    """Several serves run on this machine and nothing says which one is meant."""

    code = "projection_ambiguous"


def pointer_dir() -> Path:
    """Per user; in the runtime folder (gone at reboot, like the serves it points at)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        return Path(runtime) / "netledger"
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local/state")
    return Path(state) / "netledger" / "run"


@dataclass(frozen=True)
class Serving:
    """What a pointer file says about one running ``netledger serve``."""

    pid: int
    data_dir: Path
    db: Path
    nats_url: str
    path: Path
    #: it keeps a projection (``serve --no-projector`` does not: only its URL is of use)
    projection: bool = True


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks after boot): a reused pid has another one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 and fields[0] != "Z" else None


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process with this id: its start time decides
    now = _start_time(pid)
    if now is None:
        return not Path("/proc/self/stat").exists()  # no /proc (not Linux): trust the pid
    return started is None or now == started


def write_pointer(
    data_dir: Path, db: Path, nats_url: str, *, projection: bool = True
) -> Path | None:
    """Leave the pointer of this process's serve; None (logged) if it cannot be written."""
    folder = pointer_dir()
    path = folder / f"serve-{os.getpid()}.json"
    body = {
        "pid": os.getpid(),
        "started": _start_time(os.getpid()),
        "data_dir": str(data_dir.resolve()),
        "db": str(db.resolve()),
        "nats_url": nats_url,
        "projection": projection,
        "time": time.time(),
    }
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in _read_all(folder, alive_only=False):
            if not stale[1]:
                stale[0].path.unlink(missing_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body))
        tmp.replace(path)
    except OSError as exc:
        log.warning("cannot write %s (clients will not find this projection): %s", path, exc)
        return None
    return path


def remove_pointer(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


def _read_all(folder: Path, alive_only: bool = True) -> list[tuple[Serving, bool]]:
    out: list[tuple[Serving, bool]] = []
    try:
        files = sorted(folder.glob("serve-*.json"))
    except OSError:
        return out
    for f in files:
        try:
            d = json.loads(f.read_text())
            s = Serving(
                int(d["pid"]),
                Path(d["data_dir"]),
                Path(d["db"]),
                str(d["nats_url"]),
                f,
                projection=d.get("projection", True) is not False,
            )
            started = d.get("started")
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or not ours: not a pointer we can use
        alive = _alive(s.pid, started)
        if alive or not alive_only:
            out.append((s, alive))
    return out


def running(*, projection: bool = True) -> list[Serving]:
    """The serves running on this machine (as this user) that keep a projection (with
    ``projection=False``: every one)."""
    return [s for s, _ in _read_all(pointer_dir()) if s.projection or not projection]


def serve_url() -> str | None:
    """The NATS URL of the serve a command given no URL goes to: the only serve running on
    this machine, or of several the one in the default data folder (as :func:`projection_db`
    chooses its projection); None when none runs, or several and none is the default's."""
    serves = running(projection=False)
    if len(serves) == 1:
        return serves[0].nats_url
    default = default_data_dir().resolve()
    for s in serves:
        if s.data_dir == default:
            return s.nats_url
    return None


def _endpoints(urls: str) -> set[tuple[str, int]]:
    out = set()
    for u in urls.split(","):
        parts = urlsplit(u.strip() if "://" in u else f"nats://{u.strip()}")
        host = parts.hostname or "127.0.0.1"
        host = "127.0.0.1" if host in ("localhost", "::1", "0.0.0.0") else host
        try:
            port = parts.port or 4222
        except ValueError:
            continue
        out.add((host, port))
    return out


def projection_db(nats_url: str | None = None) -> Path:
    """The projection a client reads when no ``--db`` is given (see the module's docstring)."""
    data = os.environ.get("NETLEDGER_DATA")
    if data:
        return Path(data) / PROJECTION  # explicit: a missing file is reported where it is opened
    default = default_data_dir() / PROJECTION
    serves = running()
    others: list[Serving] = []
    if nats_url:
        wanted = _endpoints(nats_url)
        same = [s for s in serves if _endpoints(s.nats_url) & wanted]
        others, serves = [s for s in serves if s not in same], same
    if len(serves) == 1:
        return serves[0].db
    if len(serves) > 1:
        for s in serves:
            if s.db == default.resolve():
                return s.db
        listed = "; ".join(f"pid {s.pid} on {s.nats_url}: {s.db}" for s in serves)
        raise ProjectionAmbiguous(
            f"{len(serves)} netledger serves run on this machine ({listed}): choose one with"
            " --nats URL, or point at its projection with --db FILE or NETLEDGER_DB=FILE",
            projections=[str(s.db) for s in serves],
        )
    if default.is_file():
        return default
    where = pointer_dir()
    seen = (
        f"only on other NATS URLs: {', '.join(s.nats_url for s in others)}"
        if others
        else f"none: no pointer file in {where}"
    )
    raise ProjectionNotFound(
        f"no projection found. Looked for a `netledger serve` running on this machine ({seen})"
        f" and at {default} (the default data folder: no such file). Point at one with --db"
        " FILE, NETLEDGER_DB=FILE or NETLEDGER_DATA=DIR (the --data given to `netledger"
        " serve`), or start `netledger serve` on this machine.",
        looked_at=[str(where), str(default)],
        db=str(default),
    )


def status_dbs(nats_url: str | None = None) -> list[Path]:
    """The projection ``netledger status`` checks when given no ``--db``: a running serve's."""
    serves = running()
    if nats_url:
        wanted = _endpoints(nats_url)
        serves = [s for s in serves if _endpoints(s.nats_url) & wanted]
    return [s.db for s in serves][:1] if len(serves) == 1 else []
