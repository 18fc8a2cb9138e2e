"""Durations, sizes, and the times users type on the command line. Pure."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta, tzinfo

_DURATION_RE = re.compile(r"(?:(\d+)([smhd]))")
_DURATION_WHOLE_RE = re.compile(r"(?:\d+[smhd])+")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Patterns used rarely stay text, compiled (and cached by `re`) at their first use: each
# compiled at import would cost every command, `cronflow list` included, ~0.1 ms.
_SIZE = r"(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?"
_SIZE_FACTOR = {
    None: 1,
    "B": 1,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
}

DURATION_HELP = 'a duration like "90s", "5m", "1h30m", "2d", or a whole number of seconds'
SIZE_HELP = 'a size like "512KiB", "1MiB", or a whole number of bytes'


_SCHEME = r"[A-Za-z][A-Za-z0-9+.-]*://"
_PASSWORD_QUERY = r"([?&]password=)[^&#]*"
_URL_IN_TEXT = r"[A-Za-z][A-Za-z0-9+.-]*://\S+"

MAX_DURATION = 100 * 365 * 86400  # a century: beyond it, dates leave what datetime can hold


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_text(value: object) -> str:
    """A value from a job file as TOML spells it, for messages: `true`, `3`, `'soon'`,
    `[1, 'a']`, `{ A = 1 }`, `2026-12-07T07:00:00` (never Python's `True` or `datetime(...)`).
    A string keeps its quotes, written as a TOML literal string where Python's would be one."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(map(toml_text, value)) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        pairs = (
            f"{k if _BARE_KEY.fullmatch(str(k)) else toml_text(str(k))} = {toml_text(v)}"
            for k, v in value.items()
        )
        return "{ " + ", ".join(pairs) + " }"
    return repr(value)  # a string ('soon'), an int, a float (inf, nan and 1.5 alike)


def parse_duration(value: object) -> float:
    """Seconds in a duration: "1h30m", "90s", or an int of seconds. ValueError otherwise."""
    seconds = _duration_seconds(value)
    if seconds > MAX_DURATION:
        raise ValueError(f"{toml_text(value)} is longer than 100 years")
    return seconds


def _duration_seconds(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected {DURATION_HELP}, got {toml_text(value)}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"must not be negative, got {value}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected {DURATION_HELP}, got {toml_text(value)}")
    text = value.strip()
    if text.isdigit():
        return float(text)
    if not _DURATION_WHOLE_RE.fullmatch(text):
        raise ValueError(f"expected {DURATION_HELP}, got {toml_text(value)}")
    return float(sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_RE.findall(text)))


def parse_size(value: object) -> int:
    """Bytes in a size: "512KiB", "1MiB", or an int of bytes. ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected {SIZE_HELP}, got {toml_text(value)}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"must not be negative, got {value}")
        return value
    if not isinstance(value, str) or not (m := re.fullmatch(_SIZE, value.strip())):
        raise ValueError(f"expected {SIZE_HELP}, got {toml_text(value)}")
    return int(m.group(1)) * _SIZE_FACTOR[m.group(2)]


def format_duration(seconds: float) -> str:
    """A short human reading: "45s", "3m 12s", "3h 12m", "2d 4h"."""
    seconds = max(0, int(round(seconds)))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m {secs}s" if secs else f"{minutes}m"
    return f"{secs}s"


# Years a command-line time may fall in. Zone offsets, schedule look-aheads and the fire after
# --to all step a little past the given time; near year 1 or 9999 that step leaves what datetime
# can hold, and a stored logical time before year 1 could never be read back.
FIRST_YEAR, LAST_YEAR = 1900, 9998


def parse_time(text: str, tz: tzinfo) -> datetime:
    """An ISO 8601 date or date-time; without an offset it is read in `tz`. ValueError otherwise."""
    text = text.strip()
    moment = _in_range(_iso_time(text), text)
    return moment if moment.tzinfo else wall_time_in(moment, tz)


def wall_time_in(wall: datetime, tz: tzinfo) -> datetime:
    """A naive wall time in `tz`, read as a fixed-time schedule reads it (SPEC §3): a time that
    happens twice is its first occurrence, a time in a spring-forward gap the instant the gap
    ends (02:30 on Berlin's spring-forward day is 03:00+02:00)."""
    moment = wall.replace(tzinfo=tz)
    before, after = moment.utcoffset(), wall.replace(tzinfo=tz, fold=1).utcoffset()
    if before is None or after is None or before >= after:
        return moment
    return gap_end(wall, before, after, tz).astimezone(tz)


def gap_end(wall: datetime, before: timedelta, after: timedelta, tz: tzinfo) -> datetime:
    """The instant a DST gap containing `wall` ends (its transition), to the second."""
    low = (wall - after).replace(tzinfo=UTC)  # still on the old offset
    high = (wall - before).replace(tzinfo=UTC)  # already on the new offset
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) // 2
        middle = middle.replace(microsecond=0)
        if middle.astimezone(tz).utcoffset() == before:
            low = middle
        else:
            high = middle
    return high


def _iso_time(text: str) -> datetime:
    """A date (its midnight) or date-time, naive unless it carries an offset."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day)
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO 8601 date or date-time (like 2026-12-07 or 2026-12-07T07:00)"
        ) from None


def _in_range(moment: datetime, text: str) -> datetime:
    if not FIRST_YEAR <= moment.year <= LAST_YEAR:  # the wall time: checked before any arithmetic
        raise ValueError(
            f"{text!r} is out of range; use a time in the years {FIRST_YEAR} to {LAST_YEAR}"
        )
    return moment


def parse_since(text: str, now: datetime, tz: tzinfo) -> datetime:
    """`--since`: a duration before `now` ("2h", "7d") or an ISO date/date-time."""
    stripped = text.strip()
    if stripped.isdigit() or _DURATION_WHOLE_RE.fullmatch(stripped):
        return now - timedelta(seconds=parse_duration(stripped))  # its own error: > 100 years
    try:
        _iso_time(stripped)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (like 2h or 7d) nor an ISO 8601 date or date-time"
        ) from None
    return parse_time(stripped, tz)


def mask_url(url: str) -> str:
    """`url` with any password shown as `***`, safe to print: `redis://:***@db1:6379/0`.

    The user part ends at the last `@` before the query, not at the first `/`: an unencoded
    `/` or `@` in a password then masks too much rather than printing the rest of it. redis-py
    also reads `?password=`, so that is masked as well.
    """
    scheme = re.match(_SCHEME, url)
    if not scheme:
        return url
    start = scheme.end()
    ends = [i for i in (url.find("?", start), url.find("#", start)) if i >= 0]
    at = url.rfind("@", start, min(ends, default=len(url)))
    if at >= 0:
        user, colon, _ = url[start:at].partition(":")
        if colon:
            url = f"{url[:start]}{user}:***{url[at:]}"
    return re.sub(_PASSWORD_QUERY, r"\1***", url)


def mask_urls(text: str) -> str:
    """`text` (an error message, say) with every URL in it passed through `mask_url`."""
    return re.sub(_URL_IN_TEXT, lambda m: mask_url(m.group(0)), text)
