"""The pure parts of remote execution: signatures, settings, URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("celery", reason="the celery extra is not installed")

from cronflow import remote  # noqa: E402
from cronflow.config import parse_config  # noqa: E402
from cronflow.errors import CronflowError  # noqa: E402


def test_a_signature_covers_every_field() -> None:
    message = {"id": "a", "argv": ["true"], "env": {"A": "1"}}
    signature = remote.sign(message, b"secret")
    assert remote.verify(message, signature, b"secret")
    assert not remote.verify(message, signature, b"other secret")
    assert not remote.verify({**message, "argv": ["rm", "-rf", "/"]}, signature, b"secret")
    assert not remote.verify({**message, "env": {"A": "2"}}, signature, b"secret")
    assert not remote.verify(message, None, b"secret")
    assert not remote.verify("not a dict", signature, b"secret")


def test_settings_come_from_the_environment_first(monkeypatch, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    secret.chmod(0o600)
    config = parse_config(
        f'[executor]\nkind = "celery"\nbroker = "redis://:pw@db1:6379/0"\n'
        f'secret_file = "{secret}"\n',
        str(tmp_path / "jobs.toml"),
    )
    monkeypatch.delenv("CRONFLOW_BROKER_URL", raising=False)
    monkeypatch.delenv("CRONFLOW_WORKER_SECRET", raising=False)
    settings = remote.Settings.from_config(config)
    assert (settings.broker, settings.secret) == ("redis://:pw@db1:6379/0", b"from-file")
    assert settings.shown == "redis://:***@db1:6379/0"
    monkeypatch.setenv("CRONFLOW_BROKER_URL", "unix:///run/redis.sock")
    monkeypatch.setenv("CRONFLOW_WORKER_SECRET", "from-env")
    settings = remote.Settings.from_config(config)
    assert (settings.broker, settings.secret) == ("unix:///run/redis.sock", b"from-env")
    assert remote.celery_url(settings.broker) == "redis+socket:///run/redis.sock"


def test_missing_or_loose_secrets_are_one_line_errors(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CRONFLOW_WORKER_SECRET", raising=False)
    monkeypatch.setenv("CRONFLOW_BROKER_URL", "redis://localhost/0")
    with pytest.raises(CronflowError, match="needs a shared secret"):
        remote.Settings.from_config(None)
    loose = tmp_path / "secret"
    loose.write_text("x")
    loose.chmod(0o644)
    config = parse_config(
        f'[executor]\nkind = "celery"\nsecret_file = "{loose}"\n', str(tmp_path / "j.toml")
    )
    with pytest.raises(CronflowError, match="chmod 600"):
        remote.Settings.from_config(config)
    monkeypatch.delenv("CRONFLOW_BROKER_URL")
    with pytest.raises(CronflowError, match="needs a broker"):
        remote.Settings.from_config(None)
