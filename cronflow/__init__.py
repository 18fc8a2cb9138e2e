"""cronflow: cron schedules, flows, retries, history and logs in one small tool."""

__version__ = "0.1.0"
