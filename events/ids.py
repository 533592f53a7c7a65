"""Identifiers and subjects.

Every id that becomes part of a NATS subject is checked here, so a subject can never be widened
by a wildcard or split by a dot that came from user input.
"""

from __future__ import annotations

import re

from .errors import InvalidId

STREAM = "NETLEDGER"
EVENT_PREFIX = "netledger.evt"
COMMAND_PREFIX = "netledger.cmd"
#: Requests acting with the admin role go here: NATS permissions decide who may publish to it,
#: so a client cannot make itself admin by claiming the role in the request.
ADMIN_COMMAND_PREFIX = "netledger.admin.cmd"
REGISTRY_SUBJECT = f"{EVENT_PREFIX}.registry"
ALL_EVENTS = f"{EVENT_PREFIX}.>"

MAX_ID_LEN = 64
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


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


def command_subject(name: str, *, admin: bool = False) -> str:
    return f"{ADMIN_COMMAND_PREFIX if admin else COMMAND_PREFIX}.{name}"


def subject_kind(subject: str) -> tuple[str, str]:
    """Split an event subject into (aggregate kind, id): ``("network", "7")``."""
    parts = subject.split(".")
    if len(parts) == 3 and subject == REGISTRY_SUBJECT:
        return "registry", ""
    if len(parts) == 4 and parts[0] == "netledger" and parts[1] == "evt":
        return parts[2], parts[3]
    return "unknown", subject
