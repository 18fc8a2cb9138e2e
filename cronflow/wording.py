"""Schedules in plain English, for `cronflow list`: "at 06:00 every day", "every 15 minutes".

Good enough for the common shapes; `Schedule.describe` falls back to the expression itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from cronflow.calendar_words import DAY_WORDS, MONTH_WORDS


def interval(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds % size == 0:
            count = seconds // size
            return unit if count == 1 else f"{count} {unit}s"
    raise AssertionError("unreachable")


def moment(moment: datetime) -> str:
    shown = moment.strftime("%Y-%m-%d %H:%M" + (":%S" if moment.second else ""))
    if moment.tzinfo is None:
        return shown
    offset = moment.isoformat()[len(moment.replace(tzinfo=None).isoformat()) :]
    return f"{shown} {offset}"


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def values_text(values: tuple[int, ...], words: Sequence[str] | None = None) -> str:
    """'Monday through Friday', '1 and 15', 'January, March and May'."""
    names = [words[v] if words else str(v) for v in values]
    run = tuple(range(values[0], values[-1] + 1))
    if len(values) > 2 and values == run:
        return f"{names[0]} through {names[-1]}"
    return _join(names)


def cron(fields: tuple[str, ...], sets: tuple[tuple[int, ...], ...]) -> str | None:
    minute_f, hour_f, dom_f, month_f, dow_f = fields
    minutes, hours, doms, months, dows = sets
    time = _describe_time(minute_f, hour_f, minutes, hours)
    if time is None:
        return None
    if dom_f != "*" and dow_f != "*" and "*" in (dom_f[0], dow_f[0]):
        return None  # the AND rule with a stepped '*': too exotic for a sentence
    months_text = values_text(months, MONTH_WORDS) if month_f != "*" else ""
    plural = "s" if len(doms) > 1 else ""
    dom_text = f"on day{plural} {values_text(doms)}"
    dow_text = "on " + values_text(_sunday_last(dows), DAY_WORDS * 2)
    if dom_f != "*" and dow_f != "*":
        days = f"{dom_text} or {dow_text}" + (f" in {months_text}" if months_text else "")
    elif dom_f != "*":
        days = f"{dom_text} of " + (months_text or "the month")
    elif dow_f != "*":
        days = dow_text + (f" in {months_text}" if months_text else "")
    elif months_text:
        days = f"every day in {months_text}" if time.startswith("at ") else f"in {months_text}"
    else:
        days = "every day" if time.startswith("at ") and "hour" not in time else ""
    return f"{time} {days}".strip()


def _sunday_last(dows: tuple[int, ...]) -> tuple[int, ...]:
    """Weekdays with Sunday as 7 when that makes a run (Monday-based weeks read better)."""
    return tuple(sorted(7 if d == 0 and dows != (0,) and 6 in dows else d for d in dows))


def _describe_time(
    minute_f: str, hour_f: str, minutes: tuple[int, ...], hours: tuple[int, ...]
) -> str | None:
    if hour_f == "*":
        if minute_f == "*":
            return "every minute"
        step = re.fullmatch(r"\*/(\d+)", minute_f)
        if step and 60 % int(step.group(1)) == 0:
            return f"every {step.group(1)} minutes"
        if len(minutes) == 1:
            return f"at minute {minutes[0]} past every hour"
        return f"at minutes {values_text(minutes)} past every hour"
    if len(minutes) * len(hours) <= 4:
        return "at " + _join([f"{h:02d}:{m:02d}" for h in hours for m in minutes])
    hour_step = re.fullmatch(r"\*/(\d+)", hour_f)
    if len(minutes) == 1 and hour_step:
        return f"at minute {minutes[0]} past every {hour_step.group(1)} hours"
    if len(minutes) == 1:
        return f"at minute {minutes[0]} past hours {values_text(hours)}"
    return None
