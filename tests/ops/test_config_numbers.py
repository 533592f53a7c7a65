"""A number option in the config file takes a number, nothing that merely converts to one.

Found by the reviews of the last session: TOML's ``true`` passed every number option as 1 (1.0
for a float: ``bool`` is an ``int`` subclass, and click's number types convert with ``int()`` /
``float()``), so ``replicas = true`` started a serve with one replica. The same ``int()`` made
``batch-size = 1.5`` a 1 and ``replicas = inf`` a traceback (OverflowError). Every number option
of the real command tree is walked (the plugins' commands too), so a new one is covered as it
is added."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest

from netledger.cli import cli
from netledger.ops.config import ConfigBadValue, build_default_map, key_of, read_config

Found = tuple[tuple[str, ...], str, click.Option]


def options(cmd: click.Command, section: tuple[str, ...] = ()) -> Iterator[Found]:
    """(table, key, option) of every option the file may set, through the whole tree."""
    for p in cmd.params:
        if isinstance(p, click.Option) and p.expose_value and p.name != "config":
            longs = [o for o in p.opts if o.startswith("--")]
            yield section, key_of((longs or p.opts)[0]), p
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd)
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None:
                yield from options(sub, (*section, name))


def numbers() -> list[Found]:
    kinds = (click.types.IntParamType, click.types.FloatParamType)
    return [f for f in options(cli) if isinstance(f[2].type, kinds) and f[2].nargs == 1]


def toml(section: tuple[str, ...], key: str, value: str) -> str:
    return f"[{'.'.join(section)}]\n{key} = {value}\n" if section else f"{key} = {value}\n"


def accepted(
    tmp_path: Path, found: list[Found], value: str | Callable[[click.Option], str]
) -> list[str]:
    """The options of ``found`` whose file entry ``value`` (or ``value(option)``) is taken; each
    refusal names its key."""
    path = tmp_path / "netledger.toml"
    taken: list[str] = []
    for section, key, opt in found:
        v = value if isinstance(value, str) else value(opt)
        path.write_text(toml(section, key, f"[{v}]" if opt.multiple else v))
        dotted = ".".join((*section, key))
        try:
            build_default_map(cli, read_config(path), path)
        except ConfigBadValue as err:
            assert dotted in err.message, err.message
            continue
        taken.append(dotted)
    return taken


def test_the_walk_finds_the_number_options() -> None:
    keys = {".".join((*s, k)) for s, k, _ in numbers()}
    for known in ("serve.replicas", "projector.run.batch_size", "executor.run.interval"):
        assert known in keys
    assert "command_timeout" in keys  # (a float of the root: a top-level key)


@pytest.mark.parametrize("value", ["true", "false"])
def test_a_boolean_for_a_number_option_is_refused(tmp_path: Path, value: str) -> None:
    assert accepted(tmp_path, numbers(), value) == []


def test_the_refusal_says_why(tmp_path: Path) -> None:
    path = tmp_path / "netledger.toml"
    path.write_text("[serve]\nreplicas = true\n")
    with pytest.raises(ConfigBadValue, match="expected a number, not true or false"):
        build_default_map(cli, read_config(path), path)


def test_a_boolean_for_a_value_that_is_text_is_refused(tmp_path: Path) -> None:
    """(``nats = true`` was the server ``True``.)"""
    path = tmp_path / "netledger.toml"
    path.write_text("nats = true\n")
    with pytest.raises(ConfigBadValue, match="this option takes a value"):
        build_default_map(cli, read_config(path), path)


def test_a_switch_still_takes_a_boolean(tmp_path: Path) -> None:
    path = tmp_path / "netledger.toml"
    path.write_text("[executor.run]\ndhcp = false\n")
    assert build_default_map(cli, read_config(path), path) == {"executor": {"run": {"dhcp": False}}}


def test_a_number_still_is_one(tmp_path: Path) -> None:
    path = tmp_path / "netledger.toml"
    path.write_text("[serve]\nreplicas = 3\n")
    assert build_default_map(cli, read_config(path), path) == {"serve": {"replicas": 3}}


def whole_numbers() -> list[Found]:
    return [f for f in numbers() if isinstance(f[2].type, click.types.IntParamType)]


def a_fraction_in_range(opt: click.Option) -> str:
    """Half past the option's least value (1 at least): refused for being a fraction alone."""
    least = getattr(opt.type, "min", None)
    return f"{max(least or 0, 1) + 0.5}"


def test_a_fraction_for_a_whole_number_option_is_refused(tmp_path: Path) -> None:
    assert len(whole_numbers()) >= 10  # (serve --replicas, projector run --batch-size, ...)
    assert accepted(tmp_path, whole_numbers(), a_fraction_in_range) == []


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_a_number_no_integer_holds_is_refused(tmp_path: Path, value: str) -> None:
    assert accepted(tmp_path, whole_numbers(), value) == []


def test_a_whole_float_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "netledger.toml"
    path.write_text("[serve]\nreplicas = 3.0\n")
    assert build_default_map(cli, read_config(path), path) == {"serve": {"replicas": 3.0}}
