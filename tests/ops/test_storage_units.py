"""The pure parts of issue 16: what an append's failure means, the log's health as a state
model, the reserve's spelling and the verdict on a sample of the store."""

from __future__ import annotations

import asyncio

import nats
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.js.errors import APIError, BadRequestError, ServiceUnavailableError

from netledger.events.errors import LogStorageFull, LogUnavailable, error_from_wire
from netledger.journal.loghealth import FAILING, LATCHED, OK, STORAGE_LOW, LogHealth, log_error
from netledger.ops.config import Reserve, parse_reserve
from netledger.ops.status import log_problems
from netledger.ops.storage import below_reserve

# --- what a failure means ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code", "outcome"),
    [
        # the server's own limit (measured: 503, 10023 "insufficient resources")
        (ServiceUnavailableError(code=503, err_code=10023, description="insufficient resources"),
         "log_storage_full", "not_applied"),
        (APIError(code=500, err_code=10047,
                  description="insufficient storage resources available"),
         "log_storage_full", "not_applied"),
        (APIError(code=503, err_code=10077, description="maximum bytes exceeded"),
         "log_storage_full", "not_applied"),
        (APIError(code=503, err_code=10077,
                  description="write msgs/1.blk: no space left on device"),
         "log_storage_full", "not_applied"),
        (ServiceUnavailableError(code=503, err_code=10076, description="JetStream not enabled"),
         "log_unavailable", "not_applied"),
        (ServiceUnavailableError(code=503, err_code=10008,
                                 description="JetStream system temporarily unavailable"),
         "log_unavailable", "not_applied"),
        (nats.js.errors.NoStreamResponseError(), "log_unavailable", "not_applied"),
        (nats.errors.NoRespondersError(), "log_unavailable", "not_applied"),
        # no answer at all (a latched filestore): the append may have landed
        (nats.errors.TimeoutError(), "log_unavailable", "unknown"),
        (TimeoutError(), "log_unavailable", "unknown"),
    ],
)  # fmt: skip
def test_log_error_names_the_cause(exc: BaseException, code: str, outcome: str) -> None:
    err = log_error(exc, waited=3.0)
    assert err is not None
    assert err.code == code
    assert err.details["outcome"] == outcome
    assert err.details["reason"]
    # the wire keeps the class: a client matches on the code, and a full store is unavailable
    back = error_from_wire(err.to_wire())
    assert type(back) is type(err) and isinstance(back, LogUnavailable)


def test_server_words_are_kept() -> None:
    err = log_error(
        ServiceUnavailableError(code=503, err_code=10076, description="JetStream not enabled")
    )
    assert err is not None and "JetStream not enabled" in err.message
    assert err.details["err_code"] == 10076


@pytest.mark.parametrize("err_code", [10071, 10201])
def test_conflicts_are_not_the_logs_trouble(err_code: int) -> None:
    assert log_error(BadRequestError(code=400, err_code=err_code, description="x")) is None


def test_other_failures_are_not_mapped() -> None:
    assert log_error(ValueError("x")) is None


# --- the health state model -----------------------------------------------------------------


def full(msg: str = "full") -> LogStorageFull:
    return LogStorageFull(msg, free_bytes=1, reserve_bytes=2)


def test_refuse_then_accept() -> None:
    h = LogHealth()
    h.check()  # ok: nothing raised
    h.refuse(STORAGE_LOW, full())
    assert h.state == STORAGE_LOW and not h.as_dict()["writable"]
    with pytest.raises(LogStorageFull) as e1:
        h.check()
    with pytest.raises(LogStorageFull) as e2:
        h.check()
    assert e1.value is not e2.value  # fresh copies: many commands answer at once
    assert e1.value.details == {"free_bytes": 1, "reserve_bytes": 2}
    assert h.refused == 2
    h.accept("space back")
    assert h.state == OK and h.refusing is None and h.since is None
    h.check()
    msgs = [s["message"] for s in h.steps]
    assert msgs == ["full", "space back"]


def test_refusing_again_in_the_same_state_notes_once() -> None:
    h = LogHealth()
    h.refuse(STORAGE_LOW, full("a"))
    h.refuse(STORAGE_LOW, full("b"))
    assert len(h.steps) == 1 and h.refusing is not None and h.refusing.message == "b"
    h.refuse(LATCHED, full("c"))
    assert h.state == LATCHED and len(h.steps) == 2


def test_failing_appends_then_one_succeeds() -> None:
    h = LogHealth()
    err = LogUnavailable("no ack", outcome="unknown")
    h.append_failed(err)
    h.append_failed(err)
    assert h.state == FAILING and h.failed_appends == 2 and h.troubled
    assert h.as_dict()["writable"] is True  # each command still tries
    assert h.as_dict()["code"] == "log_unavailable"
    h.append_ok()
    assert h.state == OK and not h.troubled


def test_accept_while_appends_still_fail_stays_failing() -> None:
    h = LogHealth()
    h.append_failed(LogUnavailable("no ack"))
    h.refuse(STORAGE_LOW, full())
    h.accept("space back")
    assert h.state == FAILING and h.refusing is None


async def test_a_failure_wakes_the_watcher() -> None:
    h = LogHealth()
    waiter = asyncio.create_task(h.wait_suspect(5.0))
    await asyncio.sleep(0)
    h.append_failed(LogUnavailable("x"))
    assert await waiter is True
    assert await h.wait_suspect(0.01) is False


@given(st.lists(st.sampled_from(["refuse", "accept", "fail", "ok"]), max_size=30))
def test_any_sequence_keeps_the_invariants(ops: list[str]) -> None:
    h = LogHealth()
    for op in ops:
        if op == "refuse":
            h.refuse(STORAGE_LOW, full())
        elif op == "accept":
            h.accept("back")
        elif op == "fail":
            h.append_failed(LogUnavailable("x"))
        else:
            h.append_ok()
        d = h.as_dict()
        assert d["writable"] == (h.refusing is None)
        assert (h.state == OK) == (h.refusing is None and h.failing is None)
        assert (d["code"] is None) == (h.state == OK)


# --- the reserve and the verdict on a sample ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("5%", Reserve(percent=5)),
        ("0.5%", Reserve(percent=0.5)),
        ("512MiB", Reserve(nbytes=512 << 20)),
        ("2G", Reserve(nbytes=2_000_000_000)),
        ("64 mb", Reserve(nbytes=64_000_000)),
        ("1048576", Reserve(nbytes=1 << 20)),
        ("0", Reserve(nbytes=0)),
    ],
)
def test_parse_reserve(text: str, want: Reserve) -> None:
    assert parse_reserve(text) == want


@pytest.mark.parametrize("text", ["", "5 parsecs", "-1", "100%", "x%", "1.2.3G"])
def test_parse_reserve_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_reserve(text)


def test_reserve_of() -> None:
    assert Reserve(percent=5).of(1000) == 50
    assert Reserve(nbytes=7).of(1000) == 7


def test_below_reserve() -> None:
    assert below_reserve({"free_bytes": 10, "reserve_bytes": 5}) is None
    why = below_reserve({"free_bytes": 4, "reserve_bytes": 5, "store": "/s"})
    assert why is not None and "/s" in why
    # JetStream's own limit, with its reserve
    assert (
        below_reserve({"js_used_bytes": 90, "js_limit_bytes": 100, "js_reserve_bytes": 5}) is None
    )
    assert below_reserve({"js_used_bytes": 96, "js_limit_bytes": 100, "js_reserve_bytes": 5})
    # no limit, no reserve: never
    assert below_reserve({"free_bytes": 0, "reserve_bytes": 0, "js_used_bytes": 5}) is None


def test_status_names_the_trouble() -> None:
    h = LogHealth()
    svc = {"component": "command-service", "id": "x", "log": h.as_dict()}
    assert log_problems(svc) == []
    h.refuse(STORAGE_LOW, full("1 MiB free, below the reserve"))
    [p] = log_problems({**svc, "log": h.as_dict()})
    assert "refuses writes (storage_low) [log_storage_full]" in p and "reserve" in p
    assert log_problems({"component": "c", "id": "y"}) == []  # an older replica: no log field
