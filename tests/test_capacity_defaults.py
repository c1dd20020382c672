"""``[ec2] capacity`` and ``[ec2] max_interruptions`` in config.toml (issue 15): the defaults of a job
that names no ``--capacity`` / ``--max-interruptions``.

The default is resolved when the job is created and stored on it (as the ``[notify]`` defaults
are): ``status`` and ``schedule --dry-run`` show what it will use, a job's own value wins, a bad
value is one line naming the key. Locally the CLI reads this machine's config file; over
``--server`` and the API the daemon's applies; a schedule's template keeps only what was given, so
each run takes the daemon's default when it is materialized. Driven through the CLI (CliRunner),
the REST API (a real server on 127.0.0.1), the daemon's pass (moto's in-process EC2: a job without
``--capacity`` launches as spot when the config says spot) and a real ``jobman daemon`` process
(moto_server), which reads the file at start.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobman_cli.capacity import CapacityDefaults, config_defaults
from jobman_cli.cli import cli
from jobman_cli.configcheck import check_config
from jobman_cli.errors import ConfigError
from jobman_cli.model import JobStatus, format_time
from jobman_cli.service import JobService
from jobman_cli.stores.tinydb import TinyDBStore
from test_api import TOKEN, Api
from test_daemon import T0, World, aws_env, ec2  # noqa: F401  (fixtures)

GOOD = ["schedule", "--image", "alpine:3.20", "--at", "+1h"]


def write_config(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(text)
    return home


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("JOBMAN_HOME", str(path))
    monkeypatch.delenv("JOBMAN_SERVER", raising=False)
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


# --------------------------------------------------------------------------- reading the file
def test_without_the_keys_the_defaults_are_on_demand_and_3(home: Path) -> None:
    assert config_defaults() == CapacityDefaults("on-demand", 3)
    write_config(home, '[ec2]\ninstance_type = "t3.small"\n')
    assert config_defaults() == CapacityDefaults("on-demand", 3)


@pytest.mark.parametrize("capacity", ["on-demand", "spot", "spot-then-on-demand"])
def test_each_capacity_is_read(home: Path, capacity: str) -> None:
    write_config(home, f'[ec2]\ncapacity = "{capacity}"\nmax_interruptions = 0\n')
    assert config_defaults() == CapacityDefaults(capacity, 0)


def test_the_config_check_knows_the_keys(home: Path) -> None:
    check_config(Path("config.toml"), {"ec2": {"capacity": "spot", "max_interruptions": 5}})
    with pytest.raises(ConfigError, match="unknown key 'capacty' in \\[ec2\\]; did you mean 'capacity'"):
        check_config(Path("config.toml"), {"ec2": {"capacty": "spot"}})


BAD = [
    ('capacity = "cheap"', "[ec2] capacity: must be one of on-demand, spot, spot-then-on-demand (got 'cheap')"),
    ('capacity = "SPOT"', "[ec2] capacity"),
    ("capacity = 1", "[ec2] capacity"),
    ('capacity = ["spot"]', "[ec2] capacity"),
    ('max_interruptions = "3"', "[ec2] max_interruptions: must be a whole number from 0 to 100 (got '3')"),
    ("max_interruptions = -1", "[ec2] max_interruptions"),
    ("max_interruptions = 101", "[ec2] max_interruptions"),
    ("max_interruptions = 2.5", "[ec2] max_interruptions"),
    ("max_interruptions = true", "[ec2] max_interruptions"),
]


@pytest.mark.parametrize("line,needle", BAD, ids=[b[0] for b in BAD])
def test_a_bad_value_is_one_line_naming_the_key_and_nothing_is_stored(home: Path, line: str, needle: str) -> None:
    db = home / "jobs.json"
    assert run("--db", str(db), *GOOD, "-q")[0] == 0
    before = db.read_bytes()
    write_config(home, f"[ec2]\n{line}\n")
    for extra in ([], ["--capacity", "spot", "--max-interruptions", "1"], ["--dry-run"]):
        code, out, err = run("--db", str(db), *GOOD, *extra)
        # A config error, as every bad config.toml value is (exit 1: ConfigError), even when the
        # flags would have overridden it: a broken file is never silently ignored.
        assert code == 1, (out, err)
        assert err.startswith("Error: config file ") and needle in err, err
        assert err.count("\n") == 1 and "Traceback" not in err + out
    assert db.read_bytes() == before


# --------------------------------------------------------------------------- the CLI (local)
def test_a_job_without_flags_takes_the_config_and_its_own_values_win(home: Path) -> None:
    write_config(home, '[ec2]\ncapacity = "spot"\nmax_interruptions = 7\n')
    db = home / "jobs.json"
    code, out, err = run("--db", str(db), *GOOD, "--json")
    assert code == 0, err
    job = json.loads(out)
    assert (job["capacity"], job["max-interruptions"]) == ("spot", 7)  # stored: the job shows what it will use
    code, out, _ = run("--db", str(db), *GOOD, "--json", "--capacity", "on-demand", "--max-interruptions", "0")
    explicit = json.loads(out)
    assert (explicit["capacity"], explicit["max-interruptions"]) == ("on-demand", 0)

    def status_rows(job_id: int) -> dict[str, str]:
        code, out, _ = run("--db", str(db), "status", str(job_id))
        return dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in out.splitlines() if "  " in line.strip())

    rows = status_rows(job["id"])
    assert rows["capacity"].startswith("spot: ") and rows["interruptions"] == "0 of at most 7"
    assert status_rows(explicit["id"])["capacity"] == "on-demand"  # said even when it is the built-in default

    write_config(home, '[ec2]\ncapacity = "on-demand"\n')  # a later change of the file ...
    with TinyDBStore(db, create=False) as store:
        assert store.get(job["id"]).capacity == "spot"  # ... does not change a job already waiting


def test_dry_run_shows_the_effective_capacity(home: Path) -> None:
    write_config(home, '[ec2]\ncapacity = "spot-then-on-demand"\nmax_interruptions = 2\nregion = "us-east-1"\n'
                       'ami = "ami-0123456789abcdef0"\n')
    db = home / "jobs.json"
    code, out, err = run("--db", str(db), *GOOD, "--dry-run", "--instance-type", "m5.large,m4.large")
    assert code == 0, err
    assert re.search(r"^\s+capacity\s+spot-then-on-demand: m5.large,m4.large$", out, re.M), out
    assert re.search(r"^\s+interruptions\s+0 of at most 2$", out, re.M), out
    assert "1. m5.large (spot); 2. m4.large (spot); 3. m5.large (on-demand); 4. m4.large (on-demand)" in out
    assert '"MarketType": "spot"' in out  # rung 1's request is a spot request
    code, out, err = run("--db", str(db), *GOOD, "--dry-run", "--capacity", "on-demand")
    assert code == 0 and "MarketType" not in out and re.search(r"^\s+capacity\s+on-demand$", out, re.M), out
    assert not db.exists()  # a dry run writes nothing


# --------------------------------------------------------------------------- the API and --server
@pytest.fixture
def api(tmp_path: Path):
    store = TinyDBStore(tmp_path / "server.json")
    service = JobService(store)
    service.capacity_defaults = CapacityDefaults("spot", 9)  # what run_daemon sets from the daemon's file
    server = Api(service, tmp_path / "server.json")
    yield server
    server.server.stop()
    store.close()


def test_the_api_applies_the_daemon_s_default_and_the_body_wins(api: Api) -> None:
    job = api.schedule()
    assert (job["capacity"], job["max-interruptions"]) == ("spot", 9)
    job = api.schedule(**{"capacity": "on-demand", "max-interruptions": 0})  # 0: on-demand with a budget > 0 is refused
    assert (job["capacity"], job["max-interruptions"]) == ("on-demand", 0)


def test_over_server_the_daemon_s_default_applies_not_this_machine_s(api: Api, home: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(home, '[ec2]\ncapacity = "on-demand"\nmax_interruptions = 0\n')  # this machine's file
    monkeypatch.setenv("JOBMAN_API_TOKEN", TOKEN)
    url = f"http://127.0.0.1:{api.server.port}"
    code, out, err = run("--server", url, *GOOD, "--json")
    assert code == 0, err
    assert (json.loads(out)["capacity"], json.loads(out)["max-interruptions"]) == ("spot", 9)
    code, out, err = run("--server", url, *GOOD, "--json", "--capacity", "spot-then-on-demand")
    assert json.loads(out)["capacity"] == "spot-then-on-demand"
    code, out, err = run("--server", url, "status", str(json.loads(out)["id"]))
    assert re.search(r"^capacity\s+spot-then-on-demand: ", out, re.M), out


# --------------------------------------------------------------------------- the daemon
@pytest.fixture
def world(tmp_path, ec2):  # noqa: F811
    w = World(tmp_path, ec2)
    yield w
    w.close()


def test_a_job_without_capacity_launches_as_spot_when_the_config_says_spot(world, home: Path) -> None:
    """The CLI stores the config's default on the job; the daemon's pass launches it as spot."""
    write_config(home, '[ec2]\ncapacity = "spot"\n')
    at = T0 + timedelta(minutes=1)
    code, out, err = run("--db", str(world.store_path), "schedule", "--image", "alpine:3.20", "--at",
                         format_time(at), "-q")
    assert code == 0, err
    job_id = int(out)
    world.tick(at)
    (instance,) = world.instances()
    assert instance["InstanceLifecycle"] == "spot"
    after = world.get(job_id)
    assert after.status is JobStatus.RUNNING and after.placement["market"] == "spot"


def test_a_schedule_s_run_takes_the_daemon_s_default_when_it_is_materialized(world) -> None:
    """The template keeps only what was given: the run created after the default changed is spot."""
    from jobman_cli.daemon.schedules import LEAD
    from jobman_cli.schedules.service import ScheduleService

    schedule = ScheduleService(world.service).create({"docker-image": "alpine:3.20", "cron": "@hourly", "tz": "UTC"})
    assert "capacity" not in schedule.template
    world.service.capacity_defaults = CapacityDefaults("spot", 4)  # the daemon's file says spot
    hour = (T0 + timedelta(hours=1)).replace(minute=0, second=0)
    world.tick(hour - LEAD)
    world.tick(hour)
    (run_job,) = [j for j in world.store.list() if j.schedule_id == schedule.id]
    assert (run_job.capacity, run_job.max_interruptions) == ("spot", 4)
    (instance,) = world.instances()
    assert instance["InstanceLifecycle"] == "spot"
