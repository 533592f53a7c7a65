"""How the CLI prints: JSON for scripts, tables and values in the openstack CLI's manner, text
for people, errors with stable codes.

The output options — ``--json``, ``-f/--format json|table|value``, ``-c/--column`` (repeatable)
and ``--json-lines`` — are accepted by ``netledger`` itself and by every command, before or
after the command's name, with one meaning (:func:`install` adds them to the whole tree). They
all land in one :class:`Output` kept in the click context's ``meta`` (shared by the root and its
subcommands), which :func:`emit` reads when a command prints its result:

- no option: the command's own form (a line of text, a table for lists, JSON for ``show``);
- ``json``: the result's JSON (the contract scripts use), indented on a terminal and on one line
  otherwise; ``--json-lines``: one compact line per element of a list (one line for an object);
- ``table``: a table (a list's rows; an object as Field/Value rows); ``value``: bare values, a
  list's rows one per line separated by spaces, an object's values one per line;
- ``-c COLUMN``: only these fields/columns, in this order (alone, it selects ``table``).

A choice on the command line beats one from the environment or the configuration file; two
different formats chosen on the command line (``--json --format table``) are a usage error.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import click
from click.core import ParameterSource

from netledger.events.errors import NetledgerError

#: What a secret is printed as.
MASK = "***"


def mask_urls(value: str) -> str:
    """``value`` with the password (or token) of each ``scheme://user:password@host`` URL in it
    masked: nats-py takes credentials so, and a printed setting, line or error must not show
    them."""

    def one(m: re.Match[str]) -> str:
        user, sep, _ = m.group(2).partition(":")
        return f"{m.group(1)}{user}{sep}{MASK}@" if sep else f"{m.group(1)}{MASK}@"

    return re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/@,\s]*)@", one, value)


FORMATS = ("json", "table", "value")
#: Where the :class:`Output` of a run lives (``ctx.meta`` is shared by a context and its parents).
KEY = "netledger.common.output"
#: The parameter names of the output options (dropped before a command's callback is called).
NAMES = ("as_json", "format", "column", "json_lines")
_RANK = {
    ParameterSource.COMMANDLINE: 3,
    ParameterSource.ENVIRONMENT: 2,
    ParameterSource.DEFAULT_MAP: 1,
}


class UnknownColumn(NetledgerError):
    """``-c`` named a column the result does not have."""

    code = "unknown_column"


@dataclass
class Output:
    """The output options of one run, from every position they were given in."""

    format: str | None = None
    columns: list[str] = field(default_factory=list)
    json_lines: bool = False
    _format_by: str = ""
    _format_rank: int = 0
    _columns_rank: int = 0

    @property
    def as_json(self) -> bool:
        return self.format == "json"

    def choose(self, fmt: str, option: str, rank: int) -> None:
        if self.format is None or rank > self._format_rank:
            self.format, self._format_by, self._format_rank = fmt, option, rank
        elif rank == self._format_rank and fmt != self.format:
            if rank == _RANK[ParameterSource.COMMANDLINE]:
                raise click.UsageError(
                    f"conflicting output formats: {self._format_by} ({self.format}) and"
                    f" {option} ({fmt})"
                )
            # the same rank from the environment or the file: the command's own (later) wins
            self.format, self._format_by = fmt, option

    def add_columns(self, columns: Sequence[str], rank: int) -> None:
        if rank > self._columns_rank:
            self.columns, self._columns_rank = [], rank
        if rank == self._columns_rank:
            self.columns += [c for c in columns if c not in self.columns]


def state(ctx: click.Context) -> Output:
    out = ctx.meta.get(KEY)
    if not isinstance(out, Output):
        out = ctx.meta[KEY] = Output()
    return out


def current() -> Output:
    """The output options of the running command (defaults outside a click command)."""
    ctx = click.get_current_context(silent=True)
    return state(ctx) if ctx is not None else Output()


# --- the options ------------------------------------------------------------------------------


def _rank(ctx: click.Context, param: click.Parameter) -> int:
    src = ctx.get_parameter_source(param.name) if param.name else None
    return _RANK.get(src, 0) if src is not None else 0


def _on_json(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value and not ctx.resilient_parsing:
        state(ctx).choose("json", "--json", _rank(ctx, param))
    return value


def _on_format(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value and not ctx.resilient_parsing:
        state(ctx).choose(value, f"--format {value}", _rank(ctx, param))
    return value


def _on_json_lines(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value and not ctx.resilient_parsing:
        out = state(ctx)
        out.choose("json", "--json-lines", _rank(ctx, param))
        out.json_lines = True
    return value


def _on_column(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    if value and not ctx.resilient_parsing:
        state(ctx).add_columns(value, _rank(ctx, param))
    return value


def options(*, hidden: bool = False, eager: bool = True) -> list[click.Option]:
    """The output options, new objects for one command.

    Eager on commands, so that they are known before the command's other callbacks run (an
    option that fails while parsing reports in the chosen format); not on the root, whose
    ``--config`` (eager) must load the file first.
    """
    common: dict[str, Any] = {"hidden": hidden, "is_eager": eager}
    return [
        click.Option(
            ["--json", "as_json"],
            is_flag=True,
            callback=_on_json,
            help="Print JSON (the same as --format json): indented on a terminal, one line"
            " otherwise.",
            **common,
        ),
        click.Option(
            ["-f", "--format", "format"],
            type=click.Choice(FORMATS),
            default=None,
            callback=_on_format,
            help="Output format: json, table (a list's rows; an object's fields) or value (bare"
            " values, space-separated). Default: the command's own text.",
            **common,
        ),
        click.Option(
            ["-c", "--column", "column"],
            multiple=True,
            metavar="COLUMN",
            callback=_on_column,
            help="Only this field/column (repeat for several, in order); alone it prints a table.",
            **common,
        ),
        click.Option(
            ["--json-lines", "json_lines"],
            is_flag=True,
            callback=_on_json_lines,
            help="Print JSON, one compact line per object (a list: one line per element).",
            **common,
        ),
    ]


def install(cmd: click.Command, *, root: bool = True) -> None:
    """Give ``cmd`` and every command under it the output options (once).

    The options keep their values (so the configuration file and ``config show`` know them);
    the command's callback does not see them: it reads :func:`current` through :func:`emit`.
    """
    if not getattr(cmd, "_netledger_output", False):
        cmd._netledger_output = True  # type: ignore[attr-defined]
        group = isinstance(cmd, click.Group)
        # On a group below the root they only pass through: accepted, not shown in its help.
        cmd.params.extend(options(hidden=group and not root, eager=not root))
        if cmd.callback is not None:
            cmd.callback = _dropping(cmd.callback)
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            install(sub, root=False)


def _dropping(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        for n in NAMES:
            kwargs.pop(n, None)
        return fn(*args, **kwargs)

    return call


# --- printing ---------------------------------------------------------------------------------


def _tty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def dumps(obj: Any, pretty: bool) -> str:
    if pretty:
        return json.dumps(obj, indent=2, sort_keys=True, default=str)
    return json.dumps(obj, sort_keys=True, default=str)


def _cell(v: Any) -> str:
    if isinstance(v, dict | list):
        return json.dumps(v, sort_keys=True, default=str)
    return str(v)


def _keys(obj: Any) -> list[str]:
    rows = obj if isinstance(obj, list) else [obj]
    keys: dict[str, None] = {}
    for r in rows:
        if isinstance(r, dict):
            keys.update(dict.fromkeys(r))
    return list(keys)


def _check_columns(obj: Any, wanted: list[str], default: Sequence[str]) -> None:
    known = [*default, *(k for k in _keys(obj) if k not in default)]
    unknown = [c for c in wanted if c not in known]
    if unknown and known:
        raise UnknownColumn(
            f"no column {', '.join(unknown)} in this output (columns: {', '.join(known)})",
            unknown=unknown,
            columns=known,
        )


def _only(obj: Any, cols: list[str]) -> Any:
    if isinstance(obj, dict):
        return {c: obj.get(c) for c in cols}
    if isinstance(obj, list):
        return [_only(r, cols) for r in obj]
    return obj


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None) -> None:
    """Print a list result: a table of ``columns`` unless the output options ask otherwise."""
    emit(list(rows), columns=columns, title=title)


#: the width of a table printed to a pipe or a file (no terminal to fit): wide enough that
#: every row is one line
TABLE_MAX_WIDTH = 10_000


def _table(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None
) -> None:
    from rich.table import Table

    t = Table(title=title)
    for c in columns:
        # a value that does not fit wraps onto the next line: never cut to "10.0.…"
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*("" if r.get(c) is None else _cell(r.get(c)) for c in columns))
    table_console().print(t)


def table_console() -> Any:
    """Where tables go: the terminal, or, piped or redirected (grep, a file), a console as
    wide as the rows need (one line each, not folded into the 80 columns rich assumes
    without a terminal)."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=TABLE_MAX_WIDTH)


def emit(
    obj: Any,
    as_json: bool = False,
    text: str | Callable[[], None] | None = None,
    *,
    columns: Sequence[str] | None = None,
    title: str | None = None,
) -> None:
    """Print a command's result ``obj`` (its JSON form is the contract) as the options ask.

    Without a format option: JSON if ``as_json`` (the command's own form is JSON), else
    ``text`` (a string, or a function that prints), else a table of ``columns`` for a list.
    """
    out = current()
    fmt = out.format or ("table" if out.columns else None)
    if fmt is None:
        if as_json:
            fmt = "json"
        elif text is not None:
            if callable(text):
                text()
            else:
                click.echo(text)
            return
        else:
            fmt = "table" if columns is not None and isinstance(obj, list) else "json"
    default = list(columns or [])
    if out.columns:
        try:
            _check_columns(obj, out.columns, default)
        except UnknownColumn as err:
            fail(err, fmt == "json")
    cols = out.columns or default or _keys(obj)
    if fmt == "json":
        data = _only(obj, out.columns) if out.columns else obj
        if out.json_lines and isinstance(data, list):
            for x in data:
                click.echo(dumps(x, False))
        else:
            click.echo(dumps(data, pretty=not out.json_lines and _tty()))
    elif fmt == "table":
        if isinstance(obj, list):
            _table(
                [r if isinstance(r, dict) else {"value": r} for r in obj], cols or ["value"], title
            )
        elif isinstance(obj, dict):
            _table([{"Field": c, "Value": obj.get(c)} for c in cols], ["Field", "Value"])
        else:
            click.echo(_cell(obj))
    elif isinstance(obj, list):
        for r in obj:
            click.echo(" ".join(_cell(r.get(c)) for c in cols) if isinstance(r, dict) else _cell(r))
    elif isinstance(obj, dict):
        for c in cols:
            click.echo(_cell(obj.get(c)))
    else:
        click.echo(_cell(obj))


def plural(n: int, word: str, words: str | None = None) -> str:
    """``n`` and the noun for it: ``1 row``, ``2 rows``, ``0 addresses`` (``words``: a plural
    that is not ``word`` + s). Human output only: the JSON says numbers."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


def error_json(code: str, message: str, details: dict[str, Any] | None = None) -> str:
    """An error as the CLI prints it with JSON output: one line on stdout."""
    error = {"code": code, "message": message, "details": details or {}}
    return json.dumps({"error": error}, default=str)


def fail(err: NetledgerError, as_json: bool) -> NoReturn:
    """Report ``err`` (stable code, exit 1): one line of JSON on stdout, or text on stderr."""
    if as_json:
        click.echo(error_json(err.code, err.message, err.details))
    else:
        click.echo(f"error [{err.code}]: {err.message}", err=True)
    sys.exit(1)
