"""The daemon's daily retention (``[daemon] retention``): driven by ``Daemon.tick(now)`` with a
fixed clock, over a real TinyDB store and the real EC2 launcher under moto."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from conftest import T0, make_draft
from jobman_cli.clock import FixedClock
from jobman_cli.daemon import Daemon
from jobman_cli.errors import ConfigError, InvalidInput, JobNotFound, StoreError
from jobman_cli.launchers.base import EC2Settings
from jobman_cli.launchers.ec2 import EC2Launcher
from jobman_cli.model import JobStatus
from jobman_cli.settings import DaemonSettings, daemon_settings
from jobman_cli.stores.tinydb import TinyDBStore

DAY = timedelta(days=1)
PUBLIC = "http://10.1.2.3:8321"


def ended(at, status=JobStatus.FINISHED):
    return make_draft(status=status, date_time=at - timedelta(hours=1), created_at=at - timedelta(hours=2),
                      finished_at=at, updated_at=at, exit_code=0 if status is JobStatus.FINISHED else None)


class World:
    def __init__(self, tmp_path: Path, retention: int | None) -> None:
        self.store = TinyDBStore(tmp_path / "jobs.json")
        self.clock = FixedClock(T0)
        self.lines: list[str] = []
        settings = DaemonSettings(store_location=str(tmp_path / "jobs.json"), public_url=PUBLIC, retention=retention)
        self.daemon = Daemon(self.store, EC2Launcher(EC2Settings()), settings, clock=self.clock, exclusive=True,
                             log=self.lines.append)

    def ids(self) -> list[int]:
        return sorted(job.id for job in TinyDBStore(self.store.path).list())

    def tick(self, at):
        self.clock.set(at)
        return self.daemon.tick(at, reconcile=False)


@pytest.fixture
def make_world(tmp_path, mock_ec2, monkeypatch):
    monkeypatch.setenv("JOBMAN_HOME", str(tmp_path / "home"))
    worlds: list[World] = []

    def make(retention: int | None) -> World:
        worlds.append(World(tmp_path, retention))
        return worlds[-1]

    yield make
    for world in worlds:
        world.daemon.close()
        world.store.close()


def test_prunes_at_the_first_pass_then_once_a_day(make_world):
    world = make_world(30 * 86400)
    old = world.store.add(ended(T0 - 40 * DAY))[0].id
    # Ended 29.5 days before T0: prunable from T0 + 12h on, but the next daily run is at T0 + 1 day.
    soon = world.store.add(ended(T0 - 29 * DAY - timedelta(hours=12), JobStatus.FAILED))[0].id
    young = world.store.add(ended(T0 - 10 * DAY))[0].id
    waiting = world.store.add(make_draft(date_time=T0 + DAY, created_at=T0 - 90 * DAY))[0].id
    world.tick(T0)
    assert world.ids() == [soon, young, waiting]
    assert any(line.endswith(f"retention: removed 1 job(s) that ended before 2029-12-02T12:00:00Z: {old}")
               for line in world.lines), world.lines
    world.tick(T0 + timedelta(hours=23))  # "soon" is prunable by now, but a day has not passed
    world.tick(T0 + timedelta(hours=23, minutes=30))
    assert world.ids() == [soon, young, waiting]
    world.tick(T0 + DAY)
    assert world.ids() == [young, waiting]
    world.tick(T0 + 25 * DAY)  # the scheduled job is due by then; "young" ended 35 days before
    assert young not in world.ids() and waiting in world.ids()
    assert world.store.add(make_draft())[0].id > waiting  # ids are not reused


def test_the_first_run_says_so_even_when_nothing_goes(make_world):
    world = make_world(30 * 86400)
    world.store.add(ended(T0 - DAY))
    world.tick(T0)
    world.tick(T0 + DAY)
    lines = [line for line in world.lines if "retention:" in line]
    assert len(lines) == 1 and lines[0].endswith("retention: removed 0 job(s) that ended before "
                                                 "2029-12-02T12:00:00Z; next run in a day"), world.lines


def test_off_by_default_never_prunes(make_world):
    world = make_world(None)
    old = world.store.add(ended(T0 - 4000 * DAY))[0].id
    for days in (0, 1, 2):
        world.tick(T0 + days * DAY)
    assert world.ids() == [old]
    assert not any("retention" in line for line in world.lines)


def test_a_failed_prune_is_tried_again_an_hour_later(make_world, monkeypatch):
    world = make_world(30 * 86400)
    old = world.store.add(ended(T0 - 40 * DAY))[0].id
    real = world.store.prune
    calls: list[object] = []

    def flaky(cutoff, **kwargs):
        calls.append(cutoff)
        if len(calls) == 1:
            raise StoreError("the disk is unhappy")
        return real(cutoff, **kwargs)

    monkeypatch.setattr(world.store, "prune", flaky)
    world.tick(T0)
    assert world.ids() == [old]
    assert any("retention: prune failed, trying again in an hour: the disk is unhappy" in line for line in world.lines)
    world.tick(T0 + timedelta(minutes=59))
    assert len(calls) == 1
    world.tick(T0 + timedelta(hours=1))
    assert len(calls) == 2 and world.ids() == []


def test_the_loop_prunes_in_the_background_thread(make_world):
    world = make_world(86400)
    old = world.store.add(ended(T0 - 2 * DAY))[0].id
    world.clock.set(T0)
    world.daemon.tick(T0, wait_launches=False, reconcile=False)
    world.daemon.close()  # waits for the background thread
    with pytest.raises(JobNotFound):
        TinyDBStore(world.store.path).get(old)


# ---------------------------------------------------------------------- the setting
def test_the_setting_comes_from_flag_env_or_config_file(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("JOBMAN_HOME", str(home))
    monkeypatch.delenv("JOBMAN_RETENTION", raising=False)
    assert daemon_settings("s", {}).retention is None  # the default: off
    (home / "config.toml").write_text('[daemon]\nretention = "90d"\n')
    assert daemon_settings("s", {}).retention == 90 * 86400  # a known key, not refused as a typo
    monkeypatch.setenv("JOBMAN_RETENTION", "off")
    assert daemon_settings("s", {}).retention is None  # the environment overrides the file
    assert daemon_settings("s", {"retention": "12h"}).retention == 12 * 3600  # the flag overrides both
    with pytest.raises(InvalidInput, match=r"^--retention: .*'90 days'.*or 'off'"):
        daemon_settings("s", {"retention": "90 days"})  # a flag: a usage error (exit 2)
    monkeypatch.setenv("JOBMAN_RETENTION", "-1d")
    with pytest.raises(ConfigError, match=r"^JOBMAN_RETENTION: "):
        daemon_settings("s", {})
    monkeypatch.delenv("JOBMAN_RETENTION")
    (home / "config.toml").write_text("[daemon]\nretention = true\n")
    with pytest.raises(ConfigError, match=r"config file \[daemon\] retention: must be a duration"):
        daemon_settings("s", {})
    (home / "config.toml").write_text('[daemon]\nretention = "11000d"\n')  # more than ten years
    with pytest.raises(ConfigError, match="at most"):
        daemon_settings("s", {})
