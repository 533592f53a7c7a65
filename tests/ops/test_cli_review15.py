"""Review hrev15: the CLI contract — JSON output asked for by the environment or the
configuration file (not on the command line) gets usage errors as JSON too (README "Errors":
usage errors exit 2, "with JSON output also said as {"error": {"code": "usage_error"}}")."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from netledger.cli import cli


def invoke(*args: str, env: dict[str, str | None]) -> Result:
    runner = CliRunner(env={"COLUMNS": "200", "NETLEDGER_CONFIG": None, **env})
    return runner.invoke(cli, ["--nats", "nats://127.0.0.1:9", *args])


USAGE_ERRORS = [
    ["audit", "bogus", "x"],  # a kind that is not one
    ["replay", "--db", "x.db", "--to-seq", "1", "--at", "2026-01-01T00:00Z"],  # both
    ["no-such-command"],
    ["fixed-ip", "allocate", "--instance", "i"],  # neither --project nor --network
]


@pytest.mark.parametrize("argv", USAGE_ERRORS)
@pytest.mark.parametrize(
    "env",
    [{"NETLEDGER_AS_JSON": "1"}, {"NETLEDGER_FORMAT": "json"}, {"NETLEDGER_JSON_LINES": "1"}],
)
def test_a_usage_error_with_json_from_the_environment_is_json(
    argv: list[str], env: dict[str, str | None]
) -> None:
    r = invoke(*argv, env=env)
    assert r.exit_code == 2, r.output
    assert json.loads(r.stdout)["error"]["code"] == "usage_error", r.stdout


def test_a_usage_error_with_json_from_the_configuration_file_is_json(tmp_path: Path) -> None:
    conf = tmp_path / "n.toml"
    conf.write_text('format = "json"\n')
    r = invoke("--config", str(conf), "audit", "bogus", "x", env={})
    assert r.exit_code == 2, r.output
    assert json.loads(r.stdout)["error"]["code"] == "usage_error", r.stdout


def test_a_usage_error_with_another_format_on_the_command_line_stays_text() -> None:
    r = invoke("audit", "bogus", "x", "-f", "table", env={"NETLEDGER_FORMAT": "json"})
    assert r.exit_code == 2 and r.stdout == ""


def test_the_actor_is_the_login_name_without_user(monkeypatch: pytest.MonkeyPatch) -> None:
    """$USER unset (root in a container, a unit without User=): the actor is still named, as
    the system knows this uid (review h130: the audit said ``by ?``)."""
    import pwd

    from netledger.cli import login_name

    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(name, raising=False)
    assert login_name() == pwd.getpwuid(os.getuid()).pw_name
    monkeypatch.setenv("USER", "alice")
    assert login_name() == "alice"
