"""``netledger auth``: per-role NATS users and credentials files (see ops/auth.py)."""

from __future__ import annotations

from pathlib import Path

import click

from netledger.common.output import emit, fail
from netledger.common.settings import Settings, pass_settings
from netledger.events.errors import NetledgerError


@click.group("auth")
def auth_group() -> None:
    """NATS users and permissions for each role (service, executors, readers, clients)."""


@auth_group.command("init")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for auth.conf and one <user>.env credentials file per user (mode 0600).",
)
@click.option("--hosts", default="", help="Comma-separated hosts: one executor user each.")
@click.option(
    "--projects",
    default="",
    help="Comma-separated projects: one client user each (client-<project>), allowed to send"
    " commands only as a member of that project.",
)
@click.option("--stream", default="NETLEDGER", show_default=True, help="The stream name.")
@click.option("--url", help="Also write NATS_URL=URL into every credentials file.")
@click.option("--force", is_flag=True, help="Replace existing files (new passwords for all).")
@pass_settings
def auth_init(
    settings: Settings,
    out: Path,
    hosts: str,
    projects: str,
    stream: str,
    url: str | None,
    force: bool,
) -> None:
    """Write a nats-server auth include and credentials files for every role.

    Include DIR/auth.conf from the nats-server config (or `netledger serve --auth-config
    DIR/auth.conf`); give each component its DIR/<user>.env (NETLEDGER_USER /
    NETLEDGER_PASSWORD, e.g. as a systemd EnvironmentFile).
    """
    from netledger.ops.auth import make_setup, write_setup

    try:
        setup = make_setup(
            [h.strip() for h in hosts.split(",") if h.strip()],
            stream,
            projects=[p.strip() for p in projects.split(",") if p.strip()],
        )
        info = write_setup(out, setup, url=url, force=force)
    except NetledgerError as err:
        fail(err, settings.as_json)
    except OSError as exc:
        from netledger.ops.auth import CredentialsError

        fail(
            CredentialsError(
                f"cannot write the auth setup into {out}: {exc.strerror or exc}"
                f" ({exc.filename or out})",
                out=str(out),
            ),
            settings.as_json,
        )
    lines = [f"wrote {info['config']}"]
    lines += [
        f"  {name:<20} {info['roles'][name]:<10} {p}" for name, p in info["credentials"].items()
    ]
    emit(info, text="\n".join(lines))


COMMANDS = [auth_group]
