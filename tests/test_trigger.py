"""Trigger requests: the store's table, and the daemon taking them at a wake-up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cronflow import trigger as triggering
from cronflow.clock import VirtualClock
from cronflow.config import load_config
from cronflow.daemon import Daemon
from cronflow.engine import Engine
from cronflow.errors import CronflowError
from cronflow.store import Store
from cronflow.systemd import Notifier

T0 = datetime(2026, 11, 24, 10, tzinfo=UTC)
FLOW = (
    '[jobs.extract]\ncommand = "true"\nschedule = "0 3 * * *"\n'
    '[jobs.load]\ncommand = "true"\nafter = ["extract"]\n'
    '[jobs.report]\ncommand = "true"\nafter = ["load"]\n'
)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state" / "cronflow.db", clock=VirtualClock(T0))


def test_a_request_is_taken_once_with_its_flow_run(store: Store) -> None:
    request_id = store.request_trigger("load", T0, False, "manual", T0)
    assert [r.id for r in store.pending_triggers()] == [request_id]
    created = store.take_trigger(request_id, "extract", ("load", "report"), T0)
    assert created is not None
    flow_run_id, run_ids = created
    assert store.take_trigger(request_id, "extract", ("load",), T0) is None  # once only
    assert store.pending_triggers() == []
    taken = store.get_trigger(request_id)
    assert taken is not None and taken.flow_run_id == flow_run_id and taken.taken_at == T0
    runs = store.runs_in_flow_run(flow_run_id)
    assert [(r.job, r.trigger, r.status, r.logical_time) for r in runs] == [
        ("load", "manual", "queued", T0),
        ("report", "manual", "queued", T0),
    ]
    assert {r.job: r.run_id for r in runs} == run_ids


def test_a_refused_request_keeps_its_reason(store: Store) -> None:
    request_id = store.request_trigger("ghost", T0, True, "manual", T0)
    store.refuse_trigger(request_id, "no job named 'ghost'", T0)
    taken = store.get_trigger(request_id)
    assert taken is not None and taken.note == "no job named 'ghost'" and taken.flow_run_id is None
    assert taken.only and store.pending_triggers() == []


def test_data_version_moves_when_another_connection_commits(store: Store) -> None:
    reader = Store(store.path, readonly=True)
    before = reader.data_version()
    assert reader.data_version() == before
    store.set_paused(["extract"], True, T0)
    assert reader.data_version() != before


def _daemon(tmp_path: Path, store: Store) -> tuple[Daemon, list[tuple[str, tuple[str, ...]]]]:
    config = tmp_path / "jobs.toml"
    config.write_text(FLOW)
    clock = VirtualClock(T0)
    daemon = Daemon(config, store, clock=clock, notifier=Notifier(None))
    daemon.engine = Engine(store, max_parallel=4, clock=clock)
    launched: list[tuple[str, tuple[str, ...]]] = []

    def launch(flow, plan, work) -> None:  # type: ignore[no-untyped-def]
        work.close()  # the coroutine is not run here: what is tested is what gets launched
        launched.append((plan.trigger, plan.jobs))

    daemon._launch = launch  # type: ignore[method-assign]
    daemon._reload(first=True)
    return daemon, launched


def test_the_daemon_takes_pending_requests_at_a_wake_up(tmp_path: Path, store: Store) -> None:
    daemon, launched = _daemon(tmp_path, store)
    store.set_paused(["extract"], True, T0)  # a paused flow still runs by hand
    store.request_trigger("load", T0, False, "manual", T0)
    store.request_trigger("load", T0, True, "retry", T0)
    ghost = store.request_trigger("ghost", T0, False, "manual", T0)
    daemon._take_triggers()
    assert launched == [("manual", ("load", "report")), ("retry", ("load",))]
    assert store.pending_triggers() == []
    refused = store.get_trigger(ghost)
    assert refused is not None and "no job named 'ghost'" in (refused.note or "")
    daemon._take_triggers()
    assert len(launched) == 2


def test_a_stopping_daemon_leaves_requests_pending(tmp_path: Path, store: Store) -> None:
    daemon, launched = _daemon(tmp_path, store)
    store.request_trigger("load", T0, False, "manual", T0)
    daemon.stopping.set()
    daemon._take_triggers()
    assert launched == [] and len(store.pending_triggers()) == 1


def test_a_request_no_daemon_took_within_an_hour_expires(tmp_path: Path, store: Store) -> None:
    daemon, launched = _daemon(tmp_path, store)
    old = store.request_trigger("load", T0, False, "manual", T0 - timedelta(hours=2))
    fresh = store.request_trigger("load", T0, False, "manual", T0 - timedelta(minutes=5))
    daemon._take_triggers()
    assert launched == [("manual", ("load", "report"))]
    expired = store.get_trigger(old)
    assert expired is not None and expired.note == "expired: no daemon took it within 1h"
    assert store.get_trigger(fresh).flow_run_id is not None


def test_no_daemon_no_request(tmp_path: Path, store: Store) -> None:
    config = tmp_path / "jobs.toml"
    config.write_text(FLOW)
    cfg = load_config(config)
    with pytest.raises(CronflowError, match=r"no cronflow daemon is running.*cronflow run load"):
        triggering.request(store, cfg, tmp_path / "state", "load", T0, now=T0)
    assert store.pending_triggers() == []
    with pytest.raises(CronflowError, match="no job named 'lod'"):
        triggering.request(store, cfg, tmp_path / "state", "lod", T0, now=T0)
