"""Commands: what a client asks for, validated before anything is decided.

A request is a msgpack map sent to ``netledger.cmd.<name>``::

    {"command_id": "...", "actor": {"project": "p1", "role": "member"}, "args": {...}}

:func:`parse_command` turns it into a typed command or raises a :class:`ValidationError`
subclass naming the bad field. Nothing about the current state is checked here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

import netaddr

from .codec import Actor
from .errors import (
    InvalidAddress,
    InvalidCidr,
    InvalidField,
    InvalidMac,
    LimitExceeded,
    ReservedCommandId,
    UnknownCommand,
    ValidationError,
)
from .ids import check_id

MODES = ("flat", "flat_dhcp", "vlan", "vxlan")
#: How instances get their IPv6 address (docs/domain.md): EUI-64 from the MAC with router
#: advertisements (nova's rfc2462 backend), or the lowest free address by DHCPv6.
IPV6_MODES = ("slaac", "dhcpv6")
#: Every IPv6 network is one /64 (SLAAC needs exactly 64 bits of interface identifier).
V6_PREFIXLEN = 64
MIN_MTU_V6 = 1280
MAX_REQUEST_BYTES = 64 * 1024
MAX_LABEL = 128
MAX_NUM_NETWORKS = 4094
MAX_NETWORK_SIZE = 1 << 16
MIN_NETWORK_SIZE = 4
# nova's `network_size` flag: the size of each network when a create does not give one and the
# range split by the number of networks would give larger networks (nova-manage/os-networks).
DEFAULT_NETWORK_SIZE = 256
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")

COMMANDS: dict[str, type[Command]] = {}
#: The command ids reverts go under (events/revert.py ``command_id_for``: ``revert-<id>``,
#: ``revert-seq-N-M``): a revert is found by its id, so no other command may take one.
REVERT_ID_PREFIX = "revert-"
C = TypeVar("C", bound="type[Command]")


def command(cls: C) -> C:
    COMMANDS[cls.NAME] = cls
    return cls


@dataclass(frozen=True)
class Command:
    NAME: ClassVar[str] = ""
    ADMIN_ONLY: ClassVar[bool] = False
    READ_ONLY: ClassVar[bool] = False

    @classmethod
    def parse(cls, a: dict[str, Any]) -> Command:
        """Validate the ``args`` map of a request into this command."""
        raise NotImplementedError

    def own_command_id(self) -> str | None:
        """The one command id this command goes under (a revert's, derived from what it
        undoes), or None: any id the client chooses outside :data:`REVERT_ID_PREFIX`."""
        return None


# --- field checks ---------------------------------------------------------------------


def _str(
    args: dict[str, Any], name: str, *, required: bool = False, max_len: int = 255
) -> str | None:
    v = args.get(name)
    if v is None:
        if required:
            raise InvalidField(f"{name} is required", field=name)
        return None
    if not isinstance(v, str) or len(v) > max_len:
        raise InvalidField(f"{name} must be a string of at most {max_len} characters", field=name)
    return v


def _int(args: dict[str, Any], name: str, default: int | None, lo: int, hi: int) -> int | None:
    # An explicit nil means "not given", as for every other field (not a crash, not 0).
    v = args.get(name)
    if v is None:
        v = default
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool):
        raise InvalidField(f"{name} must be an integer", field=name)
    if not lo <= v <= hi:
        raise LimitExceeded(f"{name} must be between {lo} and {hi}, got {v}", field=name)
    return v


def _bool(args: dict[str, Any], name: str) -> bool:
    v = args.get(name)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise InvalidField(f"{name} must be true or false", field=name)
    return v


def _id(args: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    v = args.get(name)
    if v is None:
        if required:
            raise InvalidField(f"{name} is required", field=name)
        return None
    return check_id(v, name)


def _ifname(args: dict[str, Any], name: str) -> str | None:
    v = args.get(name)
    if v is None:
        return None
    if not isinstance(v, str) or not _IFNAME_RE.match(v):
        raise InvalidField(f"{name} must be an interface name of 1-15 characters", field=name)
    return v


def _address(args: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    v = _str(args, name, required=required, max_len=64)
    if v is None:
        return None
    try:
        return str(netaddr.IPAddress(v, flags=netaddr.INET_PTON))
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise InvalidAddress(f"{name} {v!r} is not an IP address", field=name) from None


def _cidr(
    args: dict[str, Any], name: str, *, required: bool = False, version: int = 4
) -> str | None:
    v = _str(args, name, required=required, max_len=64)
    if v is None:
        return None
    try:
        if "/" not in v:
            raise ValueError("no prefix length")
        net = netaddr.IPNetwork(v)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise InvalidCidr(f"{name} {v!r} is not a CIDR such as 10.0.0.0/16", field=name) from None
    if net.version != version:
        raise InvalidCidr(f"{name} {v!r} must be IPv{version}", field=name)
    if net.ip != net.network:
        raise InvalidCidr(f"{name} {v!r} has host bits set (did you mean {net.cidr}?)", field=name)
    special = _special_overlap(net)
    if special is not None:
        raise InvalidCidr(
            f"{name} {v!r} overlaps {special[0]} ({special[1]}): no instance can use it",
            field=name,
        )
    return str(net.cidr)


#: Ranges no network or floating pool can use (found by review: fe80::/64 made the IPv6
#: gateway fe80::1, the router's own link-local address on every serving bridge)
_SPECIAL = [
    (netaddr.IPNetwork(c), what)
    for c, what in (
        ("0.0.0.0/8", "'this network'"), ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"), ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved, and broadcast"), ("::/128", "the unspecified address"),
        ("::1/128", "loopback"), ("fe80::/10", "link-local"), ("ff00::/8", "multicast"),
    )
]  # fmt: skip


def _special_overlap(net: netaddr.IPNetwork) -> tuple[str, str] | None:
    for block, what in _SPECIAL:
        if block.version == net.version and net.first <= block.last and block.first <= net.last:
            return str(block), what
    return None


def _mac(args: dict[str, Any], name: str) -> str | None:
    v = _str(args, name, max_len=32)
    if v is None:
        return None
    v = v.lower()
    if not _MAC_RE.match(v):
        raise InvalidMac(f"{name} {v!r} is not a MAC address like 02:16:3e:00:00:01", field=name)
    if int(v[:2], 16) & 1:
        raise InvalidMac(f"{name} {v!r} is a multicast MAC", field=name)
    return v


# --- the commands ---------------------------------------------------------------------


@command
@dataclass(frozen=True)
class NetworkCreate(Command):
    NAME: ClassVar[str] = "network.create"
    ADMIN_ONLY: ClassVar[bool] = True
    label: str
    #: None: IPv6-only networks (``cidr_v6`` then required)
    cidr: str | None
    mode: str = "vlan"
    num_networks: int = 1
    # None: not given; the decider computes it from the range (nova's rule, capped at
    # DEFAULT_NETWORK_SIZE) and says so in its answer.
    network_size: int | None = None
    vlan_start: int = 100
    vni_start: int = 1000
    vpn_start: int = 1000
    bridge: str | None = None
    bridge_interface: str | None = None
    dns1: str | None = None
    dns2: str | None = None
    project: str | None = None
    multi_host: bool = False
    network_host: str | None = None
    mtu: int | None = None
    #: split into ``num_networks`` /64s, one per network
    cidr_v6: str | None = None
    ipv6_mode: str | None = None

    @classmethod
    def parse(cls, a: dict[str, Any]) -> NetworkCreate:
        mode = _str(a, "mode") or "vlan"
        if mode not in MODES:
            raise InvalidField(f"mode must be one of {', '.join(MODES)}", field="mode")
        label = _str(a, "label", required=True, max_len=MAX_LABEL)
        assert label is not None
        if not label.strip():
            raise InvalidField("label must not be empty", field="label")
        cidr_v6 = _cidr(a, "cidr_v6", version=6)
        cidr = _cidr(a, "cidr", required=cidr_v6 is None)
        if cidr_v6 is not None and netaddr.IPNetwork(cidr_v6).prefixlen > V6_PREFIXLEN:
            raise InvalidCidr(
                f"cidr_v6 {cidr_v6} is longer than /{V6_PREFIXLEN}: every network gets a"
                f" /{V6_PREFIXLEN} of it",
                field="cidr_v6",
            )
        size = _int(a, "network_size", None, MIN_NETWORK_SIZE, MAX_NETWORK_SIZE)
        if size is not None and size & (size - 1):
            raise InvalidField(
                f"network_size must be a power of two, got {size}", field="network_size"
            )
        if size is not None and cidr is None:
            raise InvalidField(
                "network_size is the size of the IPv4 networks: an IPv6-only network is a"
                f" /{V6_PREFIXLEN}",
                field="network_size",
            )
        ipv6_mode = _str(a, "ipv6_mode")
        if ipv6_mode is not None and ipv6_mode not in IPV6_MODES:
            raise InvalidField(
                f"ipv6_mode must be one of {', '.join(IPV6_MODES)}", field="ipv6_mode"
            )
        if ipv6_mode is not None and cidr_v6 is None:
            raise InvalidField("ipv6_mode needs cidr_v6", field="ipv6_mode")
        mtu = _int(a, "mtu", None, 576, 65535)
        if mtu is not None and cidr_v6 is not None and mtu < MIN_MTU_V6:
            # The kernel turns IPv6 off on a link below 1280 (RFC 8200's minimum).
            raise LimitExceeded(
                f"mtu must be at least {MIN_MTU_V6} on an IPv6 network, got {mtu}", field="mtu"
            )
        return cls(
            label=label,
            cidr=cidr,
            mode=mode,
            num_networks=_int(a, "num_networks", 1, 1, MAX_NUM_NETWORKS) or 1,
            network_size=size,
            vlan_start=_int(a, "vlan_start", 100, -(1 << 31), 1 << 31) or 0,
            vni_start=_int(a, "vni_start", 1000, -(1 << 31), 1 << 31) or 0,
            vpn_start=_int(a, "vpn_start", 1000, 1, 65535) or 1000,
            bridge=_ifname(a, "bridge"),
            bridge_interface=_ifname(a, "bridge_interface"),
            dns1=_address(a, "dns1"),
            dns2=_address(a, "dns2"),
            project=_id(a, "project"),
            multi_host=_bool(a, "multi_host"),
            network_host=_id(a, "network_host"),
            mtu=mtu,
            cidr_v6=cidr_v6,
            ipv6_mode=(ipv6_mode or IPV6_MODES[0]) if cidr_v6 is not None else None,
        )


@command
@dataclass(frozen=True)
class NetworkDelete(Command):
    NAME: ClassVar[str] = "network.delete"
    ADMIN_ONLY: ClassVar[bool] = True
    network_id: str

    @classmethod
    def parse(cls, a: dict[str, Any]) -> NetworkDelete:
        return cls(network_id=_id(a, "network_id", required=True) or "")


@command
@dataclass(frozen=True)
class HostRetire(Command):
    """Take a decommissioned host out of the cloud (events/decide_host.py)."""

    NAME: ClassVar[str] = "host.retire"
    ADMIN_ONLY: ClassVar[bool] = True
    host: str

    @classmethod
    def parse(cls, a: dict[str, Any]) -> HostRetire:
        return cls(host=_id(a, "host", required=True) or "")

    def lane(self, state: object) -> str:
        return f"host:{self.host}"


@command
@dataclass(frozen=True)
class NetworkDisassociate(Command):
    NAME: ClassVar[str] = "network.disassociate"
    ADMIN_ONLY: ClassVar[bool] = True
    network_id: str

    @classmethod
    def parse(cls, a: dict[str, Any]) -> NetworkDisassociate:
        return cls(network_id=_id(a, "network_id", required=True) or "")


@command
@dataclass(frozen=True)
class NetworkList(Command):
    NAME: ClassVar[str] = "network.list"
    READ_ONLY: ClassVar[bool] = True
    project: str | None = None

    @classmethod
    def parse(cls, a: dict[str, Any]) -> NetworkList:
        return cls(project=_id(a, "project"))


@command
@dataclass(frozen=True)
class NetworkShow(Command):
    NAME: ClassVar[str] = "network.show"
    READ_ONLY: ClassVar[bool] = True
    network_id: str

    @classmethod
    def parse(cls, a: dict[str, Any]) -> NetworkShow:
        return cls(network_id=_id(a, "network_id", required=True) or "")


@command
@dataclass(frozen=True)
class FixedIpAllocate(Command):
    NAME: ClassVar[str] = "fixed_ip.allocate"
    instance: str
    project: str | None = None
    network_id: str | None = None
    host: str | None = None
    mac: str | None = None
    address: str | None = None

    @classmethod
    def parse(cls, a: dict[str, Any]) -> FixedIpAllocate:
        project, network_id = _id(a, "project"), _id(a, "network_id")
        if project is None and network_id is None:
            raise InvalidField("give project or network_id", field="project")
        return cls(
            instance=_id(a, "instance", required=True) or "",
            project=project,
            network_id=network_id,
            host=_id(a, "host"),
            mac=_mac(a, "mac"),
            address=_address(a, "address"),
        )


@command
@dataclass(frozen=True)
class FixedIpDeallocate(Command):
    NAME: ClassVar[str] = "fixed_ip.deallocate"
    instance: str
    network_id: str | None = None

    @classmethod
    def parse(cls, a: dict[str, Any]) -> FixedIpDeallocate:
        return cls(
            instance=_id(a, "instance", required=True) or "", network_id=_id(a, "network_id")
        )


@command
@dataclass(frozen=True)
class FixedIpLease(Command):
    """What a DHCP server saw (dnsmasq's lease script, as its host's executor: role system) —
    not a project's to say: a member could otherwise release another project's address, held
    until its DHCP release, for its own next allocation (found by review)."""

    NAME: ClassVar[str] = "fixed_ip.lease"
    ADMIN_ONLY: ClassVar[bool] = True
    address: str
    mac: str

    @classmethod
    def parse(cls, a: dict[str, Any]) -> FixedIpLease:
        mac = _mac(a, "mac")
        if mac is None:
            raise InvalidField("mac is required", field="mac")
        return cls(address=_address(a, "address", required=True) or "", mac=mac)


@command
@dataclass(frozen=True)
class FixedIpRelease(FixedIpLease):
    NAME: ClassVar[str] = "fixed_ip.release"


@command
@dataclass(frozen=True)
class FloatingPoolCreate(Command):
    NAME: ClassVar[str] = "floating_ip.pool_create"
    ADMIN_ONLY: ClassVar[bool] = True
    pool: str
    cidr: str
    public_interface: str | None = None

    @classmethod
    def parse(cls, a: dict[str, Any]) -> FloatingPoolCreate:
        cidr = _cidr(a, "cidr", required=True) or ""
        if netaddr.IPNetwork(cidr).size > MAX_NETWORK_SIZE:
            raise LimitExceeded(f"a pool holds at most {MAX_NETWORK_SIZE} addresses", field="cidr")
        return cls(
            pool=_id(a, "pool", required=True) or "",
            cidr=cidr,
            public_interface=_ifname(a, "public_interface"),
        )


@command
@dataclass(frozen=True)
class FloatingIpAllocate(Command):
    NAME: ClassVar[str] = "floating_ip.allocate"
    project: str
    pool: str | None = None

    @classmethod
    def parse(cls, a: dict[str, Any]) -> FloatingIpAllocate:
        return cls(project=_id(a, "project", required=True) or "", pool=_id(a, "pool"))


@command
@dataclass(frozen=True)
class FloatingIpAssociate(Command):
    NAME: ClassVar[str] = "floating_ip.associate"
    address: str
    fixed_address: str
    project: str

    @classmethod
    def parse(cls, a: dict[str, Any]) -> FloatingIpAssociate:
        return cls(
            address=_address(a, "address", required=True) or "",
            fixed_address=_address(a, "fixed_address", required=True) or "",
            project=_id(a, "project", required=True) or "",
        )


@command
@dataclass(frozen=True)
class FloatingIpDisassociate(Command):
    NAME: ClassVar[str] = "floating_ip.disassociate"
    address: str
    project: str

    @classmethod
    def parse(cls, a: dict[str, Any]) -> FloatingIpDisassociate:
        return cls(
            address=_address(a, "address", required=True) or "",
            project=_id(a, "project", required=True) or "",
        )


@command
@dataclass(frozen=True)
class FloatingIpDeallocate(FloatingIpDisassociate):
    NAME: ClassVar[str] = "floating_ip.deallocate"


@dataclass(frozen=True)
class Request:
    command: Command
    command_id: str
    actor: Actor


#: each command type's argument names (``dataclasses.fields`` walks the class every call)
_ARG_NAMES: dict[type[Command], frozenset[str]] = {}


def parse_command(name: str, payload: Any) -> Request:
    """Validate a decoded request map for command ``name``."""
    cls = COMMANDS.get(name)
    if cls is None:
        raise UnknownCommand(f"unknown command {name!r}", command=name)
    if not isinstance(payload, dict):
        raise ValidationError("request must be a msgpack map")
    args = payload.get("args", {})
    if not isinstance(args, dict):
        raise InvalidField("args must be a map", field="args")
    known = _ARG_NAMES.get(cls)
    if known is None:
        known = _ARG_NAMES[cls] = frozenset(f.name for f in fields(cls))
    if not known.issuperset(args):
        unknown = sorted(str(k) for k in args if k not in known)
        raise InvalidField(
            f"unknown argument(s) for {name}: {', '.join(unknown)}", field=unknown[0]
        )
    command_id = payload.get("command_id")
    if command_id is not None:
        command_id = check_id(command_id, "command_id")
    actor_raw = payload.get("actor") or {}
    if not isinstance(actor_raw, dict):
        raise InvalidField("actor must be a map", field="actor")
    actor = Actor(
        project=_id(actor_raw, "project"),
        role=_str(actor_raw, "role", max_len=16) or "member",
        user=_str(actor_raw, "user", max_len=64),
    )
    if actor.role not in ("admin", "member", "system"):
        raise InvalidField("actor.role must be admin or member", field="actor.role")
    cmd = cls.parse(args)
    return Request(command=cmd, command_id=_command_id(cmd, command_id or ""), actor=actor)


def _command_id(cmd: Command, given: str) -> str:
    """``given`` (empty: none), checked against the reverts' namespace. A client's command
    stored as ``revert-X`` held the id ``revert --command-id X`` sends its revert with: the
    service answered that revert as a retry of the client's command, and X could never be
    reverted (review h112). A revert goes under its own id only: another would mark another
    command reverted (``revert-Y``) or let a retry of it be applied twice."""
    own = cmd.own_command_id()
    if own is None:
        if given.startswith(REVERT_ID_PREFIX):
            raise ReservedCommandId(
                f"command id {given} is reserved: ids starting with {REVERT_ID_PREFIX!r} are"
                " the reverts' own (netledger revert); send this command under another id",
                command_id=given,
            )
        return given
    if not given:
        return check_id(own, "command_id")
    if given != own:
        raise ReservedCommandId(
            f"a {cmd.NAME} goes under its own command id {own}, not {given}",
            command_id=given,
            expected=own,
        )
    return given
