"""Identifiers and subjects.

Every id that becomes part of a NATS subject is checked here, so a subject can never be widened
by a wildcard or split by a dot that came from user input.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .errors import InvalidId

STREAM = "NETLEDGER"
EVENT_PREFIX = "netledger.evt"
COMMAND_PREFIX = "netledger.cmd"
#: Requests acting with the admin role go here: NATS permissions decide who may publish to it,
#: so a client cannot make itself admin by claiming the role in the request.
ADMIN_COMMAND_PREFIX = "netledger.admin.cmd"
#: Requests of a project's members go to ``netledger.project.<project>.cmd.<name>``: NATS
#: permissions can bind credentials to one project (``auth init --project``), and the service
#: refuses a request whose actor names another project than its subject.
PROJECT_COMMAND_PREFIX = "netledger.project"
PROJECT_COMMANDS = f"{PROJECT_COMMAND_PREFIX}.*.cmd.>"
#: A host's DHCP lease script reports leases and releases on
#: ``netledger.host.<host>.cmd.fixed_ip.lease|release``: NATS lets only that host's executor
#: credentials publish there, and the service accepts there only those two commands, only for
#: addresses whose DHCP that host serves.
HOST_COMMAND_PREFIX = "netledger.host"
HOST_COMMANDS = f"{HOST_COMMAND_PREFIX}.*.cmd.>"
HOST_COMMAND_NAMES = ("fixed_ip.lease", "fixed_ip.release")
REGISTRY_SUBJECT = f"{EVENT_PREFIX}.registry"
ALL_EVENTS = f"{EVENT_PREFIX}.>"

MAX_ID_LEN = 64
_HEX32_RE = re.compile(r"[0-9a-f]{32}")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


#: What the executors name a network's segment link (executor/fragments.py): never a bridge's
#: name (events/decide_network.py refuses one)
SEGMENT_LINK_NAME = re.compile(r"(vx|vlan)[0-9]+")


def vxlan_link_name(vni: int) -> str:
    return f"vx{vni}"


def vlan_link_name(vlan: int) -> str:
    return f"vlan{vlan}"


def is_id(value: object) -> bool:
    """Whether ``value`` is a subject-safe id (:func:`check_id` without the error)."""
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LEN and bool(_ID_RE.match(value))


def check_id(value: object, what: str) -> str:
    """Return ``value`` if it is a subject-safe id, else raise :class:`InvalidId`."""
    if not isinstance(value, str):
        raise InvalidId(f"{what} must be a string", field=what)
    if not value or len(value) > MAX_ID_LEN or not _ID_RE.match(value):
        raise InvalidId(
            f"{what} {value!r} is not a valid id: 1-{MAX_ID_LEN} characters of letters, digits,"
            " '-' and '_', starting with a letter or digit",
            field=what,
        )
    return value


def network_subject(network_id: str) -> str:
    return f"{EVENT_PREFIX}.network.{network_id}"


def pool_subject(pool: str) -> str:
    return f"{EVENT_PREFIX}.pool.{pool}"


def project_subject(project: str) -> str:
    return f"{EVENT_PREFIX}.project.{project}"


def host_subject(host: str) -> str:
    return f"{EVENT_PREFIX}.host.{host}"


def announce_subject(host: str) -> str:
    """Where a host's executor announces itself (its VTEP, its role): every executor reads
    every announcement, and nothing else of the other hosts (executor/share.py)."""
    return f"{EVENT_PREFIX}.announce.{host}"


ANNOUNCEMENTS = f"{EVENT_PREFIX}.announce.>"

#: Where the command service points at announcements stored before the announcement subjects
#: existed (on the host's own subject, which no other executor reads): every executor reads
#: this subject and fetches each announcement it points at (executor/view.py). Not under
#: ``announce.>``: the service may not write announcements (docs/security.md).
LEGACY_ANNOUNCEMENTS = f"{EVENT_PREFIX}.legacy-announcements"


def placement_subject(host: str) -> str:
    """Where the command service records that a host got its first instance in a network
    (``NetworkHostJoined``): how an executor that reads only its own networks learns of a new
    one."""
    return f"{EVENT_PREFIX}.placement.{host}"


PLACEMENT_PREFIX = f"{EVENT_PREFIX}.placement."


def retired_subject(host: str) -> str:
    """Where the command service records that a host left the cloud (``HostRetired``): every
    executor reads it (a peer's VTEP, a network host's role end there), and ``status`` finds the
    retired hosts by subject without reading the log. Not under ``announce.>`` nor
    ``host.>``: the service may write neither (docs/security.md)."""
    return f"{EVENT_PREFIX}.retired.{host}"


RETIRED_HOSTS = f"{EVENT_PREFIX}.retired.>"
RETIRED_PREFIX = f"{EVENT_PREFIX}.retired."


def project_commands(project: str) -> str:
    """Every command subject of one project (a NATS permission for its credentials)."""
    return f"{PROJECT_COMMAND_PREFIX}.{check_id(project, 'project')}.cmd.>"


def host_commands(host: str) -> tuple[str, ...]:
    """The command subjects of one host's lease script (a NATS permission)."""
    h = check_id(host, "host")
    return tuple(f"{HOST_COMMAND_PREFIX}.{h}.cmd.{name}" for name in HOST_COMMAND_NAMES)


class Route(NamedTuple):
    """What a command subject says about its request."""

    name: str
    #: came on the admin subject (only admins may publish there)
    privileged: bool = False
    #: came on this project's subject
    project: str | None = None
    #: came on this host's subject
    host: str | None = None


def command_subject(
    name: str, *, admin: bool = False, project: str | None = None, host: str | None = None
) -> str:
    """Where a request goes: the admin subject, a host's, a project's, or the plain one."""
    if admin:
        return f"{ADMIN_COMMAND_PREFIX}.{name}"
    if host is not None:
        return f"{HOST_COMMAND_PREFIX}.{check_id(host, 'host')}.cmd.{name}"
    if project is not None:
        return f"{PROJECT_COMMAND_PREFIX}.{check_id(project, 'project')}.cmd.{name}"
    return f"{COMMAND_PREFIX}.{name}"


def parse_command_subject(subject: str) -> Route | None:
    """The :class:`Route` of a subject the service serves (None: not a command subject)."""
    if subject.startswith(ADMIN_COMMAND_PREFIX + "."):
        return Route(subject[len(ADMIN_COMMAND_PREFIX) + 1 :], privileged=True)
    if subject.startswith(COMMAND_PREFIX + "."):
        return Route(subject[len(COMMAND_PREFIX) + 1 :])
    parts = subject.split(".", 4)
    if len(parts) != 5 or parts[3] != "cmd" or not parts[2]:
        return None
    if subject.startswith(HOST_COMMAND_PREFIX + "."):
        return Route(parts[4], host=parts[2])
    if subject.startswith(PROJECT_COMMAND_PREFIX + "."):
        return Route(parts[4], project=parts[2])
    return None


def subject_kind(subject: str) -> tuple[str, str]:
    """Split an event subject into (aggregate kind, id): ``("network", "7")``."""
    parts = subject.split(".")
    if len(parts) == 3 and subject == REGISTRY_SUBJECT:
        return "registry", ""
    if len(parts) == 4 and parts[0] == "netledger" and parts[1] == "evt":
        return parts[2], parts[3]
    return "unknown", subject


def command_time(command_id: str) -> float | None:
    """When a command id was made (Unix seconds, to the millisecond) if it is a UUIDv7 written
    as 32 lower-case hex digits — what :class:`netledger.service.client.Client` gives a command
    (``new_command_id``): its first 48 bits are the millisecond. None for any other id (a
    client's own, an older uuid4). A hint only: it is the client's clock, not the log's."""
    # Read off the hex digits, not through uuid.UUID (3 us an id, 0.8 us so: the command
    # service asks it of every floating IP allocation, service/old_retry.py): the version is
    # the 13th digit, the variant (RFC 9562's: 10xx) the 17th, the millisecond the first 12.
    if (
        len(command_id) != 32
        or command_id[12] != "7"
        or command_id[16] not in "89ab"
        or not _HEX32_RE.fullmatch(command_id)
    ):
        return None
    return int(command_id[:12], 16) / 1000
