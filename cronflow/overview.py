"""What `list` and `status` show about each job: the job file joined with the state."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from cronflow.config import Config
    from cronflow.store import Store


class JobView(NamedTuple):
    """One row of `list`. A NamedTuple: as immutable as a frozen dataclass, and `list` makes
    one per job, which a frozen dataclass's __init__ (object.__setattr__ per field) made
    about six times slower."""

    name: str
    description: str | None
    schedule: str | None
    meaning: str
    timezone: str
    next_fire: datetime | None
    last_status: str | None
    after: tuple[str, ...]
    paused_by: str | None  # the job whose pause holds the flow
    enabled: bool

    @property
    def paused(self) -> bool:
        return self.paused_by is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "schedule": self.schedule,
            "timezone": self.timezone,
            "next_fire": self.next_fire.isoformat() if self.next_fire else None,
            "last_status": self.last_status,
            "after": list(self.after),
            "paused": self.paused,
            "paused_by": self.paused_by,
            "enabled": self.enabled,
        }


def jobs(config: Config, now: datetime, store: Store | None) -> list[JobView]:
    """One view per job in file order; next fires are the flow's, for scheduled roots."""
    last = store.last_status(list(config.jobs)) if store else {}
    paused = store.paused_jobs() if store else set()
    views: dict[str, JobView] = {}
    # One search per schedule and zone; keyed by the schedule's text, which is what makes
    # two schedules equal, and cheaper to hash than the parsed fields.
    fires: dict[tuple[str, Any], datetime | None] = {}
    for flow in config.flows:
        held = next((j for j in flow.jobs if j in paused), None) if paused else None
        fire = None
        if held is None and flow.schedule is not None:
            key = (flow.schedule.text, flow.timezone)
            fire = fires[key] if key in fires else fires.setdefault(key, flow.next_fire(now))
        zone = flow.timezone.key
        for name in flow.jobs:
            job = config.jobs[name]
            views[name] = JobView(
                name,
                job.description,
                job.schedule.text if job.schedule else None,
                _meaning(job.schedule, job.after),
                zone,
                fire if job.schedule and job.enabled else None,
                last.get(name),
                job.after,
                held,
                job.enabled,
            )
    return [views[name] for name in config.jobs]


def _meaning(schedule: Any, after: tuple[str, ...]) -> str:
    if schedule is not None:
        return schedule.describe()
    if after:
        return "after " + ", ".join(after)
    return "only by hand"
