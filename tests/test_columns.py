"""Tables at 80 and 200 columns: compact times, cut free text, least valuable columns dropped,
never a cut timestamp."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from cronflow import render
from cronflow.columns import NAME_ROOM, Column, Time, fit, time_cell
from cronflow.overview import JobView

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
FULL_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d")


def test_time_cells() -> None:
    assert time_cell(NOW.replace(hour=6, minute=2), UTC, NOW) == Time(
        "2026-11-30 06:02 UTC", "06:02"
    )
    assert time_cell(datetime(2026, 3, 1, 6, 2, tzinfo=UTC), UTC, NOW).compact == "03-01 06:02"
    assert time_cell(datetime(2025, 3, 1, 6, 2, tzinfo=UTC), UTC, NOW).compact == "2025-03-01 06:02"
    # "today" is today in the zone shown: 23:30 UTC on the 30th is the 1st in Berlin
    late = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)
    assert time_cell(late, BERLIN, NOW).compact == "12-01 00:30"
    assert time_cell(None, UTC, NOW) == "-"


def test_fit_steps() -> None:
    columns = [Column("A"), Column("B", value=1), Column("TEXT", value=5, cut=True, min_cut=6)]
    rows = [["a" * 10, "b" * 10, "the quick brown fox jumps"]]
    assert fit(columns, rows, None)[1] == [rows[0]]
    assert fit(columns, rows, 200)[1] == [rows[0]]
    # 10 + 2 + 10 + 2 + 25 = 49: cut TEXT first
    assert fit(columns, rows, 40) == (
        ["A", "B", "TEXT"],
        [["a" * 10, "b" * 10, "the quick brown…"]],
    )
    # TEXT cannot go below 6: drop B (the least value), then TEXT gets its room back
    assert fit(columns, rows, 25) == (["A", "TEXT"], [["a" * 10, "the quick br…"]])


def views(descriptions: bool = True) -> list[JobView]:
    def view(name, schedule, meaning, fire, description=None, after=()):
        return JobView(
            name, description if descriptions else None, schedule, meaning, "Europe/Berlin",
            fire, "success", after, None, True,
        )  # fmt: skip

    soon = NOW + timedelta(hours=2, minutes=5)
    later = datetime(2026, 12, 24, 6, 0, tzinfo=BERLIN)
    return [
        view("backup-documents", "0 3 * * *", "at 03:00 every day", soon.astimezone(BERLIN),
             "Back up ~/docs to the NAS with restic, then check the repository"),
        view("christmas", "@at 2026-12-24T06:00", "once at 2026-12-24 06:00", later,
             "Send the greetings"),
        view("report", None, "after backup-documents", None, None, ("backup-documents",)),
    ]  # fmt: skip


@pytest.mark.parametrize("width", [80, 200])
def test_list_fits(width: int, capsys: pytest.CaptureFixture[str]) -> None:
    render.job_table(views(), NOW, width=width)
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= width for line in lines), lines
    assert lines[0].startswith("JOB") and "NEXT FIRE" in lines[0]
    if width == 200:  # everything, in full
        assert lines[0].split()[-1] == "DESCRIPTION"
        assert "2026-11-30 11:05 CET (in 2h 5m)" in lines[1]
        assert lines[1].endswith("then check the repository")
    else:  # compact times, columns of least value gone, the rest on one line each
        assert "TIMEZONE" not in lines[0]
        assert "11:05 (in 2h 5m)" in lines[1] and "12-24 06:00" in lines[2]
        assert not FULL_TIME.search(lines[1])
    assert len(lines) == 4  # nothing wrapped


@pytest.mark.parametrize("width", [80, 200])
def test_history_fits_and_never_cuts_a_time(width: int, capsys: pytest.CaptureFixture[str]) -> None:
    started = NOW - timedelta(minutes=3)
    runs = [
        SimpleNamespace(
            run_id=1200 + i,
            job="transform-nightly",
            logical_time=started - timedelta(days=i),
            trigger="backfill",
            status="upstream_failed",
            attempts=2,
            started_at=started,
            duration=123.0,
            exit_code=1,
            host=None,
        )  # fmt: skip
        for i in range(3)
    ]
    render.history_table(runs, UTC, NOW, width=width)
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= width for line in lines), lines
    assert "…" not in "".join(lines)
    if width == 200:
        assert "2026-11-30 07:57 UTC" in lines[1] and "TRIGGER" in lines[0]
    else:
        assert lines[0].split()[:5] == ["RUN", "JOB", "LOGICAL", "TIME", "STATUS"]
        assert "07:57" in lines[1] and "11-29 07:57" in lines[2]


@pytest.mark.parametrize("width", [80, 200])
def test_status_tables_line_up(width: int, capsys: pytest.CaptureFixture[str]) -> None:
    failure = {
        "run_id": 7, "job": "backup-documents", "status": "failed", "host": None,
        "logical_time": (NOW - timedelta(hours=5)).isoformat(),
        "note": "exit code 3; the repository at /srv/restic is locked by another process",
    }  # fmt: skip
    report = {
        "daemon": {"running": False, "pid": None, "since": None, "config": "/j.toml",
                   "config_error": None},
        "running": [],
        "recent_failures": [failure, {**failure, "run_id": 12345, "job": "x"}],
        "paused": [{"flow": "backup-documents", "job": "report"}],
        "next": [{"job": "a", "next_fire": (NOW + timedelta(minutes=30)).isoformat()},
                 {"job": "long-named-job", "next_fire": (NOW + timedelta(days=40)).isoformat()}],
    }  # fmt: skip
    render.status_report(report, UTC, NOW, width=width)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert all(len(line) <= width for line in lines), lines
    assert "running now: none" in lines
    failures = lines[lines.index("recent failures:") + 1 :][:3]
    assert failures[0].split()[:4] == ["RUN", "JOB", "STATUS", "LOGICAL"]
    # aligned: each column starts at the same place in every row
    assert failures[1].index("failed") == failures[2].index("failed") == failures[0].index("STATUS")
    assert "paused flows:\nFLOW              PAUSED BY\nbackup-documents  report\n" in out
    fires = lines[lines.index("next fires:") + 1 :]
    assert fires[1].index("2026-11-30 08:30") == fires[2].index("2027-01-09") == 16


@pytest.mark.parametrize(
    ("columns", "rows", "drawn_here"),
    [
        (["JOB", "WHEN"], [["a", "at 03:00 every day"], ["backup", ""]], True),
        (["JOB", "DESCRIPTION"], [["a", "x é 日本"], ["bb", "cut sho…"]], True),
        (["A-LONG-HEADER", "B"], [["x", "y"]], True),
        (["JOB", "DESCRIPTION"], [["a", "[x] todo"], ["b", "a :smile: b"]], True),  # as written
        (["JOB", "NOTE"], [["a", "[x] " + "n" * 100]], False),  # too wide: rich narrows it
        (["JOB", "DESCRIPTION"], [["a", "first\nsecond\tline"], ["b", "x\ry"]], False),
    ],
)
def test_a_terminal_table_looks_as_rich_draws_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    columns: list[str],
    rows: list[list[str]],
    drawn_here: bool,
) -> None:
    """render draws a terminal table itself (rich took 0.7 s for 1,000 jobs); the text must
    be rich's, and it hands rich what rich would draw otherwise."""
    from rich.console import Console

    monkeypatch.setattr(render, "is_terminal", lambda: True)
    monkeypatch.setattr(
        render, "console", lambda stderr=False: Console(width=60, force_terminal=True)
    )
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    assert render._drawn_as_rich_would(columns, rows) is drawn_here
    raw = capsys.readouterr().out
    here = ansi.sub("", raw)
    monkeypatch.setattr(render, "_drawn_as_rich_would", lambda columns, rows, narrow=True: False)
    render.table(columns, rows)
    by_rich = capsys.readouterr().out
    if drawn_here:
        assert "\x1b[1m" in raw and "\x1b[1m" in by_rich  # the header is bold either way
        assert here == ansi.sub("", by_rich)
        assert all(cell in here for row in rows for cell in row)  # no markup, no emoji codes
    else:
        assert here == ""
        assert rows[0][1][:5] in by_rich  # rich too shows the text as written


def test_a_piped_table_has_one_line_per_row(capsys: pytest.CaptureFixture[str]) -> None:
    """A multi-line description (or a tab) piped: spaces, so each row stays one line."""
    render.table(["JOB", "DESCRIPTION"], [["a", "first\nsecond\tthird"], ["bb", "plain"]])
    assert capsys.readouterr().out.splitlines() == [
        "JOB  DESCRIPTION",
        "a    first second third",
        "bb   plain",
    ]


LONG_NAME = "a-very-long-job-name-for-the-nightly-export-of-every-customer-record-1234567890"


def long_named_views() -> list[JobView]:
    fire = (NOW + timedelta(hours=12, minutes=43)).astimezone(BERLIN)
    return [
        JobView(LONG_NAME, None, "0 3 * * *", "at 03:00 every day", "Europe/Berlin", fire,
                "success", (), None, True),
        JobView("short", None, "0 3 * * *", "at 03:00 every day", "Europe/Berlin", fire,
                None, (), None, True),
    ]  # fmt: skip


@pytest.mark.parametrize("width", range(24, 221, 4))
def test_list_never_cuts_a_time_or_when_but_the_name_gives_way(
    width: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """A long job name at any width: NEXT FIRE whole (its "(in …)" whole or gone), WHEN whole
    or gone; JOB is what is cut: to NAME_ROOM before a column goes, shorter only when nothing
    else is left to give."""
    render.job_table(long_named_views(), NOW, width=width)
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= width for line in lines), lines
    header, first, second = lines
    assert re.search(r"(2026-11-30 )?21:43( CET)?( \(in 12h 43m\))?(  |$)", first), first
    assert "(" not in first or "(in 12h 43m)" in first
    assert ("WHEN" in header) == ("at 03:00 every day" in first)
    rest = first.split(None, 1)[1]  # after the name
    assert "every" not in rest.replace("at 03:00 every day", "")
    name = first.split()[0]
    if name != LONG_NAME:  # cut to NAME_ROOM before anything else goes; below it only at the end
        assert name.endswith("…") and LONG_NAME.startswith(name[:-1])
        if len(name) < NAME_ROOM:
            assert header.split() == ["JOB", "NEXT", "FIRE"] and "(in" not in first
    assert second.split()[0] == "short"


def test_a_long_name_gives_way_to_name_room_first(capsys: pytest.CaptureFixture[str]) -> None:
    name = LONG_NAME[:54]
    view = long_named_views()[0]._replace(name=name)
    render.job_table([view], NOW, width=60)  # 54 + 2 + "NEXT FIRE" does not fit either
    assert capsys.readouterr().out.splitlines()[1] == f"{name[:39]}…  21:43 (in 12h 43m)"
    render.job_table([view], NOW, width=48)  # past NAME_ROOM: the "(in …)" goes first
    assert capsys.readouterr().out.splitlines()[1] == f"{name[:36]}…  21:43"


def test_too_narrow_for_anything_the_table_is_wider_not_cut() -> None:
    columns = [Column("JOB", cut_last=True), Column("NEXT FIRE"), Column("LAST", value=1)]
    cell = Time("2026-11-30 21:43 CET", "21:43", " (in 12h 43m)")
    names, rows = fit(columns, [[LONG_NAME, cell, "success"]], 10)
    assert names == ["JOB", "NEXT FIRE"]
    assert rows == [[LONG_NAME[:11] + "…", "21:43"]]  # cut to min_cut (12) and no further


def test_history_with_a_long_job_name_keeps_its_times(capsys: pytest.CaptureFixture[str]) -> None:
    run = SimpleNamespace(
        run_id=7, job=LONG_NAME, logical_time=NOW - timedelta(days=1), trigger="schedule",
        status="failed", attempts=1, started_at=NOW - timedelta(days=1), duration=1.0,
        exit_code=1, host=None,
    )  # fmt: skip
    render.history_table([run], UTC, NOW, width=60)
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["RUN", "JOB", "LOGICAL", "TIME", "STATUS"]
    assert row.split()[2:] == ["11-29", "08:00", "failed"]
    assert row.split()[1].endswith("…") and len(row) <= 60


def test_a_fitted_table_wider_than_the_terminal_is_not_narrowed_by_rich(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Drawn here or by rich (a control character in a cell), a fitted table that cannot fit
    keeps every character: the terminal wraps the line, no time loses its minutes."""
    from rich.console import Console

    monkeypatch.setattr(render, "is_terminal", lambda: True)
    monkeypatch.setattr(
        render, "console", lambda stderr=False: Console(width=30, force_terminal=True)
    )
    columns = [Column("JOB", cut_last=True), Column("NEXT FIRE"), Column("NOTE", cut=True)]
    for note in ("plain note", "tab\there"):
        row = ["job-name-of-20-chars", Time("x", "11-30 21:43"), note]
        render.fitted_table(columns, [row], width=30)
        out = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)
        assert "job-name-of…  11-30 21:43" in out, out  # 37 wide: JOB at min_cut, no further
