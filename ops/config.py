"""Configuration: one TOML file, environment variables and flags, in that order of weakness.

The file mirrors the command line, so there is one vocabulary to learn: a top-level key is an
option of the root ``netledger`` group (``nats = "..."``, ``log-level = "info"``), a table is a
command (``[serve]``, ``[projector.run]``, ``[executor.run]``) and its keys are that command's
long option names without the dashes (``replicas = 3``, ``metrics-port = 9310``; ``_`` and
``-`` are interchangeable). The file becomes click's ``default_map``, so click's own
precedence applies: **flag > environment variable > file > built-in default**.

Where the file is looked for: ``--config FILE``, else ``$NETLEDGER_CONFIG``, else the first of
:func:`default_locations` that exists (no file at all is fine: the defaults apply).

Everything in the file is checked before any command runs: an unknown table or key, or a value
the option would refuse, stops ``netledger`` with exit status 1 and an error naming the file and
the key (``error [config_unknown_key]: /etc/netledger/netledger.toml: [serve] has no key
'replica' (did you mean 'replicas'?)``).
"""

from __future__ import annotations

import datetime
import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from netledger.common.output import error_json, mask_urls
from netledger.common.settings import CONFIG_PATH_META
from netledger.events.errors import NetledgerError

ENV_CONFIG = "NETLEDGER_CONFIG"
#: Prefix of the environment variable every option without an explicit one gets
#: (``NETLEDGER_SERVE_REPLICAS``): click's ``auto_envvar_prefix``.
ENV_PREFIX = "NETLEDGER"


def default_locations(home: Path | None = None) -> list[Path]:
    """Where a config file is looked for when none is named, system-wide first."""
    home = home or Path.home()
    return [Path("/etc/netledger/netledger.toml"), home / ".config/netledger/netledger.toml"]


class ConfigError(NetledgerError):
    """The configuration file cannot be used."""

    code = "config_invalid"


class ConfigNotFound(ConfigError):
    code = "config_not_found"


class ConfigSyntaxError(ConfigError):
    code = "config_syntax"


class ConfigUnknownKey(ConfigError):
    code = "config_unknown_key"


class ConfigBadValue(ConfigError):
    code = "config_bad_value"


# --- finding and reading the file ----------------------------------------------------------


def find_config(
    explicit: str | Path | None,
    env: Mapping[str, str] | None = None,
    locations: list[Path] | None = None,
) -> Path | None:
    """The file to read: the one named (it must exist), else the first default that exists."""
    env = os.environ if env is None else env
    named = explicit or env.get(ENV_CONFIG) or None
    if named:
        p = Path(named).expanduser()
        if not p.is_file():
            source = "--config" if explicit else f"${ENV_CONFIG}"
            raise ConfigNotFound(f"{p}: no such configuration file (from {source})", path=str(p))
        return p
    for p in default_locations() if locations is None else locations:
        try:
            if p.is_file():
                return p
        except PermissionError:
            # A default location we may not even look into (e.g. another user's home) is as
            # good as absent; a file named explicitly is still an error above.
            continue
    return None


def read_config(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigSyntaxError(f"{path}: not valid TOML: {exc}", path=str(path)) from None
    except OSError as exc:
        raise ConfigNotFound(f"{path}: cannot read: {exc.strerror}", path=str(path)) from None


# --- checking it against the command tree --------------------------------------------------


def key_of(opt: str) -> str:
    """``--metrics-port`` -> ``metrics_port``: the spelling used in the file."""
    return opt.lstrip("-").replace("-", "_")


def _option_keys(cmd: click.Command) -> dict[str, click.Option]:
    keys: dict[str, click.Option] = {}
    for p in cmd.params:
        if not isinstance(p, click.Option) or not p.expose_value or p.name == "config":
            continue
        longs = [o for o in p.opts if o.startswith("--")]
        for o in longs or p.opts:
            keys[key_of(o)] = p
    return keys


def _where(section: tuple[str, ...]) -> str:
    return f"[{'.'.join(section)}]" if section else "the top level"


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
#: The escapes a TOML basic string has a short form for; other control characters are \uXXXX
_ESCAPES = {
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
    '"': '\\"',
    "\\": "\\\\",
}


def toml_spelling(value: Any) -> str:
    """``value`` (as :mod:`tomllib` read it) spelled as it is written in the file: ``true``,
    ``"a.db"``, ``inf``, ``[1, 2]`` (found by review: the bad-value error printed Python's
    ``True`` and ``'a.db'``, which the user never wrote and cannot paste back)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # 1.5, 1e+20: both are TOML floats
    if isinstance(value, str):
        return '"' + "".join(_escape(c) for c in value) + '"'
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_spelling(v) for v in value) + "]"
    if isinstance(value, dict):
        pairs = (
            f"{k if _BARE_KEY.fullmatch(k) else toml_spelling(k)} = {toml_spelling(v)}"
            for k, v in value.items()
        )
        return "{ " + ", ".join(pairs) + " }" if value else "{}"
    return str(value)  # int


def _escape(c: str) -> str:
    if c in _ESCAPES:
        return _ESCAPES[c]
    if ord(c) < 0x20 or ord(c) == 0x7F:
        return f"\\u{ord(c):04X}"
    return c


#: Option types whose values are numbers (the ranges are their subclasses)
_NUMBERS = (click.types.IntParamType, click.types.FloatParamType)


def _check_value(
    cmd: click.Command, opt: click.Option, value: Any, path: Path, dotted: str
) -> None:
    def bad(why: str) -> ConfigBadValue:
        return ConfigBadValue(
            f"{path}: {dotted} = {toml_spelling(value)}: {why}",
            path=str(path),
            key=dotted,
            value=value,
        )

    if isinstance(value, dict):
        raise bad("expected a value, not a table")
    if opt.is_flag and not opt.is_bool_flag:
        raise bad("this option is a switch with a fixed value; it cannot be set in the file")
    if opt.is_bool_flag and not isinstance(value, bool):
        raise bad("expected true or false")
    values = value if opt.multiple else [value]
    if opt.multiple and not isinstance(value, list):
        raise bad("expected a list")
    ctx = click.Context(cmd)
    for v in values:
        if isinstance(v, list | dict):
            raise bad("expected a single value")
        if isinstance(v, datetime.date | datetime.time):
            # no option takes one, and click's number types raised a TypeError (a traceback)
            raise bad("a date or time is not a value any option takes")
        if isinstance(v, bool) and not isinstance(opt.type, click.types.BoolParamType):
            # bool is an int: click's number types took ``true`` for 1 (1.0 for a float)
            if isinstance(opt.type, _NUMBERS):
                raise bad("expected a number, not true or false")
            raise bad("true or false sets a switch; this option takes a value")
        if isinstance(v, float) and isinstance(opt.type, click.types.IntParamType):
            if not v.is_integer():  # click's int() made 1.5 a 1, and inf an OverflowError
                raise bad("expected a whole number")
        try:
            opt.type.convert(v, opt, ctx)
        except click.BadParameter as exc:
            raise bad(exc.message) from None


def build_default_map(
    cmd: click.Command,
    data: Mapping[str, Any],
    path: Path,
    section: tuple[str, ...] = (),
    problems: list[ConfigError] | None = None,
) -> dict[str, Any]:
    """Check ``data`` (a parsed file) against ``cmd`` and turn it into a click ``default_map``.

    Keys become parameter names; tables become the default maps of subcommands. Raises
    :class:`ConfigUnknownKey` / :class:`ConfigBadValue` naming the first bad key — or, given
    ``problems``, adds every one to it in the file's order and leaves the bad keys out.
    """
    if problems is not None:
        return _collecting(cmd, data, path, section, problems)
    keys = _option_keys(cmd)
    ctx = click.Context(cmd)

    def subcommand(name: str) -> click.Command | None:
        # get_command, not .commands: the root loads a plugin's commands only when named
        return cmd.get_command(ctx, name) if isinstance(cmd, click.Group) else None

    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = key_of(raw_key)
        dotted = ".".join((*section, raw_key))
        if key in keys:
            opt = keys[key]
            _check_value(cmd, opt, value, path, dotted)
            assert opt.name is not None
            out[opt.name] = value
            continue
        sub = subcommand(raw_key) or subcommand(raw_key.replace("_", "-"))
        if sub is not None and isinstance(value, dict):
            out[sub.name or raw_key] = build_default_map(
                sub, value, path, (*section, sub.name or raw_key)
            )
            continue
        if sub is not None:
            raise ConfigBadValue(
                f"{path}: {dotted} is a command: give it a table ([{dotted}])",
                path=str(path),
                key=dotted,
            )
        known = sorted(keys) + (cmd.list_commands(ctx) if isinstance(cmd, click.Group) else [])
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigUnknownKey(
            f"{path}: {_where(section)} has no key {raw_key!r}{hint}",
            path=str(path),
            key=dotted,
        )
    return out


def _collecting(
    cmd: click.Command,
    data: Mapping[str, Any],
    path: Path,
    section: tuple[str, ...],
    problems: list[ConfigError],
) -> dict[str, Any]:
    """:func:`build_default_map` one key at a time, each problem kept instead of raised."""
    out: dict[str, Any] = {}
    ctx = click.Context(cmd)
    for raw_key, value in data.items():
        sub = None
        if isinstance(value, dict) and isinstance(cmd, click.Group):
            sub = cmd.get_command(ctx, raw_key) or cmd.get_command(ctx, raw_key.replace("_", "-"))
        if sub is not None and key_of(raw_key) not in _option_keys(cmd):
            name = sub.name or raw_key
            out[name] = _collecting(sub, value, path, (*section, name), problems)
            continue
        try:
            out.update(build_default_map(cmd, {raw_key: value}, path, section))
        except ConfigError as err:
            problems.append(err)
    return out


def load_default_map(
    cmd: click.Command,
    explicit: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    locations: list[Path] | None = None,
    problems: list[ConfigError] | None = None,
) -> tuple[Path | None, dict[str, Any]]:
    """Find, read and check the config file for ``cmd``: ``(path or None, default_map)``
    (given ``problems``, every bad key is added to it instead of the first raised)."""
    path = find_config(explicit, env, locations)
    if path is None:
        return None, {}
    return path, build_default_map(cmd, read_config(path), path, problems=problems)


def all_problems(problems: list[ConfigError]) -> ConfigError:
    """Several keys of one file wrong (``config check``) as one error: every one named, a line
    each in the file's order, all in ``details.problems``; the code (and class) the first's."""
    first = problems[0]
    return type(first)(
        "\n".join(p.message for p in problems),
        **first.details,
        problems=[{"code": p.code, "message": p.message, **p.details} for p in problems],
    )


# --- click integration ---------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


class ConfigFailed(click.ClickException):
    """A configuration error stopping the CLI (exit 1) before any output option is read: said
    as text on stderr, or — ``as_json`` set by the root group when the command line or the
    environment asks for JSON (netledger/cli.py) — as the one line of JSON on stdout every
    other error is (found by review h130: a script's ``--json`` got nothing to parse)."""

    exit_code = 1

    def __init__(self, error: ConfigError) -> None:
        super().__init__(error.message)
        self.error = error
        self.as_json = False

    def show(self, file: Any = None) -> None:
        if self.as_json:
            click.echo(error_json(self.error.code, self.error.message, self.error.details))
        else:
            click.echo(f"error [{self.error.code}]: {self.error.message}", err=True)


def _apply_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    # Eager: runs before the group's other options are processed, so they see the file too.
    if ctx.resilient_parsing:
        return value
    try:
        path, dmap = load_default_map(ctx.command, value)
    except ConfigError as err:
        raise ConfigFailed(err) from None
    if dmap:
        merged = dict(ctx.default_map or {})
        merged.update(dmap)
        ctx.default_map = merged
    ctx.meta[CONFIG_PATH_META] = path
    return str(path) if path else None


def config_option(fn: F) -> F:
    """``--config FILE`` for the root group: reads, checks and applies the TOML file."""
    opt = click.option(
        "--config",
        "config",
        metavar="FILE",
        is_eager=True,
        expose_value=False,
        callback=_apply_config,
        help=f"TOML configuration file (default: ${ENV_CONFIG}, then the first of "
        "/etc/netledger/netledger.toml and ~/.config/netledger/netledger.toml that exists). "
        "Precedence: flag > environment > file > default.",
    )
    return opt(fn)


#: Options whose values are secrets: ``config show`` and ``config check`` print the mask instead.
SECRETS = frozenset({"password"})
MASK = "***"  # (common.output.mask_urls writes the same)


def masked(settings: Any) -> Any:
    """A configuration file's settings (tables of keys) as they may be printed: secrets masked
    (found by review: ``config show`` masked the password it took from the file and printed
    the file's ``password`` beside it; ``config check`` printed it too)."""
    if isinstance(settings, Mapping):
        return {
            k: MASK if str(k).replace("-", "_") in SECRETS and v else masked(v)
            for k, v in settings.items()
        }
    if isinstance(settings, list):
        return [masked(v) for v in settings]
    if isinstance(settings, str):
        return mask_urls(settings)
    return settings


def effective(ctx: click.Context) -> dict[str, dict[str, Any]]:
    """Every option of ``ctx``'s command: its value and where it came from.

    ``{"nats_url": {"value": "nats://...", "source": "environment"}, ...}``; the source is one
    of ``command line``, ``environment``, ``config file``, ``default``.
    """
    names = {
        click.core.ParameterSource.COMMANDLINE: "command line",
        click.core.ParameterSource.ENVIRONMENT: "environment",
        click.core.ParameterSource.DEFAULT_MAP: "config file",
        click.core.ParameterSource.DEFAULT: "default",
        click.core.ParameterSource.PROMPT: "prompt",
    }
    out: dict[str, dict[str, Any]] = {}
    for p in ctx.command.params:
        if not isinstance(p, click.Option) or not p.expose_value or p.name is None:
            continue
        src = ctx.get_parameter_source(p.name)
        value = ctx.params.get(p.name)
        if p.name in SECRETS and value:
            value = MASK
        elif isinstance(value, str):
            value = mask_urls(value)
        out[p.name] = {"value": value, "source": names.get(src, "default") if src else "default"}
    return out


def envvar_of(param: click.Option, command_path: list[str]) -> str | None:
    """The environment variable an option reads: its own, or the automatic one."""
    if param.envvar:
        return param.envvar if isinstance(param.envvar, str) else param.envvar[0]
    if not param.allow_from_autoenv or param.name is None:
        return None
    prefix = "_".join([ENV_PREFIX, *(c.upper().replace("-", "_") for c in command_path)])
    return f"{prefix}_{param.name.upper()}"


# --- value types of options ------------------------------------------------------------------

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}


@dataclass(frozen=True)
class Reserve:
    """Free space kept back: ``nbytes`` or ``percent`` of the filesystem (or JetStream limit)."""

    nbytes: int | None = None
    percent: float | None = None

    def of(self, total: int) -> int:
        if self.percent is not None:
            return int(total * self.percent / 100)
        return int(self.nbytes or 0)

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else f"{self.nbytes}"


def parse_reserve(text: str | int) -> Reserve:
    """``"5%"``, ``"512MiB"``, ``"2G"``, ``"1048576"`` (bytes), ``"0"`` (no reserve)."""
    s = str(text).strip().lower().replace(" ", "")
    if s.endswith("%"):
        try:
            pct = float(s[:-1])
        except ValueError:
            raise ValueError(f"{text!r}: not a percentage") from None
        if not 0 <= pct < 100:
            raise ValueError(f"{text!r}: a percentage from 0 to 99")
        return Reserve(percent=pct)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([a-z]*)", s)
    if m is None or m.group(2) not in _UNITS:
        raise ValueError(f"{text!r}: give bytes (512MiB, 2G, 1048576) or a percentage (5%)")
    return Reserve(nbytes=int(float(m.group(1)) * _UNITS[m.group(2)]))


class ReserveType(click.ParamType):  # type: ignore[type-arg]
    name = "SIZE|PCT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, Reserve):
            return value
        try:
            return parse_reserve(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


RESERVE = ReserveType()
