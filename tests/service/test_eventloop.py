"""The command service's event loop: uvloop when installed, asyncio's with NETLEDGER_UVLOOP=0."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from netledger.service import eventloop


@pytest.fixture
def policy() -> Iterator[None]:
    before = asyncio.get_event_loop_policy()
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(before)


def test_uvloop_when_installed(policy: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # uvloop is a dependency on every platform CI runs on (pyproject: not on Windows): a
    # missing install is a failure here, not a skip.
    import uvloop  # noqa: F401

    monkeypatch.delenv("NETLEDGER_UVLOOP", raising=False)
    assert eventloop.install() == "uvloop"
    loop = asyncio.new_event_loop()
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()


def test_asyncio_when_switched_off(policy: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETLEDGER_UVLOOP", "0")
    before = type(asyncio.get_event_loop_policy())
    assert eventloop.install() == "asyncio"
    assert type(asyncio.get_event_loop_policy()) is before
