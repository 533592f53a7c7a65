"""The CLI reference (docs/cli.md) is generated from the commands: every command and option has
help, and the committed file matches what the generator writes now."""

from __future__ import annotations

import runpy
from pathlib import Path

from netledger.cli import cli

GEN = runpy.run_path(str(Path(__file__).parent.parent.parent / "docs" / "gen_cli.py"))


def test_every_command_and_option_has_help() -> None:
    assert GEN["missing_help"](cli) == []


def test_cli_reference_is_current() -> None:
    out: Path = GEN["OUT"]
    assert out.read_text() == GEN["render"](cli), (
        "docs/cli.md is stale: run .venv/bin/python docs/gen_cli.py"
    )


def test_every_command_is_in_the_reference() -> None:
    text = GEN["OUT"].read_text()
    for path, _cmd, _ctx in GEN["walk"](cli, []):
        assert f"`{' '.join(['netledger', *path])}`" in text
