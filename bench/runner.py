"""Runs every benchmark, prints the table, writes bench/RESULTS.md (see bench/README.md).

bench/run [--size 1.0] [--only alloc,scale] [--out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib
import os
import platform
import subprocess
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path
from types import ModuleType

from benchlib import HERE, Row, Rss, run_measured

from netledger.common.natsserver import find_nats_server, server_version

MODULES = ["alloc", "scale", "peer_ovn", "projection", "kernel", "history", "fleet"]


def load(names: list[str]) -> list[ModuleType]:
    return [importlib.import_module(n) for n in names]


def _first(path: str, key: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def _version(argv: list[str]) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return (p.stdout or p.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "not installed"


def machine() -> dict[str, str]:
    mem_kb = int(_first("/proc/meminfo", "MemTotal").split()[0])
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": str(os.cpu_count()),
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "cpu": _first("/proc/cpuinfo", "model name"),
        "python": platform.python_version(),
        "nats-server": server_version(find_nats_server()),
        "nats-py": metadata.version("nats-py"),
        "ovn-northd": _version(["ovn-northd", "--version"]),
        "iproute2": _version(["ip", "-V"]),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def python_floor_mb() -> float:
    """Peak RSS of a bare Python that imports what every netledger process imports: the floor
    the components' RSS is compared with."""
    code = "import nats, msgpack, netaddr, netledger.service.service, netledger.service.client"
    return run_measured([sys.executable, "-c", code]).maxrss_mb


def fmt(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def fmt_ratio(r: float | None) -> str:
    if r is None:
        return ""
    return f"{r:.2f}" if r >= 0.1 else f"{r:.2g}"


def table(rows: list[Row]) -> list[str]:
    out = [
        "| benchmark | figure | value | unit | ratio | against | note |",
        "|---|---|---:|---|---:|---|---|",
    ]
    for r in rows:
        ratio = fmt_ratio(r.ratio)
        out.append(
            f"| {r.bench} | {r.metric} | {fmt(r.value)} | {r.unit} | {ratio} | {r.baseline} | {r.note} |"
        )
    return out


def rss_rows(rss: Rss, floor: float) -> list[Row]:
    rows = [Row("rss", "python floor (imports only)", floor, "MB", baseline="floor")]
    for comp in ("command service", "projector", "executor"):
        if comp in rss.peaks:
            mb = rss.peaks[comp]
            rows.append(
                Row(
                    "rss",
                    f"{comp} peak (VmHWM)",
                    mb,
                    "MB",
                    floor / mb,
                    "python floor",
                    rss.where[comp],
                )
            )
        else:
            rows.append(
                Row("rss", f"{comp} peak (VmHWM)", 0.0, "MB", note="not measured (see above)")
            )
    return rows


def write_results(
    path: Path, info: dict[str, str], rows: list[Row], size: float, took: float, errors: list[str]
) -> None:
    lines = [
        "# netledger benchmark results",
        "",
        f"Written by `bench/run` (size {size}) in {took:.0f} s. Ratios are figure / raw limit"
        " measured in the same run (higher is better; for times the ratio is raw time /"
        " netledger time). The machine is shared: absolute rates are noisy, ratios less so.",
        "See bench/README.md for what each row measures and what limits it.",
        "",
        "## Machine",
        "",
    ]
    lines += [f"- **{k}**: {v}" for k, v in info.items()]
    lines += ["", "## Results", "", *table(rows), ""]
    if errors:
        lines += ["## Benchmarks that failed", "", *(f"- {e}" for e in errors), ""]
    path.write_text("\n".join(lines))


async def run_all(mods: list[ModuleType], size: float) -> tuple[list[Row], Rss, list[str]]:
    rss = Rss()
    rows: list[Row] = []
    errors: list[str] = []
    for m in mods:
        t = time.perf_counter()
        print(f"== {m.NAME}: {m.TITLE}", flush=True)
        try:
            got = await m.run(size, rss)
        except Exception as exc:
            traceback.print_exc()
            errors.append(f"{m.NAME}: {exc.__class__.__name__}: {exc}")
            got = []
        for r in got:
            ratio = f"{fmt_ratio(r.ratio):>6}"
            print(
                f"   {r.metric:52.52s} {fmt(r.value):>10} {r.unit:8} {ratio}  {r.note}", flush=True
            )
        print(f"   ({time.perf_counter() - t:.0f} s)", flush=True)
        rows += got
    return rows, rss, errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--size", type=float, default=1.0, help="1.0 = the sizes of issue 7; 0.01 = smoke"
    )
    ap.add_argument("--only", default="", help=f"comma-separated subset of {','.join(MODULES)}")
    ap.add_argument(
        "--out", default=None, help="results file (default bench/RESULTS.md for a full run)"
    )
    a = ap.parse_args(argv)
    names = [n for n in a.only.split(",") if n] or MODULES
    t = time.perf_counter()
    info = machine()
    floor = python_floor_mb()
    rows, rss, errors = asyncio.run(run_all(load(names), a.size))
    rows += rss_rows(rss, floor)
    took = time.perf_counter() - t
    info["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print()
    print("\n".join(table(rows)))
    print(f"\n{took:.0f} s")
    out = a.out or (str(HERE / "RESULTS.md") if not a.only and a.size == 1.0 else None)
    if out:
        write_results(Path(out), info, rows, a.size, took, errors)
        print(f"wrote {out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
