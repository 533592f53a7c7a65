"""A request that got no answer ends a command with ``unavailable`` and no traceback: the error
says which of netledger's lines asked (``where``), so a daemon ended that way can be followed
up (an executor ended by a failover in the cluster suite said only "did not answer")."""

from __future__ import annotations

import nats.errors

from netledger.common.settings import _where


def test_the_innermost_netledger_line_is_named() -> None:
    outer: dict[str, object] = {"__name__": "netledger.outer"}
    inner: dict[str, object] = {"__name__": "netledger.journal.fake", "nats": nats}
    exec("def ask():\n    raise nats.errors.TimeoutError\n", inner)
    outer["ask"] = inner["ask"]
    exec("def run():\n    ask()\n", outer)
    try:
        outer["run"]()  # type: ignore[operator]
    except nats.errors.TimeoutError as exc:
        assert _where(exc) == "netledger.journal.fake:2 ask"
    else:
        raise AssertionError("no error")


def test_none_when_no_netledger_line_is_in_it() -> None:
    try:
        raise nats.errors.TimeoutError
    except nats.errors.TimeoutError as exc:
        assert _where(exc) is None
