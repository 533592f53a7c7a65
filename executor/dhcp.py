"""DHCP: one dnsmasq per served bridge, its host entries written from the log — the I/O.

What each dnsmasq should be, the log's record of them and the plan (start / reload / stop) are
pure, in executor/dhcpplan.py; here :class:`Dnsmasq` reads what runs and applies the plan.
The executor's other modules and the CLI import the DHCP names from here (``__all__``).

Ownership: a dnsmasq is ours when the pid file ``<state dir>/<bridge>.pid`` names a live
process whose command line is dnsmasq's with ``--pid-file=`` that very file. Nothing else is
ever signalled. dnsmasq daemonizes (it is not the executor's child), so it survives an executor
restart — or ``--once`` — and is adopted by the next run, as nova's dnsmasq survived
nova-network restarts. A dnsmasq that died is started again by the next pass (drift).

The lease script (``--dhcp-script``) is a small shell wrapper calling ``netledger dhcp-event``:
every lease and release becomes a command, then an event (what nova-dhcpbridge did). dnsmasq,
and so the script, runs with a constant minimal environment (:func:`dhcpplan.dnsmasq_env`: a
fixed PATH, nothing of the executor's, which holds its settings and credentials); what the
script needs is written in it. A running dnsmasq's environment is read too
(``/proc/<pid>/environ``: the kept variables, the others' names only) and one that is not that
one is replaced (:func:`dhcpplan.env_fits`): being a constant, two executors of the host whose
own environments differ (a unit's daemon, an operator's ``--once``) adopt each other's.

The host entries are a directory, one file per entry (executor/hostsdir.py): an entry added is
read by dnsmasq without a SIGHUP, which would run the lease script for every lease it holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence

from . import hostsdir, leasemarks, proc
from .dhcpplan import (
    DhcpBook,
    DhcpPaths,
    default_state_dir,
    dhcp_events,
    dnsmasq_argv,
    dnsmasq_env,
    environ_found,
    gateways,
    host_entries,
    hosts_digest,
    plan,
    render_hosts,
    script_text,
)
from .dhcpreloads import Rereads
from .hostsdir import write_atomic
from .kernel import OpResult
from .leasefile import stale_leases, stale_leases6
from .model import DhcpSpec, DhcpState, HostActual, Op, ReloadDhcp, StartDhcp, StopDhcp
from .netlink import netns_path

# What the executor's other modules, its CLI and the tests import from here (most are defined
# in executor/dhcpplan.py).
__all__ = [
    "DhcpBook",
    "DhcpFailed",
    "DhcpPaths",
    "Dnsmasq",
    "default_state_dir",
    "dhcp_events",
    "dnsmasq_argv",
    "gateways",
    "host_entries",
    "hosts_digest",
    "plan",
    "render_hosts",
    "script_text",
    "stale_leases",
]

#: Seconds a stopping dnsmasq gets between SIGTERM and SIGKILL.
STOP_GRACE = 5.0

#: Bytes of dnsmasq's log (``DIR/BR.log``) past which the executor's next look (a pass, a
#: periodic sweep) rotates it: the log moves to ``DIR/BR.log.old`` (the one before dropped) and
#: dnsmasq reopens a new one (SIGUSR2), so a bridge's logs hold at most about twice this. The
#: state dir is in RAM by default (/run) and dnsmasq never trims its log; what it still writes
#: (its errors, the lease script's, a line per lease and release: ``--quiet-dhcp``) grows with
#: time too when something keeps failing: a client no entry names asking again and again, a
#: lease script failing at each renewal while NATS is away (review hrev83).
LOG_CAP = 256 * 1024
#: the previous log, kept beside the log by :meth:`Dnsmasq._cap_log` (``DIR/BR.log.old``),
#: and the next one while it is made (``DIR/BR.log.new``)
OLD_LOG, NEW_LOG, LOG_LOCK = "log.old", "log.new", "log.lock"

log = logging.getLogger("netledger.executor")


def unreachable_by_others(path: str) -> str | None:
    """The first folder on the way to ``path`` that a user other than its owner cannot pass
    (no ``x`` for others): dnsmasq, which drops root, cannot open files below it."""
    p = os.path.abspath(path)
    parts = []
    while True:
        parts.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    for folder in reversed(parts):
        try:
            mode = os.stat(folder).st_mode
        except OSError:
            return None  # not made yet: made 0755 by _prepare
        if not mode & stat.S_IXOTH:
            return folder
    return None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def _proc_state(pid: int) -> bytes | None:
    """The state letter of ``pid`` in /proc (``R``, ``S``, ``Z``...); None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _cmdline(pid: int) -> tuple[str, ...]:
    if _proc_state(pid) in (None, b"Z"):
        return ()  # gone, or a zombie: dead, only not yet reaped
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return ()
    return tuple(a.decode(errors="replace") for a in raw.split(b"\0")[:-1])


def _environ(pid: int) -> bytes | None:
    """``pid``'s environment as it was started (None: gone, or not ours to read)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return fh.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def _netns_inode(path: str) -> tuple[int, int] | None:
    """A network namespace's identity (nsfs device and inode) through any path naming it."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class Dnsmasq:
    """This host's dnsmasq processes (in ``netns`` when given)."""

    def __init__(self, paths: DhcpPaths, netns: str | None, script: str) -> None:
        self.paths = paths
        self.netns = netns
        self.script = script
        #: what dnsmasq (and so its lease script) runs with: started so, or replaced
        self.env = dnsmasq_env()
        self._warned_release = False
        #: entries each dnsmasq re-read at SIGHUPs: its memory grows with them
        self.rereads = Rereads()

    def argv(self, spec: DhcpSpec) -> tuple[str, ...]:
        return dnsmasq_argv(spec, self.paths)

    def _ours(self, bridge: str, pid: int) -> tuple[str, ...]:
        argv = _cmdline(pid)
        pidfile = f"--pid-file={self.paths.file(bridge, 'pid')}"
        if argv and os.path.basename(argv[0]) == "dnsmasq" and pidfile in argv:
            return argv
        return ()

    def _running(self, bridge: str) -> tuple[int | None, tuple[str, ...]]:
        """The pid and command line of the bridge's dnsmasq (None: dead, or the pid reused by
        a process that is not ours)."""
        raw = _read(self.paths.file(bridge, "pid"))
        if raw is None or not raw.strip().isdigit():
            return None, ()
        pid = int(raw.strip())
        argv = self._ours(bridge, pid)
        return (pid, argv) if argv else (None, ())

    def read(self, only: set[str] | None = None) -> tuple[DhcpState, ...]:
        try:
            names = os.listdir(self.paths.state_dir)
        except FileNotFoundError:
            return ()
        # A bridge of ours: its host entries, written before any start (``.hosts``: the hosts
        # file of a dnsmasq started before the directory, replaced), or a pid file naming a
        # dnsmasq of ours. Not any pid file: a state dir shared with other programs (/run)
        # holds theirs, and a dnsmasq "found gone" has its files deleted (found by review).
        kinds = (f".{hostsdir.KIND}", ".hosts")
        bridges = {n.rsplit(".", 1)[0] for n in names if n.endswith(kinds)}
        pids = {n.rsplit(".", 1)[0] for n in names if n.endswith(".pid")} - bridges
        if only is not None:
            bridges &= only
            pids &= only
        running = {b: self._running(b) for b in pids}
        bridges |= {b for b, (pid, _) in running.items() if pid is not None}
        here = _netns_inode(netns_path(self.netns) if self.netns else "/proc/self/ns/net")
        out = []
        for bridge in sorted(bridges):
            pid, argv = running[bridge] if bridge in running else self._running(bridge)
            argv = self._same_program(argv)
            hosts = hostsdir.read_digest(self.paths.file(bridge, hostsdir.KIND))
            elsewhere = pid is not None and _netns_inode(f"/proc/{pid}/ns/net") != here
            raw = _environ(pid) if pid is not None else None
            env, others = environ_found(raw) if raw is not None else (None, ())
            out.append(
                DhcpState(
                    bridge=bridge,
                    pid=pid,
                    argv=argv,
                    hosts_digest=hosts,
                    elsewhere=elsewhere,
                    env=env,
                    env_others=others,
                )
            )
        return tuple(out)

    def _same_program(self, argv: tuple[str, ...]) -> tuple[str, ...]:
        """``argv`` with dnsmasq named as :attr:`DhcpPaths.dnsmasq` names it when both name one
        file: a dnsmasq started as ``/sbin/dnsmasq`` (an executor whose PATH listed /sbin
        before /usr/sbin, where /sbin links to /usr/sbin) is the program ``/usr/sbin/dnsmasq``
        would start, not a changed command line to replace (which every dnsmasq of the host
        was, at each run of an executor finding the other name)."""
        if not argv or argv[0] == self.paths.dnsmasq:
            return argv
        if os.path.realpath(argv[0]) != os.path.realpath(self.paths.dnsmasq):
            return argv
        return (self.paths.dnsmasq, *argv[1:])

    def reconcile(
        self,
        desired: Sequence[DhcpSpec],
        kernel: HostActual,
        book: DhcpBook,
        bridges: set[str] | None = None,
    ) -> list[tuple[OpResult, int | None]]:
        """Plan against what runs and apply. A bridge whose gateway address is not in the
        kernel (yet) is left as it is: dnsmasq could not bind it; the next pass retries. With
        ``bridges``, only those are looked at (an incremental pass: ``desired`` holds theirs)."""
        if desired:
            # Keep the lease script current (NATS URL, credentials) even when dnsmasq runs on
            # untouched: it reads the script afresh on every lease. A failure here fails the
            # starts below, which report it.
            with contextlib.suppress(OSError, DhcpFailed):
                self._prepare()
        return self.apply(self.planned(desired, kernel, book.running, book.network, bridges))

    def planned(
        self,
        desired: Sequence[DhcpSpec],
        kernel: HostActual,
        running: Mapping[str, str],
        networks: Mapping[str, str | None],
        bridges: set[str] | None = None,
    ) -> tuple[Op, ...]:
        """What :meth:`reconcile` would do, from what runs now and the log's record
        (``running``, ``networks``: :class:`DhcpBook`'s); nothing done to dnsmasq but its
        logs capped (:meth:`_cap_log`: the periodic sweep only looks, executor/sweep.py, and
        is what comes by on a host where nothing changes)."""
        actual = self.read(bridges)
        for a in actual:
            if a.pid is not None and not a.elsewhere:
                self._cap_log(a.bridge, a.pid)
        if bridges is not None:
            running = {b: d for b, d in running.items() if b in bridges}
        ops = plan(desired, actual, self.argv, running, networks, self.env)
        present = {(a.interface, a.address.split("/")[0]) for a in kernel.addresses}
        ready = {s.bridge for s in desired if gateways(s) <= present}
        return tuple(
            op
            for op in ops
            if not isinstance(op, StartDhcp | ReloadDhcp) or op.spec.bridge in ready
        )

    def apply(self, ops: Iterable[Op]) -> list[tuple[OpResult, int | None]]:
        """Apply each op; (result, pid of the dnsmasq afterwards) in order."""
        out: list[tuple[OpResult, int | None]] = []
        for op in ops:
            try:
                if isinstance(op, StartDhcp):
                    pid = self._start(op.spec)
                elif isinstance(op, ReloadDhcp):
                    pid = self._reload(op.spec, op.pid, op.reason)
                elif isinstance(op, StopDhcp):
                    # Replaced (a changed command line or environment): the new dnsmasq
                    # reads the leases file on, or it knows no lease and never reports a
                    # held address's release (review hrev9).
                    self._stop(op.bridge, op.pid, keep_leases=op.reason == "replaced")
                    pid = None
                else:
                    raise TypeError(f"not a DHCP operation: {op!r}")
            except DhcpFailed as exc:
                out.append((OpResult(op, error=str(exc)), None))
            except OSError as exc:
                out.append((OpResult(op, errno=exc.errno or 0, error=str(exc)), None))
            else:
                out.append((OpResult(op), pid))
        return out

    def _prepare(self) -> None:
        d = self.paths.state_dir
        os.makedirs(d, mode=0o755, exist_ok=True)
        st = os.stat(d)
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o022 or st.st_uid != os.geteuid():
            # dnsmasq runs the lease script written here as root, and serves the host entries
            # written here: a folder others may write to (``--state-dir /tmp``) would let them
            # plant either. Refused, and left as it is (it was chmod 0755'd: /tmp lost its
            # sticky bit and its world-write; found by review).
            raise DhcpFailed(
                f"the DHCP state dir {d} is writable by others than its owner or not the"
                f" executor's own (mode {mode:04o}, owner uid {st.st_uid}): dnsmasq runs the"
                " lease script kept there as root. Give the executor a --state-dir of its own"
                " (the default is under /run/netledger)"
            )
        if mode & 0o055 != 0o055:
            # Readable by dnsmasq after it drops root (it reads the host entries in it).
            os.chmod(d, mode | 0o055)
        closed = unreachable_by_others(d)
        if closed is not None:
            mode = stat.S_IMODE(os.stat(closed).st_mode)
            raise DhcpFailed(
                f"dnsmasq drops root to user nobody and could not read its hosts file in {d}:"
                f" {closed} is mode {mode:04o} (not searchable by others). Fix: chmod o+x"
                f" {closed}, or give the executor a --state-dir under /run"
            )
        if self.netns:
            self._pin_own_netns()
        # root only, as the script that writes it (dnsmasq runs it as root)
        os.makedirs(self.paths.marks, mode=0o700, exist_ok=True)
        if _read(self.paths.script) != self.script:
            # Root only: it may carry NATS credentials; dnsmasq runs it as root.
            write_atomic(self.paths.script, self.script, 0o700)

    def _pin_own_netns(self) -> None:
        """Bind-mount the executor's network namespace at ``paths.handle`` (once)."""
        handle = self.paths.handle
        own = _netns_inode(f"/proc/{os.getpid()}/ns/net")
        if _netns_inode(handle) == own:
            return
        try:
            proc.run(["umount", handle], capture_output=True, timeout=30)
            with open(handle, "a"):
                pass
            p = proc.run(
                ["mount", "--bind", f"/proc/{os.getpid()}/ns/net", handle],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except subprocess.TimeoutExpired as exc:
            raise DhcpFailed(f"{' '.join(exc.cmd)} did not finish within 30s") from None
        if p.returncode != 0:
            raise DhcpFailed(f"cannot pin the executor's namespace at {handle}: {p.stderr}")

    def _start(self, spec: DhcpSpec) -> int | None:
        self._prepare()
        self.rereads.stopped(spec.bridge)  # (a dnsmasq found gone: the new one counts afresh)
        hostsdir.sync(
            self.paths.file(spec.bridge, hostsdir.KIND),
            host_entries(spec),
            fresh=True,
            marks=self.paths.marks,
        )
        pidfile = self.paths.file(spec.bridge, "pid")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pidfile)
        if not os.path.exists(self.paths.dnsmasq):
            raise DhcpFailed(f"{self.paths.dnsmasq} not found (install Debian's dnsmasq)")
        argv = list(self.argv(spec))
        if self.netns:
            # found on the executor's PATH: dnsmasq's (self.env, which names the program
            # otherwise) is a fixed one
            argv = [shutil.which("ip") or "ip", "netns", "exec", self.netns, *argv]
        # dnsmasq daemonizes: the command returns once it serves (or failed, with a message).
        # stderr goes to a file, not a pipe, so a daemon holding it cannot block us.
        with tempfile.TemporaryFile() as err:
            try:
                p = proc.run(
                    argv,
                    env=self.env,  # dnsmasq's and its lease script's
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    timeout=60,
                )
            except subprocess.TimeoutExpired:
                raise DhcpFailed("dnsmasq did not start within 60s") from None
            err.seek(0)
            msg = err.read().decode(errors="replace").strip()
        if p.returncode != 0:
            raise DhcpFailed(f"dnsmasq exited with {p.returncode}: {msg}")
        raw = _read(pidfile)
        self._release_stale(spec)  # (it read the leases file on: a lease freed meanwhile too)
        return int(raw.strip()) if raw and raw.strip().isdigit() else None

    def _reload(self, spec: DhcpSpec, pid: int, reason: str = "hosts") -> int | None:
        """Entries added are read by dnsmasq from the directory, no signal. SIGHUP only when
        it must forget some (taken out, or changed: a new name) — it then runs the lease
        script for every lease — or when what it read is not known (``drift``, ``adopted``).
        A dnsmasq that re-read too many entries at SIGHUPs is replaced instead: each one
        leaves it memory it never frees (executor/dhcpreloads.py); the new pid is returned."""
        path = self.paths.file(spec.bridge, hostsdir.KIND)
        forget = hostsdir.sync(path, host_entries(spec), marks=self.paths.marks)
        if not self._ours(spec.bridge, pid):
            raise DhcpFailed(f"dnsmasq {pid} of {spec.bridge} is gone")
        if forget or reason != "hosts":
            if not self.rereads.reload(spec.bridge, pid, len(spec.hosts)):
                log.info(
                    "replacing dnsmasq %d of %s: %d entries re-read at SIGHUPs",
                    pid,
                    spec.bridge,
                    self.rereads.count(spec.bridge),
                )
                self._stop(spec.bridge, pid, keep_leases=True)
                return self._start(spec)  # (the entries taken out are forgotten there)
            os.kill(pid, signal.SIGHUP)
            hostsdir.forget(path)
        self._release_stale(spec)
        return pid

    def _release_stale(self, spec: DhcpSpec) -> None:
        """Have dnsmasq drop the leases no host entry gives any more (``dhcp_release``, as
        nova-network's ``release_dhcp``; ``dhcp_release6`` for DHCPv6): an address freed
        without its client's release (the reaper, a reclaim) kept the old client's lease — a
        day by default — and dnsmasq would not hand the address to the next instance allocated
        it (found by review). A lease still held (a deallocated address not yet released) keeps
        its entry, so it is not touched. dnsmasq runs the lease script's ``del`` for each: the
        service finds nothing to free."""
        text = _read(self.paths.file(spec.bridge, "leases")) or ""
        runs: list[list[str]] = []
        seen = functools.partial(leasemarks.client_mac, self.paths.marks)
        v4, v6 = stale_leases(text, spec), stale_leases6(text, spec, seen)
        if v4 and (tool := self._tool("dhcp_release")):
            runs += [[tool, spec.bridge, address, mac] for mac, address in v4]
        if v6 and (tool := self._tool("dhcp_release6")):
            for server, client, iaid, address in v6:
                ids = ["--client-id", client, "--server-id", server, "--iaid", iaid]
                runs.append([tool, "--iface", spec.bridge, "--ip", address, *ids])
        for argv in runs:
            if self.netns:
                argv = ["ip", "netns", "exec", self.netns, *argv]
            try:
                proc.run(argv, capture_output=True, timeout=10)
            except (OSError, subprocess.TimeoutExpired) as exc:  # the next reload tries again
                log.debug("%s: %s", shlex.join(argv), exc)

    def _tool(self, name: str) -> str | None:
        tool = shutil.which(name)
        if tool is None and not self._warned_release:
            self._warned_release = True
            log.warning(
                "%s not found (Debian's dnsmasq-utils): a lease of an address freed without"
                " its client's release stays until it expires, and dnsmasq will not hand that"
                " address to another client before",
                name,
            )
        return tool

    def _cap_log(self, bridge: str, pid: int) -> None:
        """Rotate the log of the bridge's dnsmasq ``pid`` once it is over :data:`LOG_CAP`:
        renamed to ``BR.log.old``, a new ``BR.log`` made as dnsmasq made the first (its owner
        and mode: dnsmasq reopens it after dropping root, in a folder it may not write to),
        and SIGUSR2, on which dnsmasq reopens its log. Nothing is lost: until it has, dnsmasq
        writes on in the renamed file. A failure leaves the log as it is (the next look tries
        again). One look at a time per bridge (``BR.log.lock``, flock: the periodic sweep looks
        from a worker thread beside the passes, and two executors of a host may look at once);
        a look finding another under way leaves it to that one — two at once moved the second's
        fresh log over the kept one (review hrev92)."""
        path = self.paths.file(bridge, "log")
        fresh = self.paths.file(bridge, NEW_LOG)
        try:
            lock = os.open(self.paths.file(bridge, LOG_LOCK), os.O_WRONLY | os.O_CREAT, 0o600)
        except OSError as exc:
            log.warning("cannot rotate %s: %s", path, exc)
            return
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another look is rotating it
            try:
                st = os.stat(path)
            except FileNotFoundError:
                # Renamed away and not made again (an executor stopped between the two renames):
                # dnsmasq, no longer root, cannot make it. Made as the kept one was.
                st = os.stat(self.paths.file(bridge, OLD_LOG))
                if not self._ours(bridge, pid):
                    return
                self._fresh_log(fresh, st)
                os.replace(fresh, path)
                os.kill(pid, signal.SIGUSR2)
                return
            if st.st_size <= LOG_CAP or not self._ours(bridge, pid):
                return
            # made first, under another name: a failure here leaves the log as it was
            self._fresh_log(fresh, st)
            os.replace(path, self.paths.file(bridge, OLD_LOG))
            os.replace(fresh, path)
            os.kill(pid, signal.SIGUSR2)
        except OSError as exc:
            log.warning("cannot rotate %s: %s", path, exc)
            with contextlib.suppress(OSError):
                os.unlink(fresh)
        finally:
            os.close(lock)  # (and its lock with it)

    @staticmethod
    def _fresh_log(fresh: str, like: os.stat_result) -> None:
        """An empty log file at ``fresh`` with ``like``'s owner and mode."""
        mode = stat.S_IMODE(like.st_mode)
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchown(fd, like.st_uid, like.st_gid)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)

    def _stop(self, bridge: str, pid: int | None, keep_leases: bool = False) -> None:
        self.rereads.stopped(bridge)
        if pid is not None and self._ours(bridge, pid):
            os.kill(pid, signal.SIGTERM)
            if not _wait_gone(pid, STOP_GRACE):
                if self._ours(bridge, pid):
                    os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, STOP_GRACE)
        kinds = ("pid", "hosts", "log", OLD_LOG, NEW_LOG, LOG_LOCK)
        for kind in kinds if keep_leases else (*kinds, "leases"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.paths.file(bridge, kind))
        if keep_leases:
            # Replaced: the next dnsmasq reads the leases on (their marks hold) and the
            # entries too; its start takes out, and unmarks, those no longer wanted.
            return
        hostsdir.drop(self.paths.file(bridge, hostsdir.KIND), self.paths.marks)


def _exited(pid: int) -> bool:
    """Whether ``pid`` has finished exiting: gone, or a zombie. Not :func:`_alive`: a process
    loses its command line (its memory) before its files on the way out, and a dnsmasq
    started in between found its old listening sockets still open ("Address already in use",
    a replaced dnsmasq failing to start now and then: found by the suite)."""
    return _proc_state(pid) in (None, b"Z", b"X")


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not _exited(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


class DhcpFailed(Exception):
    """A DHCP operation failed (reported as ``HostApplyFailed``; retried next pass)."""
