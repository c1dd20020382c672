"""``schedule --no-notify``: nobody is notified, not even config.toml's ``[notify] targets`` (the CLI
twin of the API's ``"notify": []``), for a job and for a schedule's template, locally and with
``--server`` (where the daemon's defaults would apply). With ``--notify``/``--notify-on`` it is a
usage error (exit 2, nothing stored).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobman_cli.api import ApiServer
from jobman_cli.cli import cli
from jobman_cli.service import JobService
from jobman_cli.stores import open_store

HOOK = "https://hooks.example.com/jobman"
TOKEN = "test-api-token-0123456789"


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    (tmp_path / "config.toml").write_text(f'[notify]\ntargets = ["{HOOK}"]\non = "end"\n')
    return tmp_path


def run(home: Path, *args: str):
    return CliRunner().invoke(cli, list(args), env={"JOBMAN_HOME": str(home), "JOBMAN_API_TOKEN": TOKEN,
                                                    "JOBMAN_SERVER": None, "JOBMAN_STORE": None, "JOBMAN_DB": None,
                                                    "AWS_REGION": "us-east-1", "AWS_PROFILE": None})


def test_no_notify_opts_out_of_the_config_defaults(home: Path) -> None:
    default = run(home, "schedule", "--image", "alpine", "--at", "+1h", "--json")
    assert default.exit_code == 0, default.output
    assert len(json.loads(default.stdout)["notify"]) == 1  # the config's target applies ...
    quiet = run(home, "schedule", "--image", "alpine", "--at", "+1h", "--json", "--no-notify")
    assert quiet.exit_code == 0, quiet.output
    assert json.loads(quiet.stdout)["notify"] in ([], None)  # ... unless opted out
    dry = run(home, "schedule", "--image", "alpine", "--at", "+1h", "--json", "--no-notify", "--dry-run")
    assert dry.exit_code == 0 and HOOK not in dry.stdout and "hooks.example.com" not in dry.stdout, dry.output
    created = run(home, "schedule", "--image", "alpine", "--cron", "@daily", "--tz", "UTC", "--json", "--no-notify")
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout)["template"]["notify"] == []


@pytest.mark.parametrize("extra", [["--notify", HOOK], ["--notify-on", "end"]], ids=["notify", "notify-on"])
def test_no_notify_with_notify_is_a_usage_error(home: Path, extra: list[str]) -> None:
    assert run(home, "schedule", "--image", "alpine", "--at", "+1h", "-q").exit_code == 0
    before = (home / "jobs.json").read_bytes()
    result = run(home, "schedule", "--image", "alpine", "--at", "+1h", "--no-notify", *extra)
    assert result.exit_code == 2 and f"--no-notify and {extra[0]} cannot be used together" in result.output
    assert result.output.count("\n") == 1
    assert (home / "jobs.json").read_bytes() == before


def test_no_notify_over_the_api_beats_the_daemon_defaults(home: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    store = open_store(tmp_path_factory.mktemp("daemon") / "jobs.json")
    service = JobService(store)
    service.notify_defaults = ((HOOK,), "end")
    log: list[str] = []
    server = ApiServer(service, api_token=TOKEN, log=log.append).start()
    url = f"http://127.0.0.1:{server.port}"
    try:
        default = run(home, "--server", url, "schedule", "--image", "alpine", "--at", "+1h", "--json")
        assert default.exit_code == 0 and len(json.loads(default.stdout)["notify"]) == 1, default.output
        quiet = run(home, "--server", url, "schedule", "--image", "alpine", "--at", "+1h", "--json", "--no-notify")
        assert quiet.exit_code == 0, quiet.output
        assert json.loads(quiet.stdout)["notify"] in ([], None)
        assert store.get(json.loads(quiet.stdout)["id"]).notify == ()
        made = run(home, "--server", url, "schedule", "--image", "alpine", "--every", "1h", "--json", "--no-notify")
        assert made.exit_code == 0 and json.loads(made.stdout)["template"]["notify"] == [], made.output
    finally:
        server.stop()
        store.close()
    assert log == []
