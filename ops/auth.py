"""Per-role NATS users: who may write which part of the log (``netledger auth init``).

One nats-server ``authorization`` block (users in the global account, so an existing embedded
store keeps its stream when auth is switched on) and one credentials file per user. The roles:

* **admin** — everything (operators: stream setup, repairs).
* **service** — the command service: serves ``netledger.cmd.>`` in its queue group, writes every
  event subject *except* ``netledger.evt.host.>``, creates/updates the stream, reads it.
* **executor-<host>** — reads the log, writes only ``netledger.evt.host.<host>``; its dnsmasq
  lease script sends ``fixed_ip.lease`` / ``fixed_ip.release`` on
  ``netledger.host.<host>.cmd.*`` (the service accepts only addresses that host serves); its
  liveness goes to its own keys ``host.<host>.>`` of the ``NETLEDGER_LIVE`` bucket.
* **projector**, **auditor** — read only (ordered/pull consumers, direct get, stream info; the
  liveness bucket and the snapshot bucket too: ``status``, ``verify --snapshots``).
* **client** — sends commands (``netledger.cmd.>``, every project's ``netledger.project.*.cmd.>``)
  and receives the replies; nothing else. It may act as any project: a trusted integration.
* **client-<project>** (``--projects``) — sends commands only on
  ``netledger.project.<project>.cmd.>``; the service refuses a request there that acts as
  anyone but a member of that project, so these credentials are bound to one project.

Reading the log needs a handful of JetStream API subjects; each was checked by experiment
(tests/ops/test_auth.py): ``STREAM.INFO`` (catch-up target), ``CONSUMER.CREATE`` (ordered consumers
are created with a name and a filter: ``CONSUMER.CREATE.<stream>.<name>.<filter>``),
``CONSUMER.INFO`` (``num_pending``; no ``CONSUMER.DELETE``: ordered consumers never need it
and a reader must not delete a projector's durable consumer), ``DIRECT.GET`` (the
lost-ack check and point reads), ``$JS.FC.<stream>.>`` (flow-control replies of push consumers:
without it an ordered consumer stalls once the server asks for flow control) and
``$JS.ACK.<stream>.>`` (acks of durable consumers). Push deliveries and request replies arrive
on the user's own inbox prefix ``_INBOX_<user>.>`` (nats-py's ``inbox_prefix``; the
credentials file names it as ``NETLEDGER_INBOX``): a user cannot subscribe to another's replies
(one project's allocations, another reader's log). Nobody but admin and service may publish to
``$JS.API.STREAM.>`` writes.

The credentials file is a shell/systemd environment file::

    NETLEDGER_USER=executor-h1
    NETLEDGER_PASSWORD=...

which the CLI reads from the environment (``set -a; . executor-h1.env`` or systemd
``EnvironmentFile=``), and :func:`read_credentials` turns into ``connect()`` keyword arguments.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netledger.events.errors import NetledgerError, ValidationError
from netledger.events.ids import (
    ADMIN_COMMAND_PREFIX,
    ALL_EVENTS,
    COMMAND_PREFIX,
    HOST_COMMANDS,
    PROJECT_COMMANDS,
    STREAM,
    announce_subject,
    check_id,
    host_commands,
    host_subject,
    project_commands,
)
from netledger.journal.liveness import BUCKET as LIVE_BUCKET
from netledger.journal.liveness import LIVE_STREAM, host_keys
from netledger.journal.snapshot_store import BUCKET as SNAPSHOT_BUCKET
from netledger.ops.status import SERVICE_NAME, SRV_PREFIX

COMMAND_QUEUE = "netledger-command"  # service/service.py QUEUE_GROUP
SNAPSHOT_STREAM = f"OBJ_{SNAPSHOT_BUCKET}"
INBOX = "_INBOX.>"


def inbox_prefix(user: str) -> str:
    """The reply-subject prefix of one user (only it may subscribe below it)."""
    return f"_INBOX_{user}"


AUTH_CONF = "auth.conf"


class CredentialsError(NetledgerError):
    code = "credentials_error"


@dataclass(frozen=True)
class Permissions:
    publish_allow: tuple[str, ...] = ()
    publish_deny: tuple[str, ...] = ()
    subscribe_allow: tuple[str, ...] = ()
    subscribe_deny: tuple[str, ...] = ()
    allow_responses: bool = False

    def to_conf(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        pub: dict[str, list[str]] = {}
        if self.publish_allow:
            pub["allow"] = list(self.publish_allow)
        if self.publish_deny:
            pub["deny"] = list(self.publish_deny)
        sub: dict[str, list[str]] = {}
        if self.subscribe_allow:
            sub["allow"] = list(self.subscribe_allow)
        if self.subscribe_deny:
            sub["deny"] = list(self.subscribe_deny)
        # An empty allow list would mean "everything" to nats-server: say "nothing" explicitly.
        out["publish"] = pub or {"deny": [">"]}
        out["subscribe"] = sub or {"deny": [">"]}
        if self.allow_responses:
            out["allow_responses"] = True
        return out


def read_api(stream: str = STREAM) -> tuple[str, ...]:
    """JetStream API subjects a log reader needs (ordered/pull consumers, direct get)."""
    api = "$JS.API"
    return (
        f"{api}.INFO",
        f"{api}.STREAM.INFO.{stream}",
        f"{api}.CONSUMER.CREATE.{stream}",
        f"{api}.CONSUMER.CREATE.{stream}.>",
        f"{api}.CONSUMER.DURABLE.CREATE.{stream}.>",
        f"{api}.CONSUMER.INFO.{stream}.>",
        f"{api}.CONSUMER.MSG.NEXT.{stream}.>",
        f"{api}.DIRECT.GET.{stream}",
        f"{api}.DIRECT.GET.{stream}.>",
        f"{api}.STREAM.MSG.GET.{stream}",
        f"$JS.FC.{stream}.>",
        f"$JS.ACK.{stream}.>",
        # nats-py's object store and KV watchers look their stream up by subject
        f"{api}.STREAM.NAMES",
    )


#: ``netledger status`` finds the command service replicas by NATS service discovery
#: (ops/status.py ``StatusResponder``): the service answers ``$SRV.<verb>``, per name and per
#: id; a reader asks ``$SRV.<verb>.netledger``. Without these every status under auth said
#: "no command-service replica answered" (review hrev12).
STATUS_SERVE = (
    *(f"{SRV_PREFIX}.{verb}" for verb in ("PING", "INFO", "STATS")),
    f"{SRV_PREFIX}.*.{SERVICE_NAME}",
    f"{SRV_PREFIX}.*.{SERVICE_NAME}.*",
)
STATUS_ASK = (f"{SRV_PREFIX}.*.{SERVICE_NAME}", f"{SRV_PREFIX}.*.{SERVICE_NAME}.*")


def reader_permissions(stream: str = STREAM) -> Permissions:
    return Permissions(
        publish_allow=(
            *read_api(stream),
            *read_api(LIVE_STREAM),
            *read_api(SNAPSHOT_STREAM),
            *STATUS_ASK,
        ),
        subscribe_allow=(INBOX,),
    )


def service_permissions(stream: str = STREAM) -> Permissions:
    return Permissions(
        publish_allow=(
            *read_api(stream),
            f"$JS.API.STREAM.CREATE.{stream}",
            f"$JS.API.STREAM.UPDATE.{stream}",
            ALL_EVENTS,
            # the liveness bucket (it creates it; watches heartbeats)
            *read_api(LIVE_STREAM),
            f"$JS.API.STREAM.CREATE.{LIVE_STREAM}",
            # (and turns its rollups off: journal/liveness.py live_bucket)
            f"$JS.API.STREAM.UPDATE.{LIVE_STREAM}",
            # its snapshots (object store: chunks and meta; a put purges the old chunks)
            *read_api(SNAPSHOT_STREAM),
            f"$JS.API.STREAM.CREATE.{SNAPSHOT_STREAM}",
            f"$JS.API.STREAM.PURGE.{SNAPSHOT_STREAM}",
            f"$O.{SNAPSHOT_BUCKET}.>",
        ),
        # Deny wins over allow: host subjects and announcements belong to the executors alone.
        publish_deny=(host_subject(">"), announce_subject(">")),
        subscribe_allow=(
            INBOX,
            f"{COMMAND_PREFIX}.> {COMMAND_QUEUE}",
            f"{ADMIN_COMMAND_PREFIX}.> {COMMAND_QUEUE}",
            f"{PROJECT_COMMANDS} {COMMAND_QUEUE}",
            f"{HOST_COMMANDS} {COMMAND_QUEUE}",
            *STATUS_SERVE,
        ),
        allow_responses=True,
    )


def executor_permissions(host: str, stream: str = STREAM) -> Permissions:
    return Permissions(
        publish_allow=(
            *read_api(stream),
            host_subject(check_id(host, "host")),
            announce_subject(host),
            # its dnsmasq's lease script: leases and releases on the host's own subject
            *host_commands(host),
            # its liveness: its own keys of the liveness bucket, nobody else's
            *read_api(LIVE_STREAM),
            f"$KV.{LIVE_BUCKET}.{host_keys(host)}",
        ),
        subscribe_allow=(INBOX,),
    )


def client_permissions(project: str | None = None) -> Permissions:
    """Any project's commands (trusted), or only ``project``'s."""
    if project is not None:
        return Permissions(publish_allow=(project_commands(project),), subscribe_allow=(INBOX,))
    return Permissions(
        publish_allow=(f"{COMMAND_PREFIX}.>", PROJECT_COMMANDS), subscribe_allow=(INBOX,)
    )


def admin_permissions() -> Permissions:
    return Permissions(publish_allow=(">",), subscribe_allow=(">",), allow_responses=True)


@dataclass(frozen=True)
class User:
    name: str
    role: str
    password: str
    permissions: Permissions
    #: what the CLI acts as with these credentials (written into the credentials file)
    acts_as: dict[str, str] = field(default_factory=dict)
    #: the reply-subject prefix these credentials may subscribe to (None: nats-py's default)
    inbox: str | None = None


def _own_inbox(u: User) -> User:
    """``u`` receiving replies only below its own prefix instead of the shared ``_INBOX.>``."""
    perms = u.permissions
    if INBOX not in perms.subscribe_allow:
        return u
    own = f"{inbox_prefix(u.name)}.>"
    allow = tuple(own if x == INBOX else x for x in perms.subscribe_allow)
    return dataclasses.replace(
        u,
        permissions=dataclasses.replace(perms, subscribe_allow=allow),
        inbox=inbox_prefix(u.name),
    )


@dataclass
class AuthSetup:
    users: list[User] = field(default_factory=list)

    def user(self, name: str) -> User:
        for u in self.users:
            if u.name == name:
                return u
        raise KeyError(name)


def make_setup(
    hosts: list[str], stream: str = STREAM, projects: list[str] | None = None
) -> AuthSetup:
    """The users for every role, with fresh random passwords."""

    def pw() -> str:
        return secrets.token_urlsafe(24)

    users = [
        # admin may read any inbox; its file names its own all the same, as every other does:
        # a request that got no answer blamed the missing prefix of admin's file (no_answer)
        User("admin", "admin", pw(), admin_permissions(), inbox=inbox_prefix("admin")),
        User("service", "service", pw(), service_permissions(stream)),
        User("projector", "projector", pw(), reader_permissions(stream)),
        User("auditor", "auditor", pw(), reader_permissions(stream)),
        User("client", "client", pw(), client_permissions()),
    ]
    seen: set[str] = set()
    for h in hosts:
        check_id(h, "host")
        if h in seen:
            raise ValidationError(f"host {h} given twice", field="hosts")
        seen.add(h)
        users.append(User(f"executor-{h}", "executor", pw(), executor_permissions(h, stream)))
    seen_projects: set[str] = set()
    for p in projects or []:
        check_id(p, "project")
        if p in seen_projects:
            raise ValidationError(f"project {p} given twice", field="projects")
        seen_projects.add(p)
        users.append(
            User(
                f"client-{p}",
                "client",
                pw(),
                client_permissions(p),
                acts_as={"NETLEDGER_ROLE": "member", "NETLEDGER_PROJECT": p},
            )
        )
    return AuthSetup([_own_inbox(u) for u in users])


def _q(s: str) -> str:
    # JSON string quoting is valid nats-server config quoting ($ and spaces kept literal).
    return json.dumps(s)


def _conf_value(v: Any, indent: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return _q(v)
    if isinstance(v, list):
        return "[" + ", ".join(_conf_value(x, indent) for x in v) + "]"
    if isinstance(v, dict):
        inner = indent + "  "
        # One key per line: nats-server's parser rejects some one-line blocks.
        body = "".join(f"{inner}{k}: {_conf_value(x, inner)}\n" for k, x in v.items())
        return "{\n" + body + indent + "}"
    raise TypeError(type(v))


def config_text(setup: AuthSetup) -> str:
    """The nats-server include: ``authorization { users = [...] }``."""
    lines = [
        "# netledger per-role users (netledger auth init). Include from nats-server.conf:",
        '#   include "auth.conf"',
        "authorization {",
        "  users = [",
    ]
    for u in setup.users:
        entry = {"user": u.name, "password": u.password, "permissions": u.permissions.to_conf()}
        lines.append(f"    # role: {u.role}")
        lines.append("    " + _conf_value(entry, "    "))
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def credentials_text(user: User, url: str | None = None) -> str:
    out = f"# netledger credentials, role {user.role}\n"
    out += f"NETLEDGER_USER={user.name}\nNETLEDGER_PASSWORD={user.password}\n"
    if user.inbox:
        out += f"NETLEDGER_INBOX={user.inbox}\n"
    for k, v in user.acts_as.items():
        out += f"{k}={v}\n"
    if url:
        out += f"NATS_URL={url}\n"
    return out


def _write_private(path: Path, text: str) -> None:
    """``text`` into ``path``, mode 0600 whatever was there: written to a new file in the same
    folder (created 0600, never through a link) and renamed over it. Opening the old one kept
    its mode (a 0644 copy stayed 0644 with the new passwords) and followed a symlink there to
    wherever it pointed (found by review)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_setup(
    out: Path, setup: AuthSetup, *, url: str | None = None, force: bool = False
) -> dict[str, Any]:
    """Write ``auth.conf`` and ``<user>.env`` files (mode 0600) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    conf = out / AUTH_CONF
    targets = [conf, *(out / f"{u.name}.env" for u in setup.users)]
    if not force:
        existing = [str(p) for p in targets if p.exists()]
        if existing:
            raise CredentialsError(
                f"{', '.join(existing)} already exist: regenerating would lock out every"
                " component using them (use --force to replace)"
            )
    _write_private(conf, config_text(setup))
    creds: dict[str, str] = {}
    for u in setup.users:
        p = out / f"{u.name}.env"
        _write_private(p, credentials_text(u, url))
        creds[u.name] = str(p)
    return {
        "config": str(conf),
        "credentials": creds,
        "roles": {u.name: u.role for u in setup.users},
    }


def include_line(conf: Path, config_dir: Path) -> str:
    """The line that includes ``conf`` from a nats-server config living in ``config_dir``.

    nats-server resolves an include relative to the including file's folder, even an absolute
    path, so the path is made relative (the secrets stay in their 0600 file, not copied).
    """
    rel = os.path.relpath(conf.resolve(), config_dir.resolve())
    return f"include {_q(rel)}"


def embedded_extra_config(auth_config: str | Path, data_dir: Path) -> str:
    """``EmbeddedNats(extra_config=...)`` for ``netledger serve --auth-config FILE``."""
    conf = Path(auth_config)
    if not conf.is_file():
        raise CredentialsError(f"auth config {conf} does not exist (netledger auth init)")
    return include_line(conf, data_dir)


def read_credentials(path: str | Path) -> dict[str, Any]:
    """``connect()`` keyword arguments from a credentials file written by :func:`write_setup`."""
    values: dict[str, str] = {}
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CredentialsError(f"cannot read credentials {path}: {exc.strerror}") from None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        k, v = line.split("=", 1)
        values[k.strip()] = v.strip()
    if "NETLEDGER_USER" not in values or "NETLEDGER_PASSWORD" not in values:
        raise CredentialsError(f"{path} has no NETLEDGER_USER / NETLEDGER_PASSWORD")
    out: dict[str, Any] = {
        "user": values["NETLEDGER_USER"],
        "password": values["NETLEDGER_PASSWORD"],
    }
    if values.get("NETLEDGER_INBOX"):
        out["inbox_prefix"] = values["NETLEDGER_INBOX"]
    return out
