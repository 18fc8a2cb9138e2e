"""`cronflow edit`: the `crontab -e` loop on a private copy of the job file."""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cronflow.config import parse_config, read_job_file
from cronflow.editing import ChangedMeanwhile, write_atomic
from cronflow.errors import ConfigError, CronflowError, Problem


def editor_command(environ: Mapping[str, str]) -> list[str]:
    """$VISUAL, else $EDITOR, else vi, split like a shell would (`EDITOR="code --wait"`)."""
    for variable in ("VISUAL", "EDITOR"):
        value = environ.get(variable, "")
        if not value.strip():
            continue
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise CronflowError(f"${variable}: cannot split {value!r}: {exc}", 2) from None
        if argv:
            return argv
    return ["vi"]


def run_editor(argv: list[str], file: Path) -> None:
    """Run the editor on `file` in the foreground; refuse (exit 1) when it fails."""
    try:
        code = subprocess.run([*argv, str(file)], check=False).returncode
    except OSError as exc:
        raise CronflowError(
            f"cannot start the editor {argv[0]!r}: {exc.strerror}; set $VISUAL or $EDITOR"
        ) from None
    if code != 0:
        raise CronflowError(f"the editor exited with status {code}; nothing saved")


@dataclass(frozen=True)
class EditOutcome:
    saved: bool  # False: the edit left the file as it was


def edit_job_file(
    path: Path,
    open_editor: Callable[[Path], None],
    ask_again: Callable[[ConfigError], bool],
) -> EditOutcome:
    """The `crontab -e` loop: edit a private copy, save it only when valid.

    `open_editor` edits the copy (raising to abandon); an invalid result is passed to
    `ask_again`, whose "no" leaves the job file unchanged (exit 2). Problems name the real
    job file, with the lines of the copy the user just saw.
    """
    original = read_job_file(path)
    with tempfile.TemporaryDirectory(prefix="cronflow-edit-") as folder:
        copy = Path(folder) / (path.stem + ".toml")
        copy.write_bytes(original.encode("utf-8"))
        while True:
            open_editor(copy)
            try:
                text = _read_copy(copy, path)
                if text == original:
                    return EditOutcome(saved=False)
                parse_config(text, str(path))
            except ConfigError as exc:
                if ask_again(exc):
                    continue
                raise CronflowError(f"not saved; {path} is unchanged", 2) from None
            _save(path, text, original)
            return EditOutcome(saved=True)


def _save(path: Path, text: str, original: str) -> None:
    """Write the edit unless the job file changed since we read it; then keep the edit, which
    the temporary folder would otherwise take with it, so that the user can merge it."""
    try:
        write_atomic(path, text, expected=original)
    except ChangedMeanwhile:
        fd, kept = tempfile.mkstemp(prefix="cronflow-edit-", suffix=".toml")  # 0600
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        raise CronflowError(
            f"{path} changed while cronflow was editing it; nothing written; your edit is kept "
            f"in {kept}; run `cronflow edit` again and merge it"
        ) from None


def _read_copy(copy: Path, path: Path) -> str:
    try:
        data = copy.read_bytes()
    except FileNotFoundError:
        raise CronflowError(f"the edited copy {copy} is gone; nothing saved") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError([Problem(str(path), line, None, "not UTF-8 text")]) from None
