"""Configuration: precedence flag > env > file > default, and errors naming the bad key."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from netledger.cli import cli
from netledger.ops.config import (
    ENV_PREFIX,
    ConfigBadValue,
    ConfigNotFound,
    ConfigSyntaxError,
    ConfigUnknownKey,
    build_default_map,
    config_option,
    envvar_of,
    find_config,
    load_default_map,
)


def root_with_config() -> click.Group:
    """The real root group with --config (a no-op once netledger/cli.py wires it itself)."""
    if not any(p.name == "config" for p in cli.params):
        config_option(cli)
    return cli


# A small tree with the same integration as the real one, to see each layer at two levels.
@config_option
@click.group(context_settings={"auto_envvar_prefix": ENV_PREFIX})
@click.option("--nats", "nats_url", envvar="NATS_URL", default="nats://default:4222")
@click.pass_context
def tree(ctx: click.Context, nats_url: str) -> None:
    ctx.obj = {"nats_url": nats_url}


@tree.group("projector")
def projector() -> None:
    pass


@projector.command("run")
@click.option("--batch-size", type=click.IntRange(1, 5000), default=2000)
@click.option("--follow/--once", default=True)
@click.option("--db", "dbs", multiple=True)
@click.pass_obj
def projector_run(obj: dict[str, object], batch_size: int, follow: bool, dbs: tuple[str]) -> None:
    click.echo(json.dumps({**obj, "batch_size": batch_size, "follow": follow, "dbs": list(dbs)}))


def run_tree(args: list[str], env: dict[str, str] | None = None) -> dict[str, object]:
    r = CliRunner().invoke(tree, args, env=env or {}, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    out: dict[str, object] = json.loads(r.output)
    return out


@pytest.fixture
def toml(tmp_path: Path):
    def write(text: str) -> Path:
        p = tmp_path / "netledger.toml"
        p.write_text(text)
        return p

    return write


CLEAN = {"NATS_URL": "", "NETLEDGER_CONFIG": "", "NETLEDGER_PROJECTOR_RUN_BATCH_SIZE": ""}


def test_precedence_flag_over_env_over_file_over_default(toml) -> None:
    path = toml('nats = "nats://file:4222"\n[projector.run]\nbatch-size = 10\nfollow = false\n')
    cfg = ["--config", str(path)]
    env_none = {k: None for k in CLEAN}
    # default
    assert run_tree(["projector", "run"], env_none)["batch_size"] == 2000
    assert run_tree(["projector", "run"], env_none)["nats_url"] == "nats://default:4222"
    # file beats default (top level and in a table)
    out = run_tree([*cfg, "projector", "run"], env_none)
    assert (out["nats_url"], out["batch_size"], out["follow"]) == ("nats://file:4222", 10, False)
    # environment beats file: an explicit variable, and the automatic NETLEDGER_<CMD>_<OPT>
    env = {**env_none, "NATS_URL": "nats://env:4222", "NETLEDGER_PROJECTOR_RUN_BATCH_SIZE": "20"}
    out = run_tree([*cfg, "projector", "run"], env)
    assert (out["nats_url"], out["batch_size"]) == ("nats://env:4222", 20)
    # a flag beats everything
    out = run_tree(
        [*cfg, "--nats", "nats://flag:4222", "projector", "run", "--batch-size", "30"], env
    )
    assert (out["nats_url"], out["batch_size"]) == ("nats://flag:4222", 30)
    # NETLEDGER_CONFIG names the file when --config does not
    out = run_tree(["projector", "run"], {**env_none, "NETLEDGER_CONFIG": str(path)})
    assert out["batch_size"] == 10


def test_list_options_and_underscore_keys(toml) -> None:
    path = toml('[projector.run]\nbatch_size = 5\ndb = ["a.db", "b.db"]\n')
    out = run_tree(["--config", str(path), "projector", "run"], {k: None for k in CLEAN})
    assert (out["batch_size"], out["dbs"]) == (5, ["a.db", "b.db"])


@pytest.mark.parametrize(
    ("text", "error", "names"),
    [
        ('natz = "x"\n', ConfigUnknownKey, ["natz", "did you mean 'nats'"]),
        ("[projector.run]\nbatch-sise = 3\n", ConfigUnknownKey, ["[projector.run]", "batch-sise"]),
        ("[projecter]\n", ConfigUnknownKey, ["projecter", "did you mean 'projector'"]),
        ("[projector.run]\nbatch-size = 0\n", ConfigBadValue, ["projector.run.batch-size = 0"]),
        ('[projector.run]\nbatch-size = "many"\n', ConfigBadValue, ["projector.run.batch-size"]),
        ('[projector.run]\nfollow = "yes"\n', ConfigBadValue, ["follow", "true or false"]),
        ('[projector.run]\ndb = "a.db"\n', ConfigBadValue, ["projector.run.db", "a list"]),
        ('projector = "run"\n', ConfigBadValue, ["projector is a command"]),
        ("nats = [1\n", ConfigSyntaxError, ["not valid TOML"]),
    ],
)
def test_bad_config_names_the_key(toml, text: str, error: type, names: list[str]) -> None:
    path = toml(text)
    with pytest.raises(error) as exc:
        load_default_map(tree, path)
    for n in names:
        assert n in exc.value.message
    assert str(path) in exc.value.message


def test_bad_config_stops_the_cli_with_code_and_exit_1(toml) -> None:
    path = toml("[projector.run]\nbatch-size = 0\n")
    r = CliRunner().invoke(tree, ["--config", str(path), "projector", "run"])
    assert r.exit_code == 1
    assert "error [config_bad_value]" in r.output and "batch-size" in r.output
    r = CliRunner().invoke(
        tree, ["--config", str(path.parent / "missing.toml"), "projector", "run"]
    )
    assert r.exit_code == 1 and "error [config_not_found]" in r.output


def test_default_locations_first_existing(tmp_path: Path) -> None:
    a, b = tmp_path / "etc.toml", tmp_path / "home.toml"
    assert find_config(None, {}, [a, b]) is None
    b.write_text("")
    assert find_config(None, {}, [a, b]) == b
    a.write_text("")
    assert find_config(None, {}, [a, b]) == a
    with pytest.raises(ConfigNotFound):
        find_config(tmp_path / "nope.toml", {}, [a, b])


def test_real_cli_tree_accepts_the_example_config() -> None:
    """deploy/netledger.toml is valid for the commands that exist (tables of missing ones are
    left out by the check only if the command is not installed yet)."""
    example = Path(__file__).parent.parent.parent / "deploy" / "netledger.toml"
    import tomllib

    data = tomllib.loads(example.read_text())
    root = root_with_config()
    names = cli.list_commands(click.Context(cli))
    for missing in [k for k, v in data.items() if isinstance(v, dict) and k not in names]:
        data.pop(missing)  # e.g. [executor.run] before the executor's commands are installed
    dmap = build_default_map(root, data, example)
    assert dmap["nats_url"].startswith("nats://")


def test_real_cli_config_show_reports_sources(toml) -> None:
    root = root_with_config()
    path = toml('nats = "nats://file:4222"\nrole = "member"\n')
    r = CliRunner().invoke(
        root,
        ["--config", str(path), "config", "show", "--json"],
        env={"NATS_URL": "nats://env:4222", "NETLEDGER_CONFIG": None},
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    s = out["settings"]
    assert s["nats_url"] == {"value": "nats://env:4222", "source": "environment"}
    assert s["role"] == {"value": "member", "source": "config file"}
    assert s["as_json"]["source"] == "default"
    assert out["config_file"] == str(path)
    r = CliRunner().invoke(root, ["config", "check", str(toml('rol = "x"\n'))])
    assert (
        r.exit_code == 1 and "config_unknown_key" in r.output and "did you mean 'role'" in r.output
    )


def test_config_check_names_every_problem_of_the_file(toml) -> None:  # type: ignore[no-untyped-def]
    """Review h130: a file with four mistakes was reported one at a time (fix, run again, ...).
    Every one, in the file's order; the valid keys kept; --json: the first's code, all of them
    in details.problems. A running netledger still stops at the first (as before)."""
    root = root_with_config()
    path = toml(
        'natz = "nats://x:4222"\nrole = "member"\ncommand_timeout = true\n'
        "[projector.run]\nbatch_sise = 5\nbatch_size = 1.5\n"
    )
    r = CliRunner().invoke(root, ["config", "check", str(path)], env={"NETLEDGER_CONFIG": None})
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert lines[0].startswith(
        f"error [config_unknown_key]: {path}: the top level has no key 'natz'"
    )
    assert [line.split(": ", 1)[1] for line in lines[1:]] == [
        "command_timeout = true: expected a number, not true or false",
        "[projector.run] has no key 'batch_sise' (did you mean 'batch_size'?)",
        "projector.run.batch_size = 1.5: expected a whole number",
    ]
    r = CliRunner().invoke(
        root, ["config", "check", str(path), "--json"], env={"NETLEDGER_CONFIG": None}
    )
    err = json.loads(r.output)["error"]
    assert err["code"] == "config_unknown_key"
    assert [(p["code"], p["key"]) for p in err["details"]["problems"]] == [
        ("config_unknown_key", "natz"),
        ("config_bad_value", "command_timeout"),
        ("config_unknown_key", "projector.run.batch_sise"),
        ("config_bad_value", "projector.run.batch_size"),
    ]
    with pytest.raises(ConfigUnknownKey):
        load_default_map(root, path)


def test_envvar_names() -> None:
    opt = next(p for p in projector_run.params if p.name == "batch_size")
    assert isinstance(opt, click.Option)
    assert envvar_of(opt, ["projector", "run"]) == "NETLEDGER_PROJECTOR_RUN_BATCH_SIZE"


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--json", "network", "list"], {}),
        (["network", "list", "-f", "json"], {}),
        (["network", "list"], {"NETLEDGER_AS_JSON": "1"}),
        (["network", "list"], {"NETLEDGER_FORMAT": "json"}),
    ],
)
def test_a_bad_config_with_json_output_is_one_line_of_json(
    toml, argv: list[str], env: dict[str, str]
) -> None:
    """README "Errors": with JSON output an error is {"error": {...}} on stdout — a broken
    configuration file too, though it is read before the output options (review h130)."""
    path = toml('natz = "nats://x:4222"\n')
    r = CliRunner().invoke(
        root_with_config(), ["--config", str(path), *argv], env={"NETLEDGER_CONFIG": None, **env}
    )
    assert r.exit_code == 1, r.output
    assert r.stderr == ""
    err = json.loads(r.stdout)["error"]
    assert err["code"] == "config_unknown_key" and "did you mean 'nats'" in err["message"]
    assert err["details"] == {"path": str(path), "key": "natz"}


def test_a_bad_config_with_another_format_on_the_command_line_stays_text(toml) -> None:
    path = toml("[serve\n")
    r = CliRunner().invoke(
        root_with_config(),
        ["--config", str(path), "network", "list", "-f", "value"],
        env={"NETLEDGER_CONFIG": None, "NETLEDGER_FORMAT": "json"},
    )
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.startswith("error [config_syntax]: ")


def test_config_show_text_keeps_its_columns() -> None:
    """Every setting's value starts in one column (review h130: ``command_timeout``, longer
    than the width allowed for names, pushed its value and source out of line)."""
    r = CliRunner().invoke(root_with_config(), ["config", "show"], env={"NETLEDGER_CONFIG": None})
    assert r.exit_code == 0, r.output
    rows = r.stdout.splitlines()[1:]
    assert any(row.startswith("command_timeout ") for row in rows)
    starts = {len(row) - len(row.split(" ", 1)[1].lstrip()) for row in rows}
    assert len(starts) == 1, r.stdout
