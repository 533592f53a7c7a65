"""The root command loads other packages' commands when they are named (netledger/cli.py
PLUGINS): the table must name every command those packages define, and nothing else."""

from __future__ import annotations

import importlib
import subprocess
import sys

import click

from netledger.cli import PLUGINS, cli


def test_the_table_names_every_plugin_command() -> None:
    declared: dict[str, str] = {}
    for module in dict.fromkeys(PLUGINS.values()):
        for c in importlib.import_module(module).COMMANDS:
            declared[c.name] = module
    assert declared == PLUGINS


def test_every_plugin_command_is_listed_and_resolves_with_the_output_options() -> None:
    ctx = click.Context(cli)
    names = cli.list_commands(ctx)
    assert set(PLUGINS) <= set(names)
    for name in PLUGINS:
        cmd = cli.get_command(ctx, name)
        assert cmd is not None and cmd.name == name
        assert getattr(cmd, "_netledger_output", False), f"{name}: no output options"


def test_a_plugin_is_imported_only_when_its_command_is_called() -> None:
    code = (
        "import sys; from netledger.cli import cli, PLUGINS; "
        "loaded = sorted(m for m in set(PLUGINS.values()) if m in sys.modules); "
        "print(loaded)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    help_out = subprocess.run(
        [sys.executable, "-m", "netledger.cli", "--help"], capture_output=True, text=True
    )
    assert help_out.returncode == 0
    for name in PLUGINS:  # the root's help lists them all (it loads them to show their help)
        assert f"  {name} " in help_out.stdout or f"  {name}\n" in help_out.stdout, name
