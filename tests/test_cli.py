"""The commands as functions, for races a subprocess cannot stage."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import typer

from cronflow import cli, editing, manual
from cronflow.cli import jobfile, running, showing
from cronflow.errors import CronflowError

ORIGINAL = '[jobs.a]\ncommand = "true"\n'
THEIRS = ORIGINAL + "# added by someone else meanwhile\n"


@pytest.fixture
def job_file(tmp_path: Path) -> Path:
    path = tmp_path / "jobs.toml"
    path.write_text(ORIGINAL)
    return path


def _racing(monkeypatch: pytest.MonkeyPatch, name: str, path: Path) -> None:
    """Make editing.NAME change the job file on disk after cronflow has read it."""
    real = getattr(editing, name)

    def racing(*args: object, **kwargs: object) -> object:
        result = real(*args, **kwargs)
        path.write_text(THEIRS)
        return result

    monkeypatch.setattr(editing, name, racing)


def test_add_refuses_to_overwrite_a_concurrent_change(
    monkeypatch: pytest.MonkeyPatch, job_file: Path
) -> None:
    _racing(monkeypatch, "add_job", job_file)
    with pytest.raises(CronflowError, match="changed while cronflow was editing it") as info:
        jobfile.add("b", "true", config=job_file)
    assert info.value.exit_code == 1
    assert job_file.read_text() == THEIRS


def test_remove_refuses_to_overwrite_a_concurrent_change(
    monkeypatch: pytest.MonkeyPatch, job_file: Path
) -> None:
    _racing(monkeypatch, "remove_job", job_file)
    with pytest.raises(CronflowError, match="changed while cronflow was editing it"):
        jobfile.remove("a", config=job_file)
    assert job_file.read_text() == THEIRS


def test_import_crontab_write_refuses_to_overwrite_a_concurrent_change(
    monkeypatch: pytest.MonkeyPatch, job_file: Path, tmp_path: Path
) -> None:
    crontab = tmp_path / "crontab"
    crontab.write_text("0 3 * * * backup.sh\n")
    _racing(monkeypatch, "append_block", job_file)
    with pytest.raises(CronflowError, match="changed while cronflow was editing it"):
        jobfile.import_crontab(str(crontab), write=True, config=job_file)
    assert job_file.read_text() == THEIRS


# --- remote execution: the commands around cronflow.remote, with a stand-in for it -----------

CELERY = (
    '[executor]\nkind = "celery"\nbroker = "redis://:s3cret@db1:6379/0"\n'
    '[jobs.a]\ncommand = "true"\n'
)
WORKER = {
    "hostname": "gpu1",
    "queues": ["gpu", "default"],
    "running": [
        {"remote_id": "r-1", "job": "train", "run_id": 12, "attempt": 1,
         "since": "2026-06-01T10:00:00+00:00"}
    ],
    "heartbeat": "2026-06-01T10:00:05+00:00",
}  # fmt: skip


def _fake_remote(monkeypatch: pytest.MonkeyPatch, live_workers: object) -> None:
    module = types.ModuleType("cronflow.remote")
    module.live_workers = live_workers  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cronflow.remote", module)


def test_status_shows_workers_only_for_the_celery_executor(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake_remote(monkeypatch, lambda cfg: [WORKER])
    path = tmp_path / "jobs.toml"
    path.write_text(CELERY)
    showing.status(config=path, as_json=True)
    report = json.loads(capsys.readouterr().out)
    assert report["workers"] == [WORKER] and report["workers_error"] is None
    assert report["broker"] == "redis://:***@db1:6379/0"
    showing.status(config=path, as_json=False)
    out = capsys.readouterr().out
    assert "broker: redis://:***@db1:6379/0" in out and "gpu1  queues gpu, default  train" in out
    path.write_text('[jobs.a]\ncommand = "true"\n')
    showing.status(config=path, as_json=True)
    assert "workers" not in json.loads(capsys.readouterr().out)


def test_status_answers_when_the_broker_does_not(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def unreachable(cfg: object) -> list[dict]:
        raise CronflowError("cannot reach redis://:s3cret@db1:6379/0: Connection refused")

    _fake_remote(monkeypatch, unreachable)
    monkeypatch.setenv("CRONFLOW_BROKER_URL", "rediss://u:envpw@db2/1")
    path = tmp_path / "jobs.toml"
    path.write_text(CELERY)
    showing.status(config=path, as_json=True)
    out = capsys.readouterr().out
    report = json.loads(out)
    assert report["workers"] == [] and report["broker"] == "rediss://u:***@db2/1"
    assert report["workers_error"] == "cannot reach redis://:***@db1:6379/0: Connection refused"
    showing.status(config=path, as_json=False)
    out += capsys.readouterr().out
    assert "s3cret" not in out and "envpw" not in out and "workers: unknown (" in out


def test_workers_lists_live_workers_as_a_table_or_json(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake_remote(monkeypatch, lambda cfg: [WORKER])
    path = tmp_path / "jobs.toml"
    path.write_text(CELERY)
    showing.workers(config=path, as_json=True)
    assert json.loads(capsys.readouterr().out) == [WORKER]
    showing.workers(config=path, as_json=False)
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["HOSTNAME", "QUEUES", "RUNNING", "HEARTBEAT"]
    assert row.startswith("gpu1") and "gpu, default" in row and "train (run 12)" in row
    path.write_text('[jobs.a]\ncommand = "true"\n')
    with pytest.raises(CronflowError, match='kind = "celery"') as info:
        showing.workers(config=path, as_json=False)
    assert info.value.exit_code == 1


def test_worker_passes_its_options_to_run_worker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[tuple] = []
    module = types.ModuleType("cronflow.worker")
    module.run_worker = lambda *args: calls.append(args)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cronflow.worker", module)
    path = tmp_path / "jobs.toml"
    running.worker(["gpu", "db,gpu"], 4, "2m", "box1", config=path)
    running.worker(None, 1, "60s", None, config=path)
    assert calls == [
        (path.absolute(), ["gpu", "db"], 4, 120.0, "box1"),
        (path.absolute(), ["default"], 1, 60.0, None),
    ]
    with pytest.raises(CronflowError, match="--stop-timeout") as info:
        running.worker(None, 1, "soon", None, config=path)
    assert info.value.exit_code == 2


def test_run_local_reaches_run_plans(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[object] = []

    def run_plans(store: object, plans: list, **options: object) -> manual.Outcome:
        seen.append(options["local"])
        return manual.Outcome([], None)

    monkeypatch.setattr(manual, "run_plans", run_plans)
    path = tmp_path / "jobs.toml"
    path.write_text('[jobs.a]\ncommand = "true"\nschedule = "@daily"\n')
    for local in (True, False):
        with pytest.raises(typer.Exit):
            running.run("a", local=local, config=path)
    with pytest.raises(typer.Exit):
        running.run("a", start="2026-01-01", end="2026-01-02", local=True, config=path)
    assert seen == [True, False, True]


@pytest.mark.parametrize(
    ("xdg", "home"),
    [
        ("/x/state", "/home/u"),
        ("/x/state/", "/home/u/"),
        ("", "/home/u"),
        (None, "/home/u"),
        ("relative/state", "/home/u"),
        (None, "/"),
    ],
)
def test_paths_are_those_of_platformdirs(
    monkeypatch: pytest.MonkeyPatch, xdg: str | None, home: str
) -> None:
    """_Paths reads the plain XDG cases itself (platformdirs costs 7 ms to import): the
    answers must stay platformdirs' own."""
    import platformdirs

    for variable in ("CRONFLOW_CONFIG", "CRONFLOW_STATE_DIR"):
        monkeypatch.delenv(variable, raising=False)
    for variable in ("XDG_CONFIG_HOME", "XDG_STATE_HOME"):
        if xdg is None:
            monkeypatch.delenv(variable, raising=False)
        else:
            monkeypatch.setenv(variable, xdg)
    monkeypatch.setenv("HOME", home)
    monkeypatch.setattr(cli._Paths, "config_override", None)
    assert cli._Paths.state_dir() == platformdirs.user_state_path("cronflow", appauthor=False)
    assert cli._Paths.config() == (
        platformdirs.user_config_path("cronflow", appauthor=False) / "cronflow.toml"
    )


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["list"], "list"),
        (["list", "--json"], "list"),
        (["-c", "f.toml", "validate"], "validate"),
        (["--config", "f.toml", "next", "a"], "next"),
        (["--config=f.toml", "list"], "list"),
        (["-cf.toml", "list"], "list"),
        (["--help"], None),
        (["--version"], None),
        (["lsit"], None),
        (["systemd", "install"], None),
        ([], None),
    ],
)
def test_a_plain_command_line_builds_only_its_command(
    args: list[str], name: str | None
) -> None:
    chosen = cli._app_for(args)
    if name is None:
        assert chosen is cli.app
    else:
        assert [cli._command_name(c) for c in chosen.registered_commands] == [name]
        assert chosen.registered_groups == []
        assert len(cli.app.registered_commands) > 1  # the app itself is left whole
