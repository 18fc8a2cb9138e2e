"""What a daemon process holds before it reads a job file: RSS after importing, step by step.

    .venv/bin/python bench/import_floor.py [--runs 5]

Each step is a fresh interpreter that imports the modules of every step up to it and prints
its VmRSS; the median of --runs interpreters is reported. The steps separate what any Python
daemon with cronflow's store and data model pays from what asyncio (DESIGN's one event loop)
and the daemon's own modules add, so the < 20 MB target of issue 14 can be read against them.
Byte-code is cached in a temp dir first, as an installed cronflow has it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

STEPS = [
    ("python, nothing imported", []),
    (
        "+ stdlib a daemon needs without asyncio",
        ["logging", "selectors", "sqlite3", "zoneinfo", "json", "datetime", "tomli"],
    ),
    (
        "+ cronflow's config, schedule, store, timing",
        ["cronflow.config", "cronflow.schedule", "cronflow.store", "cronflow.timing"],
    ),
    ("+ asyncio", ["asyncio"]),
    ("+ the daemon's modules (cronflow.daemon)", ["cronflow.daemon"]),
]
PROBE = (
    "import importlib, sys\n"
    "sys.modules['ssl'] = None  # as the daemon does: asyncio without OpenSSL\n"
    "for name in sys.argv[1:]: importlib.import_module(name)\n"
    "print(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])\n"
)


def rss_kb(modules: list[str], env: dict[str, str]) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *modules], env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(out.stderr.strip().splitlines()[-1])
    return int(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="interpreters per step; median")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cronflow-import-floor-") as tmp:
        env = {**os.environ, "PYTHONPYCACHEPREFIX": str(Path(tmp) / "pycache")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        every = [m for _, modules in STEPS for m in modules]
        rss_kb(every, env)  # compiles and caches every module once
        so_far: list[str] = []
        print(f"{'step':48} {'VmRSS MB':>9}")
        for label, modules in STEPS:
            so_far += modules
            median = statistics.median(rss_kb(so_far, env) for _ in range(options.runs))
            print(f"{label:48} {median / 1024:9.1f}")


if __name__ == "__main__":
    main()
