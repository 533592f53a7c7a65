"""How the CLI prints: JSON for scripts, readable text for people, errors with stable codes."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from netledger.events.errors import NetledgerError


def emit(obj: Any, as_json: bool, text: str | None = None) -> None:
    if as_json:
        click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))
    elif text is not None:
        click.echo(text)
    else:
        click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*("" if r.get(c) is None else str(r.get(c)) for c in columns))
    Console().print(t)


def fail(err: NetledgerError, as_json: bool) -> NoReturn:
    if as_json:
        click.echo(
            json.dumps(
                {"error": {"code": err.code, "message": err.message, "details": err.details}},
                default=str,
            )
        )
    else:
        click.echo(f"error [{err.code}]: {err.message}", err=True)
    sys.exit(1)
