"""A ``TZ`` that is not a zone name (no ``JOBMAN_TZ``, no ``--tz``): ``--at`` reads local times in the
C library's zone from TZ, so a schedule made in the same shell must use that same zone or be refused
(review F10e). A fixed-offset rule maps to its ``Etc/GMT`` zone (the two agree), a rule with daylight
saving is refused naming TZ and ``--tz`` (no zone name provably keeps the same rule). Real
processes: TZ is read by the C library at start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobman_cli.errors import InvalidInput
from jobman_cli.schedules import occurrences


def jobman(home: Path, tz: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBMAN_")}
    env.update({"JOBMAN_HOME": str(home), "TZ": tz})
    return subprocess.run([sys.executable, "-m", "jobman_cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_a_dst_rule_in_tz_refuses_a_schedule_without_tz_and_at_follows_it(tmp_path: Path) -> None:
    rule = "CET-1CEST,M3.5.0,M10.5.0/3"
    job = jobman(tmp_path, rule, "schedule", "--image", "alpine", "--at", "2099-12-25 10:00:00", "--json")
    assert job.returncode == 0, job.stderr
    assert json.loads(job.stdout)["date-time"] == "2099-12-25T09:00:00Z"  # read as CET
    before = (tmp_path / "jobs.json").read_bytes()
    refused = jobman(tmp_path, rule, "schedule", "--image", "alpine", "--cron", "0 6 * * *")
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.startswith("Error: TZ: ") and "--tz" in refused.stderr and "JOBMAN_TZ" in refused.stderr
    assert refused.stderr.count("\n") == 1 and (tmp_path / "jobs.json").read_bytes() == before
    explicit = jobman(tmp_path, rule, "schedule", "--image", "alpine", "--cron", "0 6 * * *", "--tz", "Europe/Berlin",
                      "--json")
    assert explicit.returncode == 0 and json.loads(explicit.stdout)["tz"] == "Europe/Berlin", explicit.stderr


@pytest.mark.parametrize(("tz", "zone", "utc_hour"), [("JST-9", "Etc/GMT-9", 21), ("UTC0", "UTC", 6),
                                                       (":Europe/Berlin", "Europe/Berlin", 5),
                                                       ("/usr/share/zoneinfo/America/New_York", "America/New_York", 11)],
                         ids=["fixed-offset", "utc0", "colon-name", "zoneinfo-path"])
def test_at_and_cron_agree_on_the_zone_of_tz(tmp_path: Path, tz: str, zone: str, utc_hour: int) -> None:
    if tz.startswith("/") and not Path(tz).exists():
        pytest.skip("no system tz database here")
    job = jobman(tmp_path, tz, "schedule", "--image", "alpine", "--at", "2099-01-15 06:00:00", "--json")
    assert job.returncode == 0, job.stderr
    made = jobman(tmp_path, tz, "schedule", "--image", "alpine", "--cron", "0 6 * * *", "--json")
    assert made.returncode == 0, made.stderr
    schedule = json.loads(made.stdout)
    assert schedule["tz"] == zone
    assert int(json.loads(job.stdout)["date-time"][11:13]) == utc_hour == int(schedule["next-at"][11:13])


def test_the_refusal_names_the_api_field_for_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBMAN_TZ", raising=False)
    monkeypatch.setenv("TZ", "EST5EDT4,M3.2.0,M11.1.0")
    with pytest.raises(InvalidInput) as err:
        occurrences.system_zone_name("tz")
    assert err.value.field == "TZ" and 'give "tz"' in err.value.rule
    monkeypatch.setenv("TZ", "")
    assert occurrences.system_zone_name() == "UTC"
