"""The daemon's decisions about time, kept pure so tests can cover days in milliseconds:
which fires are due, which were missed, what catch-up runs, and jitter."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from cronflow.schedule import Schedule

if TYPE_CHECKING:
    import random

LATE_AFTER = timedelta(seconds=60)  # a fire noticed later than this counts as missed
MAX_CATCHUP = 1000


@dataclass(frozen=True)
class Missed:
    """Fires that will not run, recorded as one `missed` run (logical time = newest)."""

    count: int
    first: datetime
    last: datetime

    def note(self) -> str:
        if self.count == 1:
            return f"missed the fire at {self.last.isoformat()}"
        return f"missed {self.count} fires from {self.first.isoformat()} to {self.last.isoformat()}"


@dataclass(frozen=True)
class Due:
    """What to do for one flow at one wake-up."""

    on_time: list[datetime] = field(default_factory=list)  # trigger "schedule"
    catchup: list[datetime] = field(default_factory=list)  # trigger "catchup"
    missed: Missed | None = None


def due(
    schedule: Schedule,
    zone: ZoneInfo,
    accounted: datetime,
    now: datetime,
    catchup: str,
    awake_since: datetime | None = None,
) -> Due:
    """Fires in (accounted, now]. A fire runs on time when the daemon was awake at its time
    (at or after `awake_since`: its start, or its wake-up after a suspend) and notices it at
    most LATE_AFTER late; the others are missed, and `catchup` (none | latest | all) decides
    what of them runs."""
    if now <= accounted:
        return Due()  # the clock went back: never fire a slot twice
    total, first, fires = _fires_after(schedule, zone, accounted, now)

    def on_time(fire: datetime) -> bool:
        return now - fire <= LATE_AFTER and (awake_since is None or fire >= awake_since)

    late = [f for f in fires if not on_time(f)]
    on_time_fires = [f for f in fires if on_time(f)]
    if not late:
        return Due(on_time=on_time_fires)
    late_total = total - len(on_time_fires)
    if catchup == "latest":
        return Due(on_time=on_time_fires, catchup=[late[-1]])
    if catchup == "all":
        kept = late[-MAX_CATCHUP:]
        dropped = late_total - len(kept)
        missed = Missed(dropped, first or late[0], late[-len(kept) - 1]) if dropped else None
        return Due(on_time=on_time_fires, catchup=kept, missed=missed)
    return Due(on_time=on_time_fires, missed=Missed(late_total, first or late[0], late[-1]))


def _fires_after(
    schedule: Schedule, zone: ZoneInfo, after: datetime, until: datetime
) -> tuple[int, datetime | None, list[datetime]]:
    """How many fires in (after, until], the first, and the newest ones (all, up to a cap)."""
    fires: list[datetime] = []
    total, first = 0, None
    while (found := schedule.next_fire(after, zone)) is not None and found <= until:
        # In one zone, aware datetimes compare by wall clock (ignoring fold): compare in UTC.
        if not fires or found.astimezone(UTC) > fires[-1].astimezone(UTC):
            fires.append(found)
            total += 1
            first = first or found
        after = found
        if len(fires) > 4 * MAX_CATCHUP:  # weeks of `@every 1s`: keep the newest only
            del fires[: -MAX_CATCHUP - 1]
    return total, first, fires


def jitter_delay(jitter: float, rng: random.Random | None = None) -> float:
    """A random delay in [0, jitter] seconds added to a scheduled fire."""
    if not jitter > 0:  # not `<=`: NaN stays 0.0, as before
        return 0.0
    if rng is None:
        import random  # only for a job with `jitter`: a daemon without one never holds it

        return random.uniform(0, jitter)
    return rng.uniform(0, jitter)
