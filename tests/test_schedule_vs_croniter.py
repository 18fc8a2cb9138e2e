"""Our evaluator against croniter, the chosen cron library, where the two agree on the rules.

schedule.py does its own field matching (see the README for croniter 7.0's divergences:
fall-back days, `5-5`, `5/15`, `*/75`, the day rule without `implement_cron_bug`). In UTC, with
no DST, on ordinary expressions, both must give the same fires: croniter is our second opinion.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cronflow.schedule import parse_schedule

croniter = pytest.importorskip("croniter").croniter

EXPRESSIONS = [
    "* * * * *",
    "*/15 * * * *",
    "5-59/15 * * * *",
    "0 * * * *",
    "30 2 * * *",
    "0 0 * * 0",
    "0 0 * * 7",
    "0 0 1,15 * 1",
    "0 9-17 * * mon-fri",
    "0 0 */2 * mon",
    "0 0 1 jan,jul *",
    "15 10 * * fri-sun",
    "0 12 29 2 *",
    "0 0 31 * *",
    "*/7 * * * *",
    "0 */5 * * *",
    "59 23 31 12 *",
    "0 0 1-7 * 1",
    "1,2,3 4-6 * * *",
    "0 6 * 3-5 *",
]
STARTS = [
    datetime(2026, 1, 1, tzinfo=UTC),
    datetime(2026, 2, 27, 23, 59, tzinfo=UTC),
    datetime(2028, 2, 28, 12, tzinfo=UTC),
]


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_same_fires_as_croniter(expression: str) -> None:
    schedule = parse_schedule(expression)
    for start in STARTS:
        reference = croniter(expression, start, implement_cron_bug=True)
        after = start
        for _ in range(30):
            ours = schedule.next_fire(after, UTC)
            assert ours == reference.get_next(datetime), (expression, after)
            after = ours
