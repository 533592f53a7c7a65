"""Review h110 of ``executor run --follow-heartbeat`` (4c27445): what the option takes.

0, negative and huge periods are refused by its range; a value no range can hold — ``nan``,
which compares false with both bounds — passed click's ``FloatRange`` and reached the consumer's
configuration, where nats-py's conversion to nanoseconds raised ``ValueError: cannot convert
float NaN to integer`` at the executor's start (checked against a real nats-server while
reviewing). It must be refused where it is given, as a usage error naming the option."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from netledger.cli import cli
from netledger.executor.cli import executor_run
from netledger.ops.config import ConfigBadValue, build_default_map, read_config


def _option() -> click.Option:
    return next(p for p in executor_run.params if p.name == "follow_heartbeat")  # type: ignore[return-value]


@pytest.mark.parametrize("bad", ["0", "-1", "0.49", "30.01", "1e308", "inf", "-inf", "nan", "x"])
def test_a_period_outside_its_range_or_no_number_is_refused(bad: str) -> None:
    opt = _option()
    with pytest.raises(click.BadParameter):
        opt.type.convert(bad, opt, None)


@pytest.mark.parametrize("good", ["0.5", "1", "3", "30"])
def test_a_period_in_its_range_is_taken(good: str) -> None:
    opt = _option()
    assert opt.type.convert(good, opt, None) == float(good)


def test_nan_on_the_command_line_is_a_usage_error_naming_the_option() -> None:
    result = CliRunner().invoke(executor_run, ["--follow-heartbeat", "nan"])
    assert result.exit_code == 2, result.output
    assert "--follow-heartbeat" in result.output and "nan" in result.output


def test_nan_in_the_config_file_is_refused_naming_the_key(tmp_path: Path) -> None:
    """TOML has ``nan``: the file's value goes through the option's type (ops/config.py)."""
    path = tmp_path / "netledger.toml"
    path.write_text("[executor.run]\nfollow-heartbeat = nan\n")
    with pytest.raises(ConfigBadValue, match="follow-heartbeat"):
        build_default_map(cli, read_config(path), path)
    path.write_text("[executor.run]\nfollow-heartbeat = 3.0\n")
    assert build_default_map(cli, read_config(path), path) == {
        "executor": {"run": {"follow_heartbeat": 3.0}}
    }


@pytest.mark.parametrize("name", ["interval", "heartbeat"])
def test_the_commands_other_periods_refuse_nan_alike(name: str) -> None:
    """``--interval`` (drift-repair sweeps) and ``--heartbeat`` (liveness, sightings) took nan
    too: no heartbeat is ever due then (``now - last >= nan`` is false: no liveness written, no
    sighting report confirmed), and the sweeps' wait is ``max(0.0, nan - now)``, 0.0 — a
    sweep at every turn of the executor's loop (executor/daemon.py ``_passes``)."""
    opt = next(p for p in executor_run.params if p.name == name)
    for bad in ("nan", "inf"):  # (inf: no period at all — no liveness ever written)
        with pytest.raises(click.BadParameter):
            opt.type.convert(bad, opt, None)
    assert opt.type.convert("0.5", opt, None) == 0.5
