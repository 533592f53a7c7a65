"""DHCP: one dnsmasq per served bridge, its hosts file written from the log.

Pure part: the command line of a dnsmasq (:func:`dnsmasq_argv`), its hosts file
(:func:`render_hosts`), the fold of this host's DHCP events (:class:`DhcpBook`) and the plan
(:func:`plan`: start / reload / stop). I/O part: :class:`Dnsmasq` reads what runs and applies
the plan.

Ownership: a dnsmasq is ours when the pid file ``<state dir>/<bridge>.pid`` names a live
process whose command line is dnsmasq's with ``--pid-file=`` that very file. Nothing else is
ever signalled. dnsmasq daemonizes (it is not the executor's child), so it survives an executor
restart — or ``--once`` — and is adopted by the next run, as nova's dnsmasq survived
nova-network restarts. A dnsmasq that died is started again by the next pass (drift).

The lease script (``--dhcp-script``) is a small shell wrapper calling ``netledger dhcp-event``:
every lease and release becomes a command, then an event (what nova-dhcpbridge did).

The host entries are a directory, one file per entry (executor/hostsdir.py): an entry added is
read by dnsmasq without a SIGHUP, which would run the lease script for every lease it holds.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from netledger.events.codec import Envelope
from netledger.events.host_events import (
    HostDhcpReloaded,
    HostDhcpStarted,
    HostDhcpStopped,
    HostEvent,
)

from . import hostsdir, leasemarks, proc
from .hostsdir import write_atomic
from .kernel import OpResult
from .leasefile import stale_leases, stale_leases6
from .model import (
    ROUTER_LINK_LOCAL,
    DhcpSpec,
    DhcpState,
    DhcpSubnet,
    HostActual,
    Op,
    ReloadDhcp,
    StartDhcp,
    StopDhcp,
)
from .netlink import netns_path

#: The wrapper dnsmasq runs on every lease change (one per state dir).
SCRIPT_NAME = "dhcp-script"
#: With ``--netns``: a handle on the executor's own network namespace (a bind mount), where
#: NATS is reachable; the lease script runs ``netledger`` there (dnsmasq runs in the host's).
HANDLE_NAME = "executor.netns"
#: Seconds a stopping dnsmasq gets between SIGTERM and SIGKILL.
STOP_GRACE = 5.0

log = logging.getLogger("netledger.executor")


@dataclass(frozen=True)
class DhcpPaths:
    """Where a host's dnsmasq files live (``--state-dir``) and which dnsmasq runs."""

    state_dir: str
    dnsmasq: str = "/usr/sbin/dnsmasq"

    def file(self, bridge: str, kind: str) -> str:
        return os.path.join(self.state_dir, f"{bridge}.{kind}")

    @property
    def script(self) -> str:
        return os.path.join(self.state_dir, SCRIPT_NAME)

    @property
    def handle(self) -> str:
        return os.path.join(self.state_dir, HANDLE_NAME)

    @property
    def marks(self) -> str:
        """The lease script's record of the leases reported (executor/leasemarks.py)."""
        return os.path.join(self.state_dir, leasemarks.DIR)


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


def default_state_dir(host: str, netns: str | None) -> str:
    # Per namespace too: two executors for the same host name in two namespaces (tests, a
    # host rebuilt under a new namespace) must never adopt each other's dnsmasq.
    return f"/run/netledger/{host}" if netns is None else f"/run/netledger/{netns}/{host}"


# --- pure -----------------------------------------------------------------------------------


def host_entries(spec: DhcpSpec) -> list[str]:
    """The dhcp-host entries of ``spec`` (hostsdir.entry): ``<mac>,<hostname>,<ipv4>``, the
    DHCPv6 address in brackets after it (or alone on an IPv6-only network)."""
    return [hostsdir.entry(h) for h in spec.hosts]


def render_hosts(spec: DhcpSpec) -> str:
    """The entries one per line, as a hosts file would hold them (shown, compared)."""
    return "".join(f"{e}\n" for e in host_entries(spec))


def hosts_digest(spec: DhcpSpec) -> str:
    return hostsdir.entries_digest(host_entries(spec))


def dnsmasq_argv(spec: DhcpSpec, paths: DhcpPaths) -> tuple[str, ...]:
    """dnsmasq's own command line (what ``/proc/<pid>/cmdline`` shows once it runs).

    Each network of the bridge is a tagged static range, so router, DNS and MTU options go to
    the right subnet when flat networks share a bridge. ``--dhcp-lease-max`` is the size of the
    networks: dnsmasq's default cap (1000) was one of nova's lease pain points.

    IPv6 (a network serving it): ``--enable-ra`` sends router advertisements for the /64 from
    the bridge's only link-local address, the router's ``fe80::1``. In ``slaac`` mode the range
    is ``ra-only`` (the prefix with the autonomous flag: instances make their address from
    their MAC, EUI-64, as nova's rfc2462 backend); in ``dhcpv6`` mode it is a static DHCPv6
    range (the advertisement carries the managed flag, no autonomous one) and dnsmasq hands
    out only the hosts file's bracketed addresses. An IPv4-only network's line is as before.
    """
    f = paths.file
    argv = [
        paths.dnsmasq,
        "--conf-file=/dev/null",  # nothing from /etc/dnsmasq.conf or /etc/dnsmasq.d
        "--strict-order",
        "--bind-interfaces",
        f"--interface={spec.bridge}",
        "--except-interface=lo",
    ]
    argv += [f"--listen-address={s.gateway}" for s in spec.subnets if s.gateway is not None]
    argv += [f"--listen-address={s.gateway6}" for s in spec.subnets if s.gateway6 is not None]
    argv += [
        f"--pid-file={f(spec.bridge, 'pid')}",
        f"--dhcp-hostsdir={f(spec.bridge, hostsdir.KIND)}",
        f"--dhcp-leasefile={f(spec.bridge, 'leases')}",
        f"--dhcp-script={paths.script}",
        "--script-on-renewal",
        f"--dhcp-lease-max={sum(s.size for s in spec.subnets)}",
    ]
    for s in spec.subnets:
        tag = f"net{s.network_id}"
        if s.gateway is not None:
            argv.append(
                f"--dhcp-range=set:{tag},{s.dhcp_start},static,{s.netmask},{spec.lease_time}s"
            )
            argv.append(f"--dhcp-option=tag:{tag},3,{s.gateway}")
            if s.dns:
                argv.append(f"--dhcp-option=tag:{tag},6,{','.join(s.dns)}")
            if s.mtu:
                argv.append(f"--dhcp-option-force=tag:{tag},26,{s.mtu}")
        argv += _v6_args(spec, s, tag)
    v6 = [s for s in spec.subnets if s.prefix6 is not None]
    if v6:
        argv.append("--enable-ra")
        mtu = next((s.mtu for s in v6 if s.mtu), None)
        if mtu:
            # the MTU option of the advertisements (interval 0: dnsmasq's default)
            argv.append(f"--ra-param={spec.bridge},mtu:{mtu},0")
    argv += ["--no-resolv", "--no-hosts", f"--log-facility={f(spec.bridge, 'log')}"]
    return tuple(argv)


def _v6_args(spec: DhcpSpec, s: DhcpSubnet, tag: str) -> list[str]:
    if s.prefix6 is None:
        return []
    net, plen = s.prefix6.split("/")
    kind = "static" if s.mode6 == "dhcpv6" else "ra-only"
    out = [f"--dhcp-range=set:{tag},{net},{kind},{plen},{spec.lease_time}s"]
    if s.dns6:
        servers = ",".join(f"[{d}]" for d in s.dns6)
        out.append(f"--dhcp-option=tag:{tag},option6:dns-server,{servers}")
    return out


def gateways(spec: DhcpSpec) -> set[tuple[str, str]]:
    """The (bridge, address) dnsmasq needs on the host before it can start: every IPv4
    gateway it listens on, and for IPv6 the gateway and the router's link-local (the source
    of its advertisements)."""
    out: set[tuple[str, str]] = set()
    for s in spec.subnets:
        if s.gateway is not None:
            out.add((spec.bridge, s.gateway))
        if s.gateway6 is not None:
            out.add((spec.bridge, s.gateway6))
            out.add((spec.bridge, ROUTER_LINK_LOCAL.split("/")[0]))
    return out


def script_text(
    command: Sequence[str],
    env: Mapping[str, str] | None = None,
    netns_handle: str | None = None,
    marks: str | None = None,
) -> str:
    """The lease script: ``<command> dhcp-event ACTION MAC IP [HOSTNAME]``.

    dnsmasq (and so its script) runs in the host's namespace; with ``netns_handle`` the
    command runs in the executor's namespace instead, where the NATS URL is valid. With
    ``marks`` (:attr:`DhcpPaths.marks`) an ``old`` event already reported ends in the shell,
    no ``netledger`` process (executor/leasemarks.py)."""
    lines = [
        "#!/bin/sh",
        "# dnsmasq's --dhcp-script, written by the netledger executor: leases (add/old) and",
        "# releases (del) become fixed_ip.lease / fixed_ip.release commands, then events.",
    ]
    for k, v in sorted((env or {}).items()):
        lines.append(f"{k}={shlex.quote(v)}; export {k}")
    prefix = ["nsenter", f"--net={netns_handle}", "--"] if netns_handle else []
    call = f"{shlex.join([*prefix, *command])} dhcp-event"
    if marks is not None:
        lines += leasemarks.script_lines(call, marks)
    lines.append(f'exec {call} "$@"')
    return "\n".join(lines) + "\n"


@dataclass
class DhcpBook:
    """The fold of this host's DHCP events: which bridges the log says have a dnsmasq, and the
    digest of the hosts file it last loaded."""

    me: str
    running: dict[str, str] = field(default_factory=dict)  # bridge -> hosts digest
    network: dict[str, str | None] = field(default_factory=dict)  # bridge -> network id

    def apply(self, env: Envelope) -> None:
        ev = env.event
        if isinstance(ev, HostDhcpStarted | HostDhcpReloaded) and ev.host == self.me:
            self.running[ev.bridge] = ev.digest
            self.network[ev.bridge] = ev.network_id
        elif isinstance(ev, HostDhcpStopped) and ev.host == self.me:
            self.running.pop(ev.bridge, None)
            self.network.pop(ev.bridge, None)


def plan(
    desired: Iterable[DhcpSpec],
    actual: Iterable[DhcpState],
    argv_of: Callable[[DhcpSpec], tuple[str, ...]],
    recorded: Mapping[str, str],
    networks: Mapping[str, str | None] | None = None,
) -> tuple[Op, ...]:
    """What makes the dnsmasq processes match ``desired``. Pure.

    ``recorded`` is the log's view (bridge -> hosts digest, :class:`DhcpBook`): a desired
    dnsmasq found dead although recorded is a drift repair; a live one the log does not know
    is adopted (its hosts file rewritten and reloaded, so a crash between writing the file and
    SIGHUP cannot leave dnsmasq serving an old file); a recorded one that is gone and no longer
    desired is logged as found-gone.
    """
    want = {d.bridge: d for d in desired}
    have = {a.bridge: a for a in actual}
    networks = networks or {}
    ops: list[Op] = []
    for bridge in sorted((set(have) | set(recorded)) - set(want)):
        a = have.get(bridge)
        gone = a is None or (a.pid is None and a.hosts_digest is None)
        ops.append(
            StopDhcp(
                bridge=bridge,
                pid=a.pid if a is not None else None,
                network_id=networks.get(bridge),
                reason="found-gone" if gone else "stale",
            )
        )
    for bridge, spec in sorted(want.items()):
        a = have.get(bridge)
        drift = bridge in recorded
        if a is not None and a.pid is not None and (a.elsewhere or a.argv != argv_of(spec)):
            ops.append(StopDhcp(bridge, a.pid, spec.network_id, "replaced"))
            a, drift = None, False
        if a is None or a.pid is None:
            ops.append(StartDhcp(spec, drift=drift))
            continue
        d = hosts_digest(spec)
        if bridge not in recorded:
            ops.append(ReloadDhcp(spec, a.pid, "adopted"))
        elif recorded[bridge] != d:
            ops.append(ReloadDhcp(spec, a.pid, "hosts"))
        elif a.hosts_digest != d:
            ops.append(ReloadDhcp(spec, a.pid, "drift"))
    return tuple(ops)


# --- I/O ------------------------------------------------------------------------------------


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
        self._warned_release = False

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
            hosts = hostsdir.read_digest(self.paths.file(bridge, hostsdir.KIND))
            elsewhere = pid is not None and _netns_inode(f"/proc/{pid}/ns/net") != here
            out.append(
                DhcpState(
                    bridge=bridge,
                    pid=pid,
                    argv=argv,
                    hosts_digest=hosts,
                    elsewhere=elsewhere,
                )
            )
        return tuple(out)

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
        (``running``, ``networks``: :class:`DhcpBook`'s); nothing done (the periodic sweep
        only looks: executor/sweep.py)."""
        actual = self.read(bridges)
        if bridges is not None:
            running = {b: d for b, d in running.items() if b in bridges}
        ops = plan(desired, actual, self.argv, running, networks)
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
                    # Replaced (a changed command line): the new dnsmasq reads the leases
                    # file on, or it knows no lease and never reports a held address's
                    # release (review hrev9).
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
            argv = ["ip", "netns", "exec", self.netns, *argv]
        # dnsmasq daemonizes: the command returns once it serves (or failed, with a message).
        # stderr goes to a file, not a pipe, so a daemon holding it cannot block us.
        with tempfile.TemporaryFile() as err:
            try:
                p = proc.run(
                    argv,
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

    def _reload(self, spec: DhcpSpec, pid: int, reason: str = "hosts") -> int:
        """Entries added are read by dnsmasq from the directory, no signal. SIGHUP only when
        it must forget some (taken out, or changed: a new name) — it then runs the lease
        script for every lease — or when what it read is not known (``drift``, ``adopted``)."""
        path = self.paths.file(spec.bridge, hostsdir.KIND)
        forget = hostsdir.sync(path, host_entries(spec), marks=self.paths.marks)
        if not self._ours(spec.bridge, pid):
            raise DhcpFailed(f"dnsmasq {pid} of {spec.bridge} is gone")
        if forget or reason != "hosts":
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

    def _stop(self, bridge: str, pid: int | None, keep_leases: bool = False) -> None:
        if pid is not None and self._ours(bridge, pid):
            os.kill(pid, signal.SIGTERM)
            if not _wait_gone(pid, STOP_GRACE):
                if self._ours(bridge, pid):
                    os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, STOP_GRACE)
        for kind in ("pid", "hosts", "log") if keep_leases else ("pid", "hosts", "leases", "log"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.paths.file(bridge, kind))
        if keep_leases:
            # Replaced: the next dnsmasq reads the leases on (their marks hold) and the
            # entries too; its start takes out, and unmarks, those no longer wanted.
            return
        hostsdir.drop(self.paths.file(bridge, hostsdir.KIND), self.paths.marks)


def dhcp_events(host: str, done: Iterable[tuple[OpResult, int | None]]) -> list[HostEvent]:
    """The host events of applied DHCP operations (failures become HostApplyFailed upstream)."""
    out: list[HostEvent] = []
    for r, pid in done:
        op = r.op
        if not r.ok:
            continue
        if isinstance(op, StartDhcp):
            s = op.spec
            out.append(
                HostDhcpStarted(
                    host=host,
                    bridge=s.bridge,
                    network_id=s.network_id,
                    pid=pid,
                    hosts=len(s.hosts),
                    digest=hosts_digest(s),
                    drift=op.drift,
                )
            )
        elif isinstance(op, ReloadDhcp):
            s = op.spec
            out.append(
                HostDhcpReloaded(
                    host=host,
                    bridge=s.bridge,
                    network_id=s.network_id,
                    pid=pid,
                    hosts=len(s.hosts),
                    digest=hosts_digest(s),
                    reason=op.reason,
                )
            )
        elif isinstance(op, StopDhcp):
            out.append(
                HostDhcpStopped(
                    host=host,
                    bridge=op.bridge,
                    network_id=op.network_id,
                    pid=op.pid,
                    reason=op.reason,
                )
            )
    return out


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
