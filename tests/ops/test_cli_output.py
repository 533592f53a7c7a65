"""The output options (issue 17, points 1 and 5): --json, -f/--format, -c/--column and
--json-lines are accepted by every command before or after its name with one meaning; JSON is
indented on a terminal and compact when piped; --json-lines gives one object per line."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import patch

import click
import pytest
from click.testing import CliRunner, Result

from netledger.cli import cli
from netledger.common.output import NAMES
from netledger.service.service import CommandService
from tests.projector.test_projector_cli import db as db  # the fixture: a small real projection

NETLEDGER = str(Path(sys.executable).parent / "netledger")
OUTPUT = ["--json", "--format", "json", "-c", "address", "--column", "instance", "--json-lines"]


def walk(cmd: click.Command, path: list[str]) -> Iterator[tuple[list[str], click.Command]]:
    yield path, cmd
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd)
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            assert sub is not None
            yield from walk(sub, [*path, name])


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    runner = CliRunner(env={"COLUMNS": "200", "NETLEDGER_CONFIG": None, **(env or {})})
    return runner.invoke(cli, list(args), catch_exceptions=False)


def _opts(cmd: click.Command) -> dict[str, tuple[list[str], Any]]:
    return {
        p.name: (p.opts, getattr(p, "callback", None))
        for p in cmd.params
        if isinstance(p, click.Option) and p.name in NAMES
    }


COMMANDS = [path for path, _ in walk(cli, [])]


def test_every_command_has_the_same_output_options() -> None:
    root = _opts(cli)
    assert sorted(root) == sorted(NAMES)
    for path, cmd in walk(cli, []):
        mine = _opts(cmd)
        assert mine.keys() == root.keys(), path
        for name, (opts, callback) in mine.items():
            # the same spelling and the same callback: one meaning wherever it is given
            assert (opts, callback) == root[name], (path, name)


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) or "netledger" for p in COMMANDS])
def test_every_command_accepts_the_output_options_before_and_after(path: list[str]) -> None:
    # --help (eager) stops each run once everything is parsed: an option a command did not
    # accept would already have failed (No such option, exit 2).
    for argv in ([*OUTPUT, *path, "--help"], [*path, *OUTPUT, "--help"]):
        r = invoke(*argv)
        assert r.exit_code == 0, (argv, r.output)
    if path:
        r = invoke(*path, "--bogus-option", "--help")
        assert r.exit_code == 2  # the check above would see a refused option


# --- one meaning, both positions (a projection: no NATS needed) -------------------------------


FORMS = [
    ["--json"],
    ["--format", "json"],
    ["-f", "value", "-c", "address", "-c", "instance"],
    ["-f", "table"],
    ["-c", "address"],
    ["--json-lines"],
    ["--json-lines", "-c", "address"],
]


@pytest.mark.parametrize("form", FORMS, ids=[" ".join(f) for f in FORMS])
def test_before_and_after_print_the_same(db: Path, form: list[str]) -> None:
    before = invoke(*form, "show", "fixed-ips", "--db", str(db))
    after = invoke("show", "fixed-ips", "--db", str(db), *form)
    middle = invoke("show", *form, "fixed-ips", "--db", str(db))  # on the group: passes on
    assert before.exit_code == after.exit_code == middle.exit_code == 0, after.output
    assert before.output == after.output == middle.output


def test_formats_and_columns(db: Path) -> None:
    rows = json.loads(invoke("show", "fixed-ips", "--db", str(db), "--json").output)
    assert [r["address"] for r in rows] == ["10.0.0.3", "10.0.0.10", "10.0.1.3"]
    # piped (not a terminal): one line holding the whole JSON document
    assert len(invoke("show", "fixed-ips", "--db", str(db), "--json").output.splitlines()) == 1
    # value: one row per line, the chosen columns in order, separated by a space
    r = invoke("show", "fixed-ips", "--db", str(db), "-f", "value", "-c", "address", "-c", "host")
    assert r.output.splitlines() == ["10.0.0.3 c1", "10.0.0.10 c2", "10.0.1.3 c1"]
    # json with columns: only those fields
    r = invoke("show", "fixed-ips", "--db", str(db), "--json", "-c", "instance", "-c", "address")
    assert json.loads(r.output)[0] == {"address": "10.0.0.3", "instance": "i1"}
    # json lines: one object per element
    r = invoke("show", "fixed-ips", "--db", str(db), "--json-lines")
    assert [json.loads(x) for x in r.output.splitlines()] == rows
    # table with a column chosen: only that column
    r = invoke("show", "fixed-ips", "--db", str(db), "-c", "instance")
    assert "i2" in r.output and "10.0.0.10" not in r.output
    # an object: table = Field/Value rows, value = one value per line
    st = json.loads(invoke("projector", "status", "--db", str(db), "--json").output)
    r = invoke("projector", "status", "--db", str(db), "-f", "table")
    assert "Field" in r.output and "last_seq" in r.output and "schema_version" in r.output
    r = invoke("projector", "status", "--db", str(db), "-f", "value", "-c", "last_seq", "-c", "lag")
    assert r.output.splitlines() == [str(st["last_seq"]), str(st["lag"])]
    # the commands' own text is unchanged without an option
    assert invoke("projector", "status", "--db", str(db)).output.startswith("last_seq ")
    assert "fixed IPs (3)" in invoke("show", "fixed-ips", "--db", str(db)).output


def test_a_piped_table_holds_every_value_whole(db: Path) -> None:
    """Without a terminal a table is as wide as its rows (rich would fit it into 80 columns
    and cut values to "10.0.…"): each row one line, grep finds an address and its MAC."""
    rows = json.loads(invoke("show", "fixed-ips", "--db", str(db), "--json").output)
    r = subprocess.run(
        [NETLEDGER, "show", "fixed-ips", "--db", str(db)],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": ""}, check=True,
    )  # fmt: skip
    assert "…" not in r.stdout
    for row in rows:
        [line] = [x for x in r.stdout.splitlines() if f" {row['address']} " in x]
        assert row["mac"] in line and row["instance"] in line


def test_a_table_on_a_narrow_terminal_folds_values_instead_of_cutting_them() -> None:
    from rich.console import Console

    from netledger.common import output

    console = Console(width=40, force_terminal=True, record=True)
    with patch.object(output, "table_console", lambda: console):
        output._table(
            [{"address": "2001:db8:aaaa:bbbb:cccc:dddd:eeee:1", "mac": "x"}], ["address", "mac"]
        )
    text = console.export_text()
    assert "…" not in text
    cells = [line.split("│")[1].strip() for line in text.splitlines() if line.count("│") == 3]
    assert "".join(cells) == "2001:db8:aaaa:bbbb:cccc:dddd:eeee:1"  # folded, all there


def test_unknown_column_is_an_error_with_a_code(db: Path) -> None:
    r = invoke("show", "fixed-ips", "--db", str(db), "--json", "-c", "adress")
    assert r.exit_code == 1
    err = json.loads(r.output)["error"]
    assert err["code"] == "unknown_column" and "address" in err["details"]["columns"]
    r = invoke("show", "fixed-ips", "--db", str(db), "-f", "value", "-c", "adress")
    assert r.exit_code == 1 and "error [unknown_column]" in r.output


def test_conflicting_formats_are_usage_errors(db: Path) -> None:
    for argv in (
        ["show", "fixed-ips", "--db", str(db), "--json", "-f", "table"],
        ["--format", "value", "show", "fixed-ips", "--db", str(db), "--json"],
        ["--json-lines", "show", "fixed-ips", "--db", str(db), "-f", "table"],
    ):
        r = invoke(*argv)
        assert r.exit_code == 2 and "conflicting output formats" in r.output, argv


def test_environment_and_file_yield_to_the_command_line(db: Path, tmp_path: Path) -> None:
    env: dict[str, str | None] = {"NETLEDGER_FORMAT": "value"}
    r = invoke("show", "networks", "--db", str(db), "-c", "network_id", env=env)
    assert r.output.splitlines() == ["1", "2"]
    r = invoke("show", "networks", "--db", str(db), "--json", env=env)  # no conflict: flag wins
    assert [n["network_id"] for n in json.loads(r.output)] == ["1", "2"]
    conf = tmp_path / "n.toml"
    conf.write_text('format = "json"\n[show.networks]\ncolumn = ["label"]\n')
    r = invoke("--config", str(conf), "show", "networks", "--db", str(db))
    assert json.loads(r.output) == [{"label": "net1"}, {"label": "net2"}]
    r = invoke("--config", str(conf), "show", "networks", "--db", str(db), "-f", "value")
    assert r.output.splitlines() == ["net1", "net2"]


def test_config_show_lists_the_output_options() -> None:
    r = invoke("config", "show", "--format", "json", env={"NETLEDGER_FORMAT": None})
    s = json.loads(r.output)["settings"]
    assert s["as_json"]["source"] == "default" and "format" in s and "json_lines" in s


# --- pretty on a terminal, compact when piped --------------------------------------------------


def _on_a_terminal(argv: list[str]) -> str:
    """Run the real CLI with stdout on a pseudo-terminal; what it printed."""
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen(
            [NETLEDGER, *argv],
            stdout=slave,
            stderr=subprocess.PIPE,
            env={**os.environ, "NETLEDGER_CONFIG": ""},
        )
        os.close(slave)  # the child holds it: reading ends (EIO) when the child is done
        chunks = []
        while True:
            try:
                b = os.read(master, 65536)
            except OSError:
                break
            if not b:
                break
            chunks.append(b)
        assert p.wait(60) == 0, p.stderr.read() if p.stderr else ""
        if p.stderr:
            p.stderr.close()
        return b"".join(chunks).decode().replace("\r\n", "\n")
    finally:
        os.close(master)


def _piped(argv: list[str]) -> str:
    p = subprocess.run(
        [NETLEDGER, *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "NETLEDGER_CONFIG": ""},
        timeout=60,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_json_is_pretty_on_a_terminal_and_compact_when_piped(db: Path) -> None:
    argv = ["show", "networks", "--db", str(db), "--json"]
    tty = _on_a_terminal(argv)
    assert tty.startswith("[\n  {\n") and json.loads(tty)[0]["network_id"] == "1"
    piped = _piped(argv)
    assert piped.count("\n") == 1 and json.loads(piped) == json.loads(tty)
    # one object: one line when piped (a loop's results parse line by line)
    one = _piped(["projector", "status", "--db", str(db), "--json"])
    assert one.count("\n") == 1 and json.loads(one)["last_seq"] == 12
    # --json-lines: one compact object per line, on a terminal too
    for out in (
        _on_a_terminal([*argv, "--json-lines"]),
        _piped(["--json-lines", *argv[:-1]]),
    ):
        lines = out.splitlines()
        assert [json.loads(x)["network_id"] for x in lines] == ["1", "2"]


# --- against a running command service: both positions on the client commands -----------------


async def test_client_commands_take_the_options_after_the_command(
    service: CommandService, nats_url: str
) -> None:
    def run(*argv: str) -> Result:
        return invoke("--nats", nats_url, *argv)

    async def call(*argv: str, code: int = 0) -> str:
        r = await asyncio.to_thread(run, *argv)
        assert r.exit_code == code, (argv, r.output)
        return r.output

    await call("network", "create", "--label", "a", "--cidr", "10.7.0.0/24", "--mode", "flat")
    # the first example, and the same list with the option before the command
    after = json.loads(await call("network", "list", "--json"))
    before = json.loads(await call("--json", "network", "list"))
    assert after == before and [n["cidr"] for n in after] == ["10.7.0.0/24"]
    assert (await call("network", "list", "-f", "value", "-c", "id", "-c", "cidr")) == (
        "1 10.7.0.0/24\n"
    )
    shown = await call("network", "show", "1", "-f", "value", "-c", "label")
    assert shown == "a\n"
    addr = await call(
        "fixed-ip",
        "allocate",
        "--instance",
        "i-1",
        "--network",
        "1",
        "-f",
        "value",
        "-c",
        "address",
    )
    assert addr == "10.7.0.2\n"
    out = json.loads(
        await call("fixed-ip", "allocate", "--instance", "i-2", "--network", "1", "--json")
    )
    # the fields of before the output options, plus address_v6 (issue 14: null here, no IPv6)
    assert set(out) == {"address", "address_v6", "network_id", "instance", "mac", "host"}
    assert out["address_v6"] is None
    await call("floating-ip", "pool-create", "--pool", "pub", "--cidr", "203.0.113.0/29")
    fl = await call("floating-ip", "allocate", "--project", "p1", "--json-lines")
    assert fl.count("\n") == 1 and json.loads(fl)["address"] == "203.0.113.1"
    made = await call(
        "network",
        "create",
        "--label",
        "b",
        "--cidr",
        "10.8.0.0/24",
        "--mode",
        "vxlan",
        "-f",
        "value",
        "-c",
        "cidr",
    )
    assert made == "10.8.0.0/24\n"
    # an error after the command is JSON too when JSON was asked for there
    err = json.loads(await call("network", "delete", "99", "--json", code=1))
    assert err["error"]["code"] == "network_not_found"
    text = await asyncio.to_thread(run, "network", "delete", "99")
    assert text.exit_code == 1 and "error [network_not_found]" in text.output
