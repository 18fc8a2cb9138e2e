"""Schedules: cron / @macro / @every / @reboot / @at → the next fire after an instant, in a zone.

Pure: never reads the clock; every instant is an argument. Cron fields are parsed and matched
here rather than by croniter, because croniter 7.0 departs from cron in ways that matter to us
(`5-5` in day-of-month fires daily, `5/15` and `*/75` are accepted, the day-field OR rule needs
`implement_cron_bug=True`, and a fall-back hour fires fixed-time jobs twice). Our own matcher
is small and exact (tests/test_schedule.py checks it against a brute-force walk), so croniter
is not imported at all.

DST policy (SPEC §4): wall-clock times in the job's zone. A schedule whose minute or hour field
starts with `*` follows the clock (a gap has no fires, a repeated hour fires twice); any other
is fixed-time (a wall time in a gap fires once at the end of the gap, a repeated wall time fires
at its first occurrence only). All comparisons happen on UTC instants.
"""

from __future__ import annotations

import calendar
import functools
import re
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

from cronflow import wording
from cronflow.calendar_words import DAY_NAMES, DAY_WORDS, MONTH_NAMES, MONTH_WORDS
from cronflow.units import gap_end, parse_duration, toml_text

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MINUTE = timedelta(minutes=1)
_MICROSECOND = timedelta(microseconds=1)
_LOOK_AHEAD = timedelta(hours=3)  # longer than any repeated hour in the tz database
# Longest search for a cron fire: Feb 29 on a given weekday can be 40 years away.
_MAX_MONTHS = 12 * 60

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FORMS = (
    "5 cron fields (minute hour day-of-month month day-of-week), "
    + ", ".join(MACROS)
    + ", @every DURATION, @reboot or @at DATE-TIME"
)

_FULL_MONTHS = tuple(m.lower() for m in MONTH_WORDS[1:])
_FULL_DAYS = tuple(d.lower() for d in DAY_WORDS)


class ScheduleError(ValueError):
    """A schedule the user wrote that cronflow cannot accept; the message says what is allowed."""


class _Field(NamedTuple):  # a constant table: cheaper to create than a dataclass
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    name_base: int = 0
    every_unit: str = ""  # suggested @every unit when a step is too large

    @property
    def span(self) -> str:
        return f"{self.low}-{self.high}" + (
            ", Sunday is 0 or 7" if self.name == "day-of-week" else ""
        )


_FIELDS = (
    _Field("minute", 0, 59, every_unit="m"),
    _Field("hour", 0, 23, every_unit="h"),
    _Field("day-of-month", 1, 31, every_unit="d"),
    _Field("month", 1, 12, MONTH_NAMES, 1),
    _Field("day-of-week", 0, 7, DAY_NAMES, 0),
)
_TOKEN_RE = re.compile(r"(?:(\*)|(\w+)(?:-(\w+))?)(?:/(\w+))?")


def _value(word: str, fld: _Field, token: str) -> int:
    """One number or 3-letter name of a field, checked against the field's range."""
    if word.isdigit():
        number = int(word)
        if not fld.low <= number <= fld.high:
            raise ScheduleError(
                f"{number} is out of range for the {fld.name} field (allowed {fld.span})"
            )
        return number
    lower = word.lower()
    if lower in fld.names:
        return fld.names.index(lower) + fld.name_base
    raise ScheduleError(_bad_word(word, fld, token))


def _bad_word(word: str, fld: _Field, token: str) -> str:
    lower = word.lower()
    if re.fullmatch(r"\d*(L|W|LW)", word, re.IGNORECASE):
        return _unsupported(token, fld)
    if fld.name == "day-of-week" and lower in _FULL_DAYS:
        return f"full day names like {word!r} are not supported; use {lower[:3]!r}"
    if fld.name == "month" and lower in _FULL_MONTHS:
        return f"full month names like {word!r} are not supported; use {lower[:3]!r}"
    if fld.names:
        what = "day" if fld.name == "day-of-week" else "month"
        return (
            f"{word!r} is not a {what} name or number in {token!r}; "
            f"use {fld.low}-{fld.high} or {fld.names[0]}-{fld.names[-1]}"
        )
    return _unsupported(token, fld)


def _unsupported(token: str, fld: _Field) -> str:
    upper = token.upper()
    if "#" in token:
        extension = "'#' (nth weekday of the month)"
    elif "?" in token:
        extension = "'?' (no specific value; use '*')"
    elif "L" in upper or "W" in upper:
        extension = "'L' or 'W' (last day, nearest weekday)"
    else:
        return (
            f"{token!r} is not valid in the {fld.name} field; use numbers ({fld.span}), "
            "'*', lists (1,5), ranges (1-5) and steps (*/15, 5-59/15)"
        )
    return (
        f"{token!r} in the {fld.name} field is not supported: {extension} is an extension "
        "only some cron tools accept; use numbers, '*', lists, ranges and steps"
    )


def _parse_field(text: str, fld: _Field) -> frozenset[int]:
    """The set of values a cron field allows (day-of-week 7 folded into 0)."""
    values: set[int] = set()
    for token in text.split(","):
        match = _TOKEN_RE.fullmatch(token)
        if not match:
            raise ScheduleError(
                _unsupported(token, fld)
                if token
                else f"empty item in {text!r} in the {fld.name} field"
            )
        star, first, last, step_text = match.groups()
        step = _step(step_text, fld, token) if step_text else 1
        if star:
            low, high = fld.low, fld.high
        else:
            low = _value(first, fld, token)
            if last is None and step_text:
                raise ScheduleError(
                    f"{token!r} in the {fld.name} field has a step without a range; "
                    f"write '{first}-{fld.high}/{step}' or '*/{step}'"
                )
            high = low if last is None else _value(last, fld, token)
            if fld.name == "day-of-week" and high == 0 and low > 0:
                high = 7  # a day-of-week range may end at Sunday: fri-sun, 5-0
            if high < low:
                raise ScheduleError(
                    f"range {token!r} in the {fld.name} field is reversed; "
                    "write the smaller value first"
                    + (" (a range may end at Sunday: fri-sun)" if fld.names == DAY_NAMES else "")
                )
        values.update(range(low, high + 1, step))
    if fld.name == "day-of-week" and 7 in values:
        values.discard(7)
        values.add(0)
    return frozenset(values)


def _step(text: str, fld: _Field, token: str) -> int:
    if not text.isdigit():
        raise ScheduleError(f"step {text!r} in {token!r} must be a whole number")
    step = int(text)
    if step == 0:
        raise ScheduleError(f"step 0 in {token!r} is not allowed; a step must be at least 1")
    if step > fld.high:
        hint = f"; use '@every {step}{fld.every_unit}' instead" if fld.every_unit else ""
        raise ScheduleError(f"step {step} is larger than the {fld.name} field ({fld.span}){hint}")
    return step


def _check_can_fire(text: str, doms: frozenset[int], months: frozenset[int]) -> None:
    """With the AND day rule, some allowed day must exist in some allowed month (Feb has 29)."""
    if any(day <= calendar.monthrange(2000, month)[1] for month in months for day in doms):
        return
    days = wording.values_text(tuple(sorted(doms)))
    month_list = wording.values_text(tuple(sorted(months)), MONTH_WORDS)
    raise ScheduleError(
        f"{text!r} can never fire: day {days} of the month never falls in {month_list}"
    )


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule; build it with `parse_schedule`."""

    text: str
    kind: str  # "cron" | "every" | "reboot" | "at"
    _fields: tuple[str, ...] = field(default=(), repr=False, compare=False)
    _sets: tuple[tuple[int, ...], ...] = field(default=(), repr=False, compare=False)
    _day_or: bool = field(default=False, repr=False, compare=False)
    _interval: int = field(default=0, repr=False, compare=False)
    _at: datetime | None = field(default=None, repr=False, compare=False)
    _days_cache: dict[tuple[int, int], tuple[int, ...]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def follows_clock(self) -> bool:
        """True when the minute or hour field starts with '*': such a schedule follows the
        wall clock across DST changes instead of being a fixed-time job."""
        return self.kind == "cron" and (self._fields[0][0] == "*" or self._fields[1][0] == "*")

    def next_fire(self, after: datetime, tz: ZoneInfo) -> datetime | None:
        """First fire strictly after `after` (any aware datetime), as an aware datetime in tz.
        None for @reboot, and for @at when its time is not after `after`."""
        after_utc = after.astimezone(UTC)
        if self.kind == "every":
            step = timedelta(seconds=self._interval)
            count = (after_utc - _EPOCH) // step + 1
            return (_EPOCH + count * step).astimezone(tz)
        if self.kind == "at":
            assert self._at is not None
            fire = self._at if self._at.tzinfo else _instants(self._at, tz, False)[0]
            fire = fire.astimezone(UTC)
            return fire.astimezone(tz) if fire > after_utc else None
        if self.kind == "reboot":
            return None
        return self._next_cron(after_utc, tz)

    def fires_between(
        self, start: datetime, end: datetime, tz: ZoneInfo, limit: int | None = None
    ) -> list[datetime]:
        """All fires T with start <= T <= end, oldest first (at most `limit`)."""
        fires: list[datetime] = []
        end_utc = end.astimezone(UTC)
        moment = start.astimezone(UTC) - _MICROSECOND
        while limit is None or len(fires) < limit:
            try:
                fire = self.next_fire(moment, tz)
            except (ValueError, OverflowError):  # the next fire is past year 9999: none left
                break
            if fire is None or fire.astimezone(UTC) > end_utc:
                break
            fires.append(fire)
            moment = fire
        return fires

    def previous_fire(self, before: datetime, tz: ZoneInfo) -> datetime | None:
        """The last fire strictly before `before`, in tz; None if there is none (for @reboot,
        or an @at not yet due). Searches back in windows growing fourfold, up to _MAX_MONTHS."""
        if self.kind == "reboot":
            return None
        end = before.astimezone(UTC) - _MICROSECOND
        window = timedelta(minutes=2)
        while window < timedelta(days=31 * _MAX_MONTHS):
            try:
                fires = self.fires_between(end - window, end, tz)
            except (ValueError, OverflowError):  # before year 1: none left
                return None
            if fires:
                return fires[-1]
            window *= 4
        return None

    def excluded_by(self, moment: datetime, tz: ZoneInfo) -> list[str]:
        """The cron fields that the wall time of `moment` in tz does not match (cron only)."""
        if self.kind != "cron":
            return []
        wall = moment.astimezone(tz)
        minutes, hours, doms, months, dows = self._sets
        dow = (wall.weekday() + 1) % 7
        misses = []
        if wall.minute not in minutes:
            misses.append("minute")
        if wall.hour not in hours:
            misses.append("hour")
        if wall.month not in months:
            misses.append("month")
        in_dom, in_dow = wall.day in doms, dow in dows
        if self._day_or and not (in_dom or in_dow):
            misses.append("day-of-month and day-of-week")
        elif not self._day_or and not in_dom:
            misses.append("day-of-month")
        elif not self._day_or and not in_dow:
            misses.append("day-of-week")
        return misses

    def field_text(self, name: str) -> str:
        """The text of one cron field as written ("minute" → "30")."""
        names = [f.name for f in _FIELDS]
        if name not in names or not self._fields:
            return ""
        return self._fields[names.index(name)]

    def describe(self) -> str:
        """Plain English for `list` and `next`: "at 06:00 every day", "every 15 minutes"."""
        return self._description

    @functools.cached_property
    def _description(self) -> str:
        # Worded once per schedule: parse_schedule shares one Schedule between the jobs that
        # write the same text, so `list` of 1,000 jobs words each distinct schedule once.
        if self.kind == "reboot":
            return "once when the daemon starts after boot"
        if self.kind == "every":
            return f"every {wording.interval(self._interval)} (aligned to the epoch)"
        if self.kind == "at":
            assert self._at is not None
            return "once at " + wording.moment(self._at)
        return wording.cron(self._fields, self._sets) or f"cron: {self.text}"

    # -- cron search -------------------------------------------------------------------------

    def _next_cron(self, after_utc: datetime, tz: ZoneInfo) -> datetime | None:
        # Walk matching wall times in order. The earliest instant of each wall time grows with
        # the wall time, so once a wall time's earliest instant is past `after` nothing later can
        # beat it; until then, second occurrences in a repeated hour may be the answer.
        local = after_utc.astimezone(tz)
        wall = local.replace(tzinfo=None, fold=0, second=0, microsecond=0)
        if self.follows_clock:
            wall -= _fall_back_ahead(after_utc, local, tz)
        best: datetime | None = None
        while (found := self._next_wall(wall)) is not None:
            wall = found
            instants = _instants(wall, tz, self.follows_clock)
            later = [t for t in instants if t > after_utc]
            if later and (best is None or later[0] < best):
                best = later[0]
            if instants and instants[0] > after_utc:
                break
            wall += _MINUTE
        return None if best is None else best.astimezone(tz)

    def _next_wall(self, start: datetime) -> datetime | None:
        """The first naive wall time at or after `start` that matches all five fields."""
        minutes, hours, _doms, months, _dows = self._sets
        year, month, day, hour, minute = (
            start.year,
            start.month,
            start.day,
            start.hour,
            start.minute,
        )
        for _ in range(_MAX_MONTHS):
            if month in months:
                days = self._days(year, month)
                for d in days[bisect_left(days, day) :]:
                    first_hour = hour if d == day else 0
                    for h in hours[bisect_left(hours, first_hour) :]:
                        first_minute = minute if (d == day and h == hour) else 0
                        i = bisect_left(minutes, first_minute)
                        if i < len(minutes):
                            return datetime(year, month, d, h, minutes[i])
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
            day, hour, minute = 1, 0, 0
        return None

    def _days(self, year: int, month: int) -> tuple[int, ...]:
        """Matching days of one month; depends only on its first weekday and length."""
        first_weekday, length = calendar.monthrange(year, month)
        key = (first_weekday, length)
        days = self._days_cache.get(key)
        if days is None:
            _m, _h, doms, _mo, dows = self._sets
            sunday_based = (first_weekday + 1) % 7
            matches = []
            for d in range(1, length + 1):
                in_dom, in_dow = d in doms, (sunday_based + d - 1) % 7 in dows
                if (in_dom or in_dow) if self._day_or else (in_dom and in_dow):
                    matches.append(d)
            days = self._days_cache[key] = tuple(matches)
        return days


def _instants(wall: datetime, tz: ZoneInfo, follows_clock: bool) -> list[datetime]:
    """The UTC instants at which a matching naive wall time fires, oldest first.

    For a fixed-time schedule this maps wall times to instants monotonically (first occurrence
    of a repeated time, end of the gap for a missing one); for a clock-following one, both
    occurrences or none. In both cases the first instant never decreases as the wall time grows.
    """
    before = wall.replace(tzinfo=tz).utcoffset()
    after = wall.replace(tzinfo=tz, fold=1).utcoffset()
    assert before is not None and after is not None
    if before == after:
        return [(wall - before).replace(tzinfo=UTC)]
    if before > after:  # repeated (fall-back) wall time
        first = (wall - before).replace(tzinfo=UTC)
        return [first, (wall - after).replace(tzinfo=UTC)] if follows_clock else [first]
    if follows_clock:  # a wall time in a spring-forward gap does not exist
        return []
    return [gap_end(wall, before, after, tz)]


def _fall_back_ahead(after_utc: datetime, local: datetime, tz: ZoneInfo) -> timedelta:
    """How far a fall-back within the next hours turns the clock back (else zero).

    In the first pass of a repeated hour, wall times earlier than the current one still have a
    second occurrence ahead, so a clock-following search starts that much earlier.
    """
    now, ahead = local.utcoffset(), (after_utc + _LOOK_AHEAD).astimezone(tz).utcoffset()
    assert now is not None and ahead is not None
    return now - ahead if ahead < now else timedelta(0)


# -- parsing ---------------------------------------------------------------------------------


def parse_schedule(text: str) -> Schedule:
    """Parse a schedule as written in a job file. Raises ScheduleError saying what is allowed.

    Each distinct text is compiled once per process: a file of 1,000 jobs usually holds a few
    dozen schedules, and a Schedule is immutable (its day cache depends only on the text), so
    jobs, reloads and `cronflow list` share one. A refused text is not cached.
    """
    if not isinstance(text, str):
        raise ScheduleError(f"expected a schedule as text, got {toml_text(text)}")
    return _compiled(text)


@functools.lru_cache(maxsize=1024)
def _compiled(text: str) -> Schedule:
    if not text.strip():
        raise ScheduleError(f"empty schedule; expected {_FORMS}")
    words = text.split()
    head = words[0].lower()
    if head.startswith("@"):
        return _parse_macro(text, head, words[1:])
    return _parse_cron(text, words)


def _parse_macro(text: str, head: str, rest: list[str]) -> Schedule:
    if head in MACROS or head == "@reboot":
        if rest:
            raise ScheduleError(f"{head} takes nothing after it, got {' '.join(rest)!r}")
        if head == "@reboot":
            return Schedule(text, "reboot")
        return _parse_cron(text, MACROS[head].split())
    if head == "@every":
        if len(rest) != 1:
            raise ScheduleError("@every needs one duration, like '@every 15m' or '@every 1h30m'")
        try:
            seconds = parse_duration(rest[0])
        except ValueError as err:
            raise ScheduleError(f"@every: {err}") from None
        if seconds <= 0:
            raise ScheduleError("@every needs a duration longer than zero, like '@every 15m'")
        return Schedule(text, "every", _interval=int(seconds))
    if head == "@at":
        return Schedule(text, "at", _at=_parse_at(" ".join(rest)))
    raise ScheduleError(f"unknown schedule {head!r}; expected {_FORMS}")


def _parse_at(value: str) -> datetime:
    try:
        if len(value) == 10:
            return datetime.fromisoformat(value + "T00:00")
        return datetime.fromisoformat(value)
    except ValueError:
        raise ScheduleError(
            f"@at needs an ISO 8601 date-time like '@at 2026-12-07T07:00' "
            f"(optionally with an offset like +01:00), got {value!r}"
        ) from None


def _parse_cron(text: str, words: list[str]) -> Schedule:
    if len(words) != 5:
        seconds = " (a seconds field is not supported)" if len(words) in (6, 7) else ""
        raise ScheduleError(
            f"expected 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(words)} in {text!r}{seconds}"
        )
    sets = tuple(_parse_field(word, fld) for word, fld in zip(words, _FIELDS, strict=True))
    day_or = words[2][0] != "*" and words[4][0] != "*"
    if not day_or:
        _check_can_fire(text, sets[2], sets[3])
    return Schedule(
        text,
        "cron",
        _fields=tuple(words),
        _sets=tuple(tuple(sorted(s)) for s in sets),
        _day_or=day_or,
    )
