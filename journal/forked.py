"""What a forked helper process does first (the service's catch-up reader, journal/catchup.py;
its snapshot uploader, journal/snapshot_upload.py; the snapshot file writer of the executor's
view, journal/snapshot_store.py; the projector's writer, projector/writer_proc.py)."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import gc
import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netledger.journal.stream import Connection


def fork(run: Callable[[], int], close: tuple[int, ...]) -> int:
    """Fork; the child closes ``close`` (the parent's ends of its pipes), runs ``run`` and exits
    with its status, never returning. The parent gets the child's pid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns from here
        # First of all: nothing of the parent's is ever collected (or finalized: a transport
        # closing "its" file descriptor) here, and its pages stay shared.
        gc.freeze()
        code = 1
        try:
            for fd in close:
                os.close(fd)
            code = run()
        finally:
            os._exit(code)
    return pid


def exited(pid: int) -> bool:
    """Whether child ``pid`` has exited (and is collected now, or was already)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # collected already
        return True
    return done != 0


def widen_pipe(fd: int, size: int) -> None:
    """Give a pipe ``size`` bytes of room where the kernel allows (64 KiB by default)."""
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)


def die_with_parent(parent: int) -> None:  # pragma: no cover - runs in the child
    """Be killed when ``parent`` dies (PR_SET_PDEATHSIG); exit now if it is already gone."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before that took effect
        os._exit(1)


def close_inherited(keep: tuple[int, ...]) -> None:  # pragma: no cover - runs in the child
    """Close every file descriptor but stdin, stdout, stderr and ``keep``: the parent's sockets
    and pipes are not the child's to keep open (a connection the parent closes must close)."""
    try:
        fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):  # e.g. the directory listdir had open
                os.close(fd)


def _uses_tls(nc: Any) -> bool:
    """Whether ``nc`` speaks TLS to its server: the server requires it, or the handshake
    comes first (when nats-py makes its TLS connection)."""
    info = getattr(nc, "_server_info", None) or {}
    return bool(info.get("tls_required") or nc.options.get("tls_handshake_first"))


def _tls_name(opts: dict[str, Any], srv: Any) -> str | None:
    """The name nats-py checks ``srv``'s certificate against (its ``_process_connect_init``)."""
    name = opts.get("tls_hostname") or getattr(srv, "tls_name", None) or srv.uri.hostname
    return str(name) if name is not None else None


def connect_options(conn: Connection, role: str = "catchup") -> dict[str, Any]:
    """What a forked child passes to ``nats.connect`` to reach the same servers as ``conn`` —
    the one ``conn`` is connected to first — with the same identity (user and password, token,
    credentials file or nkey seed, TLS and the name its certificates are checked against,
    inbox prefix), named ``<conn's name>-<role>``. No reconnects: a child that loses its
    connection ends, and the caller goes on (the catch-up reader, journal/catchup.py; the
    snapshot uploader, journal/snapshot_upload.py)."""
    nc = conn.nc
    opts = nc.options
    pool = list(getattr(nc, "_server_pool", []))
    # The server ``conn`` is connected to first, and in this order: without reconnects nats-py
    # stops at the first server whose handshake fails (it goes on only past a refused TCP
    # connection), and it shuffles the list unless told not to — a child of a service that
    # lists a server refusing its identity (a cluster part-way through a change of
    # credentials) failed on it at random, and left its work to the service (review h120).
    current = getattr(nc, "_current_server", None)
    if current is not None:
        pool = [current, *(s for s in pool if s is not current)]
    tls_name = None
    if current is not None and _uses_tls(nc):
        # The name the server's certificate is checked against, as nats-py checks it: a
        # server discovered in the cluster's INFO by its address is checked against the
        # name of the server the address was learnt from (``Srv.tls_name``), which the URL
        # alone does not carry — the child checked the address and failed on a certificate
        # made for the name (review h125). One name for the child's whole list (nats-py's
        # ``tls_hostname``): the servers known by another go.
        tls_name = _tls_name(opts, current)
        pool = [s for s in pool if _tls_name(opts, s) == tls_name]
    servers = list(dict.fromkeys(s.uri.geturl() for s in pool))
    kwargs: dict[str, Any] = {
        "servers": servers or ["nats://127.0.0.1:4222"],
        "name": f"{opts.get('name') or 'netledger'}-{role}",
        "connect_timeout": opts.get("connect_timeout", 2.0),
        "allow_reconnect": False,
        "max_reconnect_attempts": 0,
        "dont_randomize": True,
    }
    for key in ("user", "password", "token", "tls", "tls_hostname", "tls_handshake_first"):
        if opts.get(key) is not None:
            kwargs[key] = opts[key]
    if tls_name is not None:
        kwargs["tls_hostname"] = tls_name
    for attr, key in (
        ("_user_credentials", "user_credentials"),
        ("_nkeys_seed", "nkeys_seed"),
        ("_nkeys_seed_str", "nkeys_seed_str"),
    ):
        value = getattr(nc, attr, None)
        if value is not None:
            kwargs[key] = value
    prefix = bytes(getattr(nc, "_inbox_prefix", b"") or b"")
    if prefix and prefix != b"_INBOX":
        kwargs["inbox_prefix"] = prefix.decode()
    return kwargs
