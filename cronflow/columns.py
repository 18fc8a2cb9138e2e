"""Tables that fit the terminal: compact times first, then free text cut, then the columns of
least value dropped, then names cut — never a timestamp cut in the middle. Pure: render prints
the result.

A cell is a string, or a `Time` that has a full and a compact spelling and may carry a relative
suffix (" (in 2h 5m)"). Fitting goes in steps and stops at the first that fits `width`:

1. everything in full;
2. times compact (today's as `06:02`, this year's as `11-30 06:02`, older ones in full);
3. columns marked `cut` (descriptions, notes) shortened with "…", down to `min_cut` each;
4. columns dropped, least `value` first, until the rest fits (the cut columns then get back
   the room that freed). Columns with `value=None` are never dropped;
5. the relative suffixes of times dropped, each as a whole;
6. columns marked `cut_last` (job names) shortened with "…", down to `min_cut` each — though
   in step 3 already a name longer than NAME_ROOM is cut to it, before any column is dropped.

A time is never shortened, and no column is cut but those marked: a plain-English schedule cut
in the middle reads as something else, so such a column is dropped instead. When even step 6
does not fit (a terminal narrower than a job name's first characters and a time), the table is
as narrow as it can be and wider than `width`: the terminal wraps its lines, nothing is lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import NamedTuple

GAP = 2  # spaces between columns
ELLIPSIS = "…"


# Column and Time are NamedTuples rather than frozen dataclasses: as immutable, and cheaper
# to create (a dataclass compiles its methods when its module is imported).
#: A name is cut to this (in step 3) before a column is dropped for it.
NAME_ROOM = 32


class Column(NamedTuple):
    name: str
    value: int | None = None  # None: never dropped; else lower values are dropped first
    cut: bool = False  # free text that may be shortened with "…"
    min_cut: int = 12
    cut_last: bool = False  # a name: shortened with "…" only when nothing else is left to give


class Time(NamedTuple):
    full: str
    compact: str
    suffix: str = ""  # " (in 2h 5m)": dropped as a whole when room is short, never cut

    def __str__(self) -> str:
        return self.full + self.suffix


Cell = str | Time


def time_cell(
    moment: datetime | None, zone: tzinfo | None, now: datetime, suffix: str = ""
) -> Cell:
    """A time in `zone`: in full "2026-11-25 03:00 CET", compact "03:00" (today in that zone),
    "11-25 03:00" (this year) or the full date and minute (other years)."""
    if moment is None:
        return "-"
    local = moment.astimezone(zone)
    full = local.strftime("%Y-%m-%d %H:%M %Z" if local.second == 0 else "%Y-%m-%d %H:%M:%S %Z")
    today = now.astimezone(zone).date()
    if local.date() == today:
        compact = local.strftime("%H:%M")
    elif local.year == today.year:
        compact = local.strftime("%m-%d %H:%M")
    else:
        compact = local.strftime("%Y-%m-%d %H:%M")
    return Time(full, compact, suffix)


def fit(
    columns: Sequence[Column], rows: Sequence[Sequence[Cell]], width: int | None
) -> tuple[list[str], list[list[str]]]:
    """The header and rows to print within `width` characters (None: no limit); wider only
    when the columns that are never dropped, cut as far as they go, are wider."""
    keep = list(range(len(columns)))
    texts = [[str(cell) for cell in row] for row in rows]
    if width is None or _total(columns, texts, keep) <= width:
        return _select(columns, texts, keep)
    texts = [[c.compact + c.suffix if isinstance(c, Time) else c for c in row] for row in rows]
    # Free text gives way first; a long name gives way to NAME_ROOM before a column is dropped.
    free_text = [
        max(c.min_cut, NAME_ROOM) if c.cut_last else c.min_cut if c.cut else None for c in columns
    ]
    values = {i: c.value for i, c in enumerate(columns) if c.value is not None}
    droppable = sorted(values, key=lambda i: values[i])
    while True:
        cut, fits = _cut_to(columns, texts, keep, width, free_text)
        if fits or not droppable:
            break
        keep.remove(droppable.pop(0))
    if fits:
        return _select(columns, cut, keep)
    texts = [[c.compact if isinstance(c, Time) else c for c in row] for row in rows]
    cut, fits = _cut_to(columns, texts, keep, width, free_text)
    if not fits:
        names = [c.min_cut if c.cut or c.cut_last else None for c in columns]
        cut, fits = _cut_to(columns, texts, keep, width, names)
    return _select(columns, cut, keep)


def _widths(columns: Sequence[Column], texts: list[list[str]], keep: list[int]) -> list[int]:
    return [max([len(columns[i].name), *(len(row[i]) for row in texts)]) for i in keep]


def _total(columns: Sequence[Column], texts: list[list[str]], keep: list[int]) -> int:
    return sum(_widths(columns, texts, keep)) + GAP * (len(keep) - 1)


def _cut_to(
    columns: Sequence[Column],
    texts: list[list[str]],
    keep: list[int],
    width: int,
    shortest: Sequence[int | None],
) -> tuple[list[list[str]], bool]:
    """`texts` with the columns that have a `shortest` width shortened so that the kept
    columns fit, and True; if they cannot without going below it, the texts with those
    columns cut as far as that, and False."""
    over = _total(columns, texts, keep) - width
    if over <= 0:
        return texts, True
    widths = dict(zip(keep, _widths(columns, texts, keep), strict=True))
    cut = [i for i in keep if shortest[i] is not None]
    room = {i: max(widths[i] - max(shortest[i] or 0, len(columns[i].name)), 0) for i in cut}
    fits = sum(room.values()) >= over
    limits = dict(widths)
    for i in sorted(cut, key=lambda i: -widths[i]):  # the widest gives first
        take = min(room[i], over)
        limits[i] -= take
        over -= take
    return [[_shorten(cell, limits.get(i)) for i, cell in enumerate(row)] for row in texts], fits


def _shorten(text: str, limit: int | None) -> str:
    if limit is None or len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)].rstrip() + ELLIPSIS


def _select(
    columns: Sequence[Column], texts: list[list[str]], keep: list[int]
) -> tuple[list[str], list[list[str]]]:
    if len(keep) == len(columns):
        return [column.name for column in columns], texts
    return [columns[i].name for i in keep], [[row[i] for i in keep] for row in texts]
