"""Month and day names: what cron fields accept, and the words `wording` reads them out with.

Below both `schedule` and `wording`, so that neither imports the other for them.
"""

from __future__ import annotations

MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# Spelled out rather than taken from `calendar`, whose names follow the locale.
MONTH_WORDS = ("", "January", "February", "March", "April", "May", "June", "July", "August",
               "September", "October", "November", "December")  # fmt: skip
DAY_WORDS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
