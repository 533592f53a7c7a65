"""The quick start works copy-pasted line by line (issue 17): docs/quickstart.md's shell blocks
(and the README's "Using it" block) run as written against a real `netledger serve`.

Each ```sh block is run unless an HTML comment right before it says why not
(``<!-- not run by tests/ops/test_quickstart.py: REASON -->``). The block holding `netledger serve`
is started in the background, in a fresh folder holding a `.venv` link to this venv; its
`python3 -m venv` and `pip install` steps are the installation this test already runs in. Every
other line runs in its own shell in that folder (a line that only sources a file, like
`. .venv/bin/activate`, is kept for the lines after it, as in the terminal it is typed into),
must exit 0, and must print what a trailing `# → TEXT` comment says. The server gets a free port
(NETLEDGER_SERVE_PORT; the clients NATS_URL), a home and a runtime folder of its own.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from netledger.common.natsserver import free_port

ROOT = Path(__file__).parent.parent.parent
VENV = Path(sys.executable).parent.parent
SKIP = re.compile(r"<!--\s*not run by tests/ops/test_quickstart\.py:\s*(?P<why>.+?)\s*-->")
EXPECT = re.compile(r"\s+#\s*→\s*(?P<text>.+)$")
INSTALL = (re.compile(r"^python3 -m venv \.venv$"), re.compile(r"^\.venv/bin/pip install -e \.$"))


@dataclass
class Block:
    lines: list[str]
    skip: str | None
    line_no: int


def sh_blocks(text: str) -> list[Block]:
    out: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```sh":
            before = lines[i - 1] if i else ""
            m = SKIP.search(before)
            j = lines.index("```", i + 1)
            body = [x for x in lines[i + 1 : j] if x.strip()]
            out.append(Block(body, m.group("why") if m else None, i + 1))
            i = j
        i += 1
    return out


def section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def _serve_command(block: Block) -> str:
    """The serve step of the install-and-serve line (the install steps: this venv)."""
    assert len(block.lines) == 1, block
    steps = [s.strip() for s in block.lines[0].split("&&")]
    serve = [s for s in steps if " serve" in s]
    assert len(serve) == 1 and steps[-1] == serve[0], steps
    for s in steps[:-1]:
        assert any(p.match(s) for p in INSTALL), f"an unknown step before serve: {s}"
    return serve[0]


async def _stream_end(url: str) -> int:
    from netledger.journal.stream import connect, last_seq

    conn = await connect(url, name="quickstart-test")
    try:
        return await last_seq(conn)
    finally:
        await conn.close()


def _settle(url: str, db: Path) -> None:
    """Wait until the projection holds everything in the log: the projector is its own task,
    and a person typing the next line gives it that time; the test waits for it instead."""
    end = asyncio.run(_stream_end(url))
    deadline = time.monotonic() + 60
    while True:
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
                row = c.execute("SELECT last_seq FROM projection_state WHERE id = 1").fetchone()
            if row and row[0] >= end:
                return
        except sqlite3.Error:
            pass  # not created yet
        assert time.monotonic() < deadline, f"the projection did not reach seq {end}"
        time.sleep(0.05)


def _run_doc(tmp_path: Path, serve_cmd: str, blocks: list[Block], data: str) -> None:
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    work = tmp_path / "work"
    work.mkdir()
    (work / ".venv").symlink_to(VENV)
    (tmp_path / "home").mkdir()
    (tmp_path / "run").mkdir(mode=0o700)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("NETLEDGER_", "NATS_"))}
    base |= {
        "HOME": str(tmp_path / "home"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",  # the venv only once the doc activates it
        "COLUMNS": "200",
    }
    base.pop("VIRTUAL_ENV", None)
    serve = subprocess.Popen(
        ["bash", "-c", f"exec {serve_cmd}"],
        cwd=work,
        env={**base, "NETLEDGER_SERVE_PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert serve.stdout is not None
        ready = serve.stdout.readline()
        assert ready.strip() == f"netledger ready: {url}", (ready, serve.stderr)
        client = {**base, "NATS_URL": url}
        prelude: list[str] = []
        for block in blocks:
            for line in block.lines:
                if re.match(r"^(\.|source) \S+$", line):
                    prelude.append(line)
                    continue
                m = EXPECT.search(line)
                _settle(url, work / data / "projection.db")
                r = subprocess.run(
                    ["bash", "-c", "\n".join([*prelude, line])],
                    cwd=work,
                    env=client,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                assert r.returncode == 0, (line, r.stdout, r.stderr)
                if m:
                    assert m.group("text") in r.stdout, (line, r.stdout)
    finally:
        serve.terminate()
        try:
            serve.wait(30)
        finally:
            if serve.poll() is None:
                serve.kill()
                serve.wait()
    assert serve.returncode == 0


def test_quickstart_runs_line_by_line(tmp_path: Path) -> None:
    blocks = sh_blocks((ROOT / "docs" / "quickstart.md").read_text())
    run = [b for b in blocks if b.skip is None]
    assert [b for b in blocks if b.skip is not None], "the executor block is marked, with why"
    servers = [b for b in run if any("netledger serve" in x for x in b.lines)]
    assert len(servers) == 1, "one block starts the server"
    cmd = _serve_command(servers[0])
    data = re.search(r"--data (\S+)", cmd)
    assert data is not None
    clients = [b for b in run if b is not servers[0]]
    assert sum(len(b.lines) for b in clients) >= 8
    _run_doc(tmp_path, cmd, clients, data.group(1))


def test_readme_using_it_runs_line_by_line(tmp_path: Path) -> None:
    """The README's example, against a serve started as its first command says (default data
    folder), with the venv activated (its commands are typed as `netledger ...`)."""
    text = (ROOT / "README.md").read_text()
    first = sh_blocks(text)[0]
    cmd = _serve_command(Block(first.lines[:1], None, first.line_no))
    using = [b for b in sh_blocks(section(text, "Using it")) if b.skip is None]
    assert using, "the README's Using it section has a shell block"
    activate = Block([". .venv/bin/activate"], None, 0)
    _run_doc(tmp_path, cmd, [activate, *using], "../home/.local/share/netledger")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("netledger floating-ip allocate --project p1  # → 203.0.113.1", "203.0.113.1"),
        ('netledger network list --json  # → "cidr": "10.0.0.0/24"', '"cidr": "10.0.0.0/24"'),
        ("netledger status", None),
    ],
)
def test_expected_output_comments(line: str, expected: str | None) -> None:
    m = EXPECT.search(line)
    assert (m.group("text") if m else None) == expected
