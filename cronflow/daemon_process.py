"""The daemon's own process: `cronflow daemon` execs into this lean entry point.

    python -m cronflow.daemon_process JOB_FILE STATE_DIR

The CLI resolves the paths, then replaces itself (same PID, environment and descriptors, so
systemd's `Type=notify` and the lock see one process) with an interpreter that imports only
what the scheduler uses. A long-running daemon never holds typer, click, rich or the CLI's
parsed arguments, and, when the job file names no workers at start, not the `ssl` module
either (asyncio imports it for TLS connections a local daemon never opens: about 4.5 MB of
OpenSSL). See bench/README.md, "A lighter daemon".
"""

from __future__ import annotations

import sys
from pathlib import Path


def wants_workers(config_path: Path) -> bool:
    """Whether the job file may name Celery workers; True when in doubt (TLS then stays)."""
    try:
        text = config_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True
    return "celery" in text


def import_asyncio_without_tls() -> None:
    """Import asyncio while `import ssl` fails, as on a Python built without OpenSSL.

    asyncio then leaves TLS out (it checks `ssl is None`); the module stays importable for
    anything else afterwards. `remote` refuses a rediss:// broker in such a process with a
    message that says to restart the daemon.
    """
    if "ssl" in sys.modules or "asyncio" in sys.modules:
        return
    sys.modules["ssl"] = None  # type: ignore[assignment]
    try:
        import asyncio  # noqa: F401
    finally:
        del sys.modules["ssl"]


def main(argv: list[str] | None = None) -> None:
    config_path, state_dir = (Path(a) for a in (argv or sys.argv[1:]))
    if not wants_workers(config_path):
        import_asyncio_without_tls()
    from cronflow.daemon import run_daemon
    from cronflow.errors import ConfigError, CronflowError
    from cronflow.store import Store

    try:
        with Store(state_dir / "cronflow.db") as store:
            run_daemon(config_path, store, state_dir / "cronflow.lock")
    except ConfigError as exc:
        from cronflow import render

        render.problems(exc.problems)
        sys.exit(exc.exit_code)
    except CronflowError as exc:
        from cronflow import render

        render.error(exc.message)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
