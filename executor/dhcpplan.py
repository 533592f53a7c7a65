"""DHCP, the pure part: what each dnsmasq of the host should be, the log's record of them, and
the plan that makes what runs match (executor/dhcp.py runs it).

- what a dnsmasq is: its files (:class:`DhcpPaths`), command line (:func:`dnsmasq_argv`), host
  entries (:func:`host_entries`, their digest) and the addresses it must find on the host
  before it starts (:func:`gateways`); the lease script it runs (:func:`script_text`) and the
  environment it runs with (:func:`dnsmasq_env`; a running one's, :func:`environ_found`);
- the log's record: the fold of this host's DHCP events (:class:`DhcpBook`) and the events of
  the operations applied (:func:`dhcp_events`), one the inverse of the other;
- :func:`plan`: start / reload / stop, from the desired state, what runs and the record.

No I/O here: executor/dhcp.py reads the processes and files and applies the plan.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from netledger.events.codec import Envelope
from netledger.events.host_events import (
    HostDhcpReloaded,
    HostDhcpStarted,
    HostDhcpStopped,
    HostEvent,
)

from . import hostsdir, leasemarks
from .kernel import OpResult
from .model import (
    ROUTER_LINK_LOCAL,
    DhcpSpec,
    DhcpState,
    DhcpSubnet,
    Op,
    ReloadDhcp,
    StartDhcp,
    StopDhcp,
)

#: The wrapper dnsmasq runs on every lease change (one per state dir).
SCRIPT_NAME = "dhcp-script"
#: With ``--netns``: a handle on the executor's own network namespace (a bind mount), where
#: NATS is reachable; the lease script runs ``netledger`` there (dnsmasq runs in the host's).
HANDLE_NAME = "executor.netns"


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


def default_state_dir(host: str, netns: str | None) -> str:
    # Per namespace too: two executors for the same host name in two namespaces (tests, a
    # host rebuilt under a new namespace) must never adopt each other's dnsmasq.
    return f"/run/netledger/{host}" if netns is None else f"/run/netledger/{netns}/{host}"


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
    # The log (DIR/BR.log, in RAM under /run) keeps dnsmasq's errors and the lease script's
    # failures, not each packet: a line per DHCP packet and router advertisement made it grow
    # with every renewal, for as long as the bridge is served (review hrev83). dnsmasq still
    # logs what goes wrong (an unknown client, a NAK, a script's exit status); the executor
    # caps the rest (executor/dhcp.py ``LOG_CAP``).
    argv += ["--quiet-dhcp", "--quiet-dhcp6", "--quiet-ra"]
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

    Everything it needs is in it: ``env`` (exported; the credentials, the host it speaks for,
    the CA of a ``tls://`` server) and its own ``PATH`` (:data:`SYSTEM_PATH`, for ``nsenter``,
    ``rm``, ``mv``; ``command`` names ``netledger`` by its absolute path), not dnsmasq's
    environment, which is the same for every executor (:func:`dnsmasq_env`).

    dnsmasq (and so its script) runs in the host's namespace; with ``netns_handle`` the
    command runs in the executor's namespace instead, where the NATS URL is valid. With
    ``marks`` (:attr:`DhcpPaths.marks`) an ``old`` event already reported ends in the shell,
    no ``netledger`` process (executor/leasemarks.py), and a renewal of a lease already
    reported runs it with its answer (stdout) thrown away (:func:`_renewal_lines`)."""
    lines = [
        "#!/bin/sh",
        "# dnsmasq's --dhcp-script, written by the netledger executor: leases (add/old) and",
        "# releases (del) become fixed_ip.lease / fixed_ip.release commands, then events.",
    ]
    for k, v in sorted({"PATH": SYSTEM_PATH, **(env or {})}.items()):
        lines.append(f"{k}={shlex.quote(v)}; export {k}")
    prefix = ["nsenter", f"--net={netns_handle}", "--"] if netns_handle else []
    call = f"{shlex.join([*prefix, *command])} dhcp-event"
    if marks is not None:
        lines += _renewal_lines(call)
        lines += leasemarks.script_lines(RENEWAL_AWARE, marks)
    lines.append(f'exec {call} "$@"')
    return "\n".join(lines) + "\n"


#: The lease script's function reporting a lease (:func:`_renewal_lines`), the command
#: leasemarks.script_lines runs.
RENEWAL_AWARE = "nl_report"


def _renewal_lines(call: str) -> list[str]:
    """The script's :data:`RENEWAL_AWARE` function: ``call "$@"``, its stdout thrown away for
    a renewal of a lease already reported — an ``old`` whose mark names the same client with
    another expiry (``nl_had``, read by leasemarks.script_lines: the mark, when it did not
    match). dnsmasq writes what its script prints to its log (DIR/BR.log): each renewal added
    ``<address> leased (<mac>)``, the same answer every half lease time for the life of the
    lease (review hrev83). What it prints on stderr (an error) and its exit status are logged
    as before; so is the answer of any other run (a new lease, a release, a lease reported
    afresh: no mark, or another client's)."""
    return [
        "# A renewal of a lease already reported (its mark: the same client, another expiry)",
        "# is reported, its answer not written to dnsmasq's log: the same line each renewal.",
        "nl_had=",
        f"{RENEWAL_AWARE}() {{",
        '  if [ "$1" = old ] && [ -n "$nl_had" ] && [ "${nl_had%% *}" = "$2" ]; then',
        f'    {call} "$@" >/dev/null',
        "  else",
        f'    {call} "$@"',
        "  fi",
        "}",
    ]


#: The PATH dnsmasq and its lease script run with, whatever the executor's: the usual system
#: one (a unit's default), so that two executors of one host — the unit's daemon and an
#: operator's ``--once`` from a shell — start dnsmasq alike and adopt each other's.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def dnsmasq_env() -> dict[str, str]:
    """The environment dnsmasq starts with: ``PATH`` (:data:`SYSTEM_PATH`) alone, a constant.

    dnsmasq hands its environment to every run of its lease script, and the executor's holds
    its own settings (``NATS_URL``, ``NETLEDGER_*``: a password, a credentials file's path)
    and whatever its unit or shell had: all of it was in dnsmasq's ``/proc/<pid>/environ`` and
    in each script run. The script carries what ``dhcp-event`` needs (:func:`script_text`:
    ``--config``, ``--nats``, ``--creds``, the user, password, inbox prefix and
    ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``, in the 0700 file); an executor variable that also
    changed ``dhcp-event`` (``NETLEDGER_COMMAND_TIMEOUT``, ``NETLEDGER_LOG_LEVEL``) no longer
    does: it is the executor's.

    Nothing of the executor's environment, not even its ``PATH`` or ``NETLEDGER_CONFIG``:
    a running dnsmasq is replaced when its environment is not this one (:func:`env_fits`),
    and one taken from the executor made executors of one host that differ there (a unit's
    daemon, an operator's ``--once``) replace each other's dnsmasq at every run."""
    return {"PATH": SYSTEM_PATH}


#: The variables whose values are read from a running dnsmasq's environment
#: (:func:`environ_found`): those :func:`dnsmasq_env` gives. Of the others only the names.
KEPT_ENV = tuple(dnsmasq_env())


def environ_found(raw: bytes) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """A process's environment (``/proc/<pid>/environ``) as :class:`DhcpState` holds it: its
    :data:`KEPT_ENV` variables (name, value) and the names of the others, both sorted. Never
    the others' values: a dnsmasq started before :func:`dnsmasq_env` holds the executor's
    password there. A name seen twice is counted among the others (the environment
    :func:`dnsmasq_env` gives has it once)."""
    kept: dict[str, str] = {}
    others: set[str] = set()
    for entry in raw.split(b"\0"):
        if not entry:
            continue
        name, _, value = entry.decode(errors="replace").partition("=")
        if name in KEPT_ENV and name not in kept:
            kept[name] = value
        else:
            others.add(name)
    return tuple(sorted(kept.items())), tuple(sorted(others))


def env_fits(found: DhcpState, want: Mapping[str, str] | None) -> bool:
    """Whether the dnsmasq ``found`` runs with the environment it would be started with now
    (``want``: :func:`dnsmasq_env`'s): the same kept variables with the same values, and no
    other. What was not read (``found.env`` None: /proc refused it) or with no ``want`` fits:
    a dnsmasq is not replaced on a guess."""
    if want is None or found.env is None:
        return True
    kept = tuple(sorted((k, v) for k, v in want.items() if k in KEPT_ENV))
    others = tuple(sorted(k for k in want if k not in KEPT_ENV))
    return found.env == kept and found.env_others == others


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
    env: Mapping[str, str] | None = None,
) -> tuple[Op, ...]:
    """What makes the dnsmasq processes match ``desired``. Pure.

    ``recorded`` is the log's view (bridge -> hosts digest, :class:`DhcpBook`): a desired
    dnsmasq found dead although recorded is a drift repair; a live one the log does not know
    is adopted (its hosts file rewritten and reloaded, so a crash between writing the file and
    SIGHUP cannot leave dnsmasq serving an old file); a recorded one that is gone and no longer
    desired is logged as found-gone.

    A live one is replaced (stopped, its leases kept, and started) when its command line is
    not ``argv_of``'s, it runs in another namespace, or its environment is not ``env`` (the
    one it would be started with, :func:`dnsmasq_env`'s; :func:`env_fits`): one started
    before that minimal environment kept the executor's whole one — its settings and
    credentials, handed to every lease script run. One that already fits is left running: an
    executor start restarts nothing, whatever the executor's own environment (``env`` is
    a constant).
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
        if (
            a is not None
            and a.pid is not None
            and (a.elsewhere or a.argv != argv_of(spec) or not env_fits(a, env))
        ):
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


def _loaded(
    host: str, s: DhcpSpec, pid: int | None
) -> tuple[str, str, str | None, int | None, int, str]:
    """What a dnsmasq started or reloaded with ``s`` says of itself: (host, bridge,
    network_id, pid, hosts, digest), the leading fields of HostDhcpStarted and
    HostDhcpReloaded alike."""
    return host, s.bridge, s.network_id, pid, len(s.hosts), hosts_digest(s)


def dhcp_events(host: str, done: Iterable[tuple[OpResult, int | None]]) -> list[HostEvent]:
    """The host events of applied DHCP operations (failures become HostApplyFailed upstream)."""
    out: list[HostEvent] = []
    for r, pid in done:
        op = r.op
        if not r.ok:
            continue
        if isinstance(op, StartDhcp):
            out.append(HostDhcpStarted(*_loaded(host, op.spec, pid), drift=op.drift))
        elif isinstance(op, ReloadDhcp):
            out.append(HostDhcpReloaded(*_loaded(host, op.spec, pid), reason=op.reason))
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
