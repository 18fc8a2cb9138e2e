"""The wall clock of a real `cronflow daemon` jumps (an NTP step, a suspend) under libfaketime.

libfaketime re-reads its offset from FAKETIME_TIMESTAMP_FILE on every call
(FAKETIME_NO_CACHE=1), so a test moves the daemon's wall clock while it runs.
FAKETIME_DONT_FAKE_MONOTONIC=1 keeps CLOCK_MONOTONIC real: the daemon tells a jump from
elapsed time by comparing the two, and sleeps (asyncio, epoll timeouts) on the monotonic one.
(libfaketime 0.9.10 makes Python's `time.sleep` fail with EINVAL after a jump in this mode,
since it sleeps on an absolute monotonic deadline; the daemon's loop does not use it.)
"""

from __future__ import annotations

import glob
import signal
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.e2e.conftest import Daemon, launch

pytestmark = pytest.mark.slow

_LIBFAKETIME = sorted(
    glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    + glob.glob("/usr/lib/faketime/libfaketime.so.1")
    + glob.glob("/usr/local/lib/faketime/libfaketime.so.1")
)
if not _LIBFAKETIME:
    pytest.skip(
        "libfaketime is not installed (Debian: apt-get install faketime; .ci/run does it)",
        allow_module_level=True,
    )

MINUTE, TEN_MINUTES = timedelta(minutes=1), timedelta(minutes=10)


class FakeClock:
    """The daemon's wall-clock offset from real time, in whole seconds, changeable live."""

    def __init__(self, tmp_path: Path, offset: int = 0) -> None:
        self.file = tmp_path / "faketime"
        self.set(offset)

    def set(self, offset: int) -> None:
        self.offset = offset
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(f"{offset:+d}\n")
        tmp.replace(self.file)  # atomic: the daemon never reads a half-written offset

    def env(self) -> dict[str, str]:
        return {
            "LD_PRELOAD": _LIBFAKETIME[0],
            "FAKETIME_TIMESTAMP_FILE": str(self.file),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset)


def _offset_to_second(second: int) -> int:
    """An offset putting the fake clock at `second` past a minute now: fire times then stay
    tens of seconds away from every start and jump, so the expected fires are exact."""
    return round((second - time.time()) % 60)


def _accounted(d: Daemon, flow: str) -> datetime | None:
    """The instant up to which the daemon has accounted for the flow's fires (its state)."""
    db = sqlite3.connect(f"file:{d.state / 'cronflow.db'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM state WHERE key = ?", (f"accounted:{flow}",))
        found = row.fetchone()
    except sqlite3.OperationalError:  # not created yet
        return None
    finally:
        db.close()
    return datetime.fromisoformat(found[0]) if found else None


def _slots(after: datetime, until: datetime, every: timedelta) -> list[datetime]:
    """Multiples of `every` since the epoch in (after, until]: what a UTC cron or @every fires."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    first = epoch + ((after - epoch) // every + 1) * every
    if first > until:
        return []
    return [first + i * every for i in range((until - first) // every + 1)]


def _ticked(d: Daemon) -> None:
    """Return once the daemon has gone through at least one whole wake-up from now: each
    SIGHUP makes the next loop turn reload (logged) and then account for fires; the second
    "reloaded" line can only follow the first turn's accounting."""
    for _ in range(2):
        seen = d.log.read_text().count(" reloaded ")
        d.proc.send_signal(signal.SIGHUP)
        wait_until(lambda s=seen: d.log.read_text().count(" reloaded ") > s, what="a reload")


def _times(runs: list[dict]) -> list[datetime]:
    return [datetime.fromisoformat(r["logical_time"]) for r in runs]


JUMP_FORWARD_JOBS = """
[defaults]
timezone = "UTC"

[jobs.none]
schedule = "* * * * *"
command = "true"

[jobs.latest]
schedule = "* * * * *"
command = "true"
catchup = "latest"

[jobs.all]
schedule = "@every 10m"
command = "true"
catchup = "all"
"""


def test_a_jump_forward_of_two_hours_records_the_missed_fires_once(
    daemons, tmp_path: Path
) -> None:
    clock = FakeClock(tmp_path, _offset_to_second(5))
    d = launch(daemons, tmp_path, JUMP_FORWARD_JOBS, env=clock.env())
    before = {f: wait_until(lambda f=f: _accounted(d, f), what=f"{f} loaded") for f in
              ("none", "latest", "all")}  # fmt: skip
    assert d.runs() == []  # started at :05 fake: no fire for ~55 s

    clock.set(clock.offset + 2 * 3600)

    def settled() -> bool:
        runs = d.runs()
        return sum(r["job"] == "all" and r["status"] == "success" for r in runs) == 12 and any(
            r["job"] == "latest" and r["status"] == "success" for r in runs
        )

    wait_until(settled, timeout=20, what="the catch-up runs to finish")
    after = {f: _accounted(d, f) for f in before}
    assert all(after[f] - before[f] > timedelta(hours=2) for f in before), (before, after)

    # catchup = none: one `missed` run at the newest fire, its note counting all 120.
    missed = _slots(before["none"], after["none"], MINUTE)
    assert len(missed) == 120
    (run,) = d.runs("none")
    assert (run["status"], run["trigger"], run["attempts"]) == ("missed", "catchup", 0)
    assert datetime.fromisoformat(run["logical_time"]) == missed[-1]
    assert run["note"] == (
        f"missed 120 fires from {missed[0].isoformat()} to {missed[-1].isoformat()}"
    )
    # catchup = latest: one run, for the newest missed fire.
    (run,) = d.runs("latest")
    assert (run["status"], run["trigger"]) == ("success", "catchup")
    assert datetime.fromisoformat(run["logical_time"]) == _slots(
        before["latest"], after["latest"], MINUTE
    )[-1]
    # catchup = all: each of the 12 ten-minute fires, oldest first.
    runs = d.runs("all")
    assert {(r["status"], r["trigger"]) for r in runs} == {("success", "catchup")}
    oldest_first = sorted(runs, key=lambda r: r["run_id"])
    assert _times(oldest_first) == _slots(before["all"], after["all"], TEN_MINUTES)

    # Exactly once: later wake-ups add nothing, and the jump was noticed once.
    everything = d.runs()
    _ticked(d)
    assert d.runs() == everything
    assert d.log.read_text().count("the clock jumped or the machine slept") == 1
    assert d.stop() == 0


def test_a_jump_back_of_an_hour_fires_no_slot_twice(daemons, tmp_path: Path) -> None:
    clock = FakeClock(tmp_path)
    d = launch(daemons, tmp_path, '[jobs.tick]\nschedule = "@every 1s"\ncommand = "true"\n',
               env=clock.env())  # fmt: skip
    wait_until(lambda: len(d.runs("tick")) >= 3, what="three fires")

    clock.set(-3600)  # an hour back: every slot of that hour was fired or accounted for
    _ticked(d)
    stalled = d.runs("tick")
    newest = max(_times(stalled))
    # Real time passes the next slots, which a monotonic schedule would fire; the wall clock,
    # an hour behind, has not reached them: nothing fires.
    wait_until(lambda: datetime.now(UTC) > newest + timedelta(seconds=2), what="2 s to pass")
    _ticked(d)
    assert d.runs("tick") == stalled

    # Forward by most of the hour: the wall clock now re-walks the last 5 s it already fired.
    clock.set(-round((datetime.now(UTC) - newest).total_seconds() + 5))
    wait_until(lambda: max(_times(d.runs("tick"))) > clock.now() - timedelta(seconds=1)
               and len(d.runs("tick")) >= len(stalled) + 3, timeout=25,
               what="fires to resume after the slots already fired")  # fmt: skip
    runs = d.runs("tick")
    times = sorted(_times(runs))
    assert len(set(times)) == len(times), "a slot fired twice"
    assert times == [times[0] + timedelta(seconds=i) for i in range(len(times))], "a gap"
    assert {(r["trigger"], r["status"]) for r in runs} == {("schedule", "success")}
    assert d.stop() == 0

