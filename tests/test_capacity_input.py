"""Input of the launch ladder (issue 15): ``--instance-type A,B,C``, ``--subnet-id`` (repeatable),
``--capacity``, ``--max-interruptions``, ``--max-cost`` on ``schedule``, the same keys in the REST
body, and the daemon's defaults. Bad input is one line naming the field, exit 2 / HTTP 400, and the
store stays byte-identical.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner

from jobman_cli.capacity import ladder, rung_token
from jobman_cli.cli import cli
from jobman_cli.errors import ConfigError
from jobman_cli.launchers.factory import ec2_settings
from jobman_cli.service import JobService, ScheduleRequest
from jobman_cli.stores import open_store
from test_api import Api

GOOD = ["schedule", "--image", "alpine:3.20", "--at", "+1h"]

CLI_CASES: list[tuple[list[str], str]] = [
    (["--instance-type", "t3.micro,,m5.large"], "--instance-type"),
    (["--instance-type", "t3.micro,T3.large"], "--instance-type"),
    (["--instance-type", "t3.micro,t3.micro"], "--instance-type"),
    (["--instance-type", ",".join(f"m5.{n}xlarge" for n in range(2, 13))], "--instance-type"),
    (["--subnet-id", "subnet-xyz"], "--subnet-id"),
    (["--subnet-id", "sg-0123abcd"], "--subnet-id"),
    (["--subnet-id", "subnet-0123abcd", "--subnet-id", "subnet-0123abcd"], "--subnet-id"),
    (["--subnet-id", "subnet-0123abcd,subnet-0123abce"], "--subnet-id"),
    (["--capacity", "reserved"], "--capacity"),
    (["--capacity", "SPOT"], "--capacity"),
    (["--max-interruptions", "-1"], "--max-interruptions"),
    (["--max-interruptions", "1.5"], "--max-interruptions"),
    (["--max-interruptions", "101"], "--max-interruptions"),
    (["--max-interruptions", "07"], "--max-interruptions"),
    (["--max-cost", "0"], "--max-cost"),
    (["--max-cost", "-3"], "--max-cost"),
    (["--max-cost", "abc"], "--max-cost"),
    (["--max-cost", "nan"], "--max-cost"),
    (["--max-cost", "inf"], "--max-cost"),
    (["--max-cost", "1e3"], "--max-cost"),
    (["--max-cost", "2,50"], "--max-cost"),
    (["--max-cost", "1000001"], "--max-cost"),
]


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    path = tmp_path / "jobs.json"
    result = CliRunner().invoke(cli, ["--db", str(path)] + GOOD + ["-q"])
    assert result.exit_code == 0, result.output
    return path


@pytest.mark.parametrize("extra,needle", CLI_CASES, ids=[" ".join(c[0])[:50] for c in CLI_CASES])
def test_bad_cli_input_is_one_line_exit_2_and_writes_nothing(db: Path, extra: list[str], needle: str) -> None:
    before = db.read_bytes()
    result = CliRunner().invoke(cli, ["--db", str(db)] + GOOD + extra)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"Error: {needle}: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert db.read_bytes() == before


def test_good_cli_input_is_stored_and_shown(db: Path) -> None:
    result = CliRunner().invoke(cli, ["--db", str(db)] + GOOD + [
        "--instance-type", "m7i.large, m6i.large", "--subnet-id", "subnet-0123abcd",
        "--subnet-id", "subnet-0123456789abcdef0", "--capacity", "spot-then-on-demand",
        "--max-interruptions", "0", "--max-cost", "2.50", "--json"])
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)
    assert job["instance-type"] == "m7i.large,m6i.large"  # normalised: no spaces
    assert job["subnet-ids"] == ["subnet-0123abcd", "subnet-0123456789abcdef0"]
    assert job["capacity"] == "spot-then-on-demand"
    assert job["max-interruptions"] == 0
    assert job["max-cost"] == 2.5
    assert job["interruptions"] == 0 and job["placement"] is None
    plain = CliRunner().invoke(cli, ["--db", str(db)] + GOOD + ["--json"])
    defaults = json.loads(plain.stdout)
    assert (defaults["capacity"], defaults["max-interruptions"], defaults["subnet-ids"]) == ("on-demand", 3, [])


def test_the_idempotency_key_covers_the_ladder(db: Path) -> None:
    first = CliRunner().invoke(cli, ["--db", str(db)] + GOOD + ["--idempotency-key", "k", "--capacity", "spot"])
    assert first.exit_code == 0
    again = CliRunner().invoke(cli, ["--db", str(db)] + GOOD + ["--idempotency-key", "k", "--capacity", "on-demand"])
    assert again.exit_code != 0 and "--idempotency-key" in again.stderr


# --------------------------------------------------------------------------- REST
API_CASES: list[tuple[dict, str]] = [
    ({"instance-type": ["t3.micro"]}, "instance-type"),
    ({"instance-type": "t3.micro,"}, "instance-type"),
    ({"subnet-ids": "subnet-0123abcd"}, "subnet-ids"),
    ({"subnet-ids": [1]}, "subnet-ids"),
    ({"subnet-ids": ["subnet-0123abcd", "subnet-0123abcd"]}, "subnet-ids"),
    ({"capacity": "cheap"}, "capacity"),
    ({"capacity": True}, "capacity"),
    ({"max-interruptions": True}, "max-interruptions"),
    ({"max-interruptions": 2.0}, "max-interruptions"),
    ({"max-interruptions": -1}, "max-interruptions"),
    ({"max-cost": 0}, "max-cost"),
    ({"max-cost": -1.5}, "max-cost"),
    ({"max-cost": True}, "max-cost"),
    ({"max-cost": "1e3"}, "max-cost"),
    ({"max-cost": [1]}, "max-cost"),
    ({"max-cost": 1e300}, "max-cost"),
]


@pytest.fixture()
def api(tmp_path: Path) -> Iterator[Api]:
    store = open_store(tmp_path / "jobs.json")
    harness = Api(JobService(store), tmp_path / "jobs.json")
    yield harness
    harness.server.stop()
    store.close()


def test_bad_api_input_is_400_naming_the_field_and_writes_nothing(api: Api, tmp_path: Path) -> None:
    api.schedule()
    before = (tmp_path / "jobs.json").read_bytes()
    for fields, needle in API_CASES:
        body = {"date-time": "+10m", "docker-image": "alpine:3.20", **fields}
        raw = json.dumps(body, allow_nan=True).encode()
        status, _, answer = api.call("POST", "/jobs/schedule", raw=raw)
        assert status == 400, (fields, answer)
        assert answer["error"].startswith(f"{needle}: "), (fields, answer)
    assert (tmp_path / "jobs.json").read_bytes() == before


def test_api_schedule_takes_the_ladder_keys(api: Api) -> None:
    job = api.schedule(**{"instance-type": "c7g.large,c6g.large", "subnet-ids": ["subnet-0123abcd"],
                          "capacity": "spot", "max-interruptions": 5, "max-cost": 12})
    assert (job["instance-type"], job["subnet-ids"], job["capacity"]) == ("c7g.large,c6g.large",
                                                                         ["subnet-0123abcd"], "spot")
    assert (job["max-interruptions"], job["max-cost"]) == (5, 12.0)


# --------------------------------------------------------------------------- daemon defaults and ladder
def test_daemon_defaults_may_be_lists_and_are_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JOBMAN_HOME", str(tmp_path))
    monkeypatch.setenv("JOBMAN_INSTANCE_TYPE", "m7i.large,m6i.large")
    monkeypatch.setenv("JOBMAN_SUBNET_ID", "subnet-0000000a,subnet-0000000b")
    settings = ec2_settings({})
    assert settings.instance_type == "m7i.large,m6i.large"
    assert settings.subnet_ids == ("subnet-0000000a", "subnet-0000000b")
    monkeypatch.setenv("JOBMAN_SUBNET_ID", " subnet-0000000a , ")
    assert ec2_settings({}).subnet_ids == ("subnet-0000000a",)
    monkeypatch.setenv("JOBMAN_INSTANCE_TYPE", "m7i.large,,x")
    with pytest.raises(ConfigError, match="instance_type"):
        ec2_settings({})


def test_ladder_order_types_then_subnets_spot_first() -> None:
    draft = JobService(None).validate(ScheduleRequest(  # type: ignore[arg-type]
        image="alpine", when="+1h", instance_type="a1.large,b1.large",
        subnet_ids=["subnet-0000000a", "subnet-0000000b"], capacity="spot-then-on-demand"))
    got = [(r.instance_type, r.subnet_id, r.market) for r in ladder(draft, "t3.micro")]
    assert got == [("a1.large", "subnet-0000000a", "spot"), ("a1.large", "subnet-0000000b", "spot"),
                   ("b1.large", "subnet-0000000a", "spot"), ("b1.large", "subnet-0000000b", "spot"),
                   ("a1.large", "subnet-0000000a", "on-demand"), ("a1.large", "subnet-0000000b", "on-demand"),
                   ("b1.large", "subnet-0000000a", "on-demand"), ("b1.large", "subnet-0000000b", "on-demand")]
    # The job's own choices win over the daemon's defaults; without them, the defaults (lists too).
    plain = JobService(None).validate(ScheduleRequest(image="alpine", when="+1h"))  # type: ignore[arg-type]
    got = [(r.instance_type, r.subnet_id, r.market) for r in ladder(plain, "m5.large,m4.large", ("subnet-0000000c",))]
    assert got == [("m5.large", "subnet-0000000c", "on-demand"), ("m4.large", "subnet-0000000c", "on-demand")]
    assert [(r.instance_type, r.subnet_id) for r in ladder(plain, "t3.micro")] == [("t3.micro", None)]


def test_rung_tokens_are_distinct_deterministic_and_fit_64_chars() -> None:
    token = "jobman-0123456789abcdef-9007199254740992-100"
    tokens = [rung_token(token, i) for i in range(200)]
    assert tokens[0] == token and len(set(tokens)) == 200
    assert max(len(t) for t in tokens) <= 64
    assert rung_token(token, 3) == rung_token(token, 3)


def test_the_remote_client_sends_the_ladder_keys(api: Api, tmp_path: Path) -> None:
    """``jobman --server URL schedule ...`` validates locally with the CLI's names, then POSTs the
    ladder keys; the server stores what was asked."""
    import os
    import subprocess
    import sys

    from test_api import TOKEN

    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBMAN_", "AWS_"))}
    env.update(JOBMAN_HOME=str(tmp_path / "elsewhere"), JOBMAN_API_TOKEN=TOKEN)
    url = f"http://127.0.0.1:{api.server.port}"

    def jobman(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "jobman_cli", "--server", url, *args], env=env,
                              capture_output=True, text=True, timeout=60)

    done = jobman(*GOOD, "--instance-type", "m7i.large,m6i.large", "--subnet-id", "subnet-0123abcd",
                  "--capacity", "spot", "--max-interruptions", "1", "--max-cost", "3.5", "--json")
    assert done.returncode == 0, done.stderr
    stored = api.service.get(json.loads(done.stdout)["id"])
    assert (stored.instance_type, stored.subnet_ids, stored.capacity) == ("m7i.large,m6i.large",
                                                                          ("subnet-0123abcd",), "spot")
    assert (stored.max_interruptions, stored.max_cost) == (1, 3.5)
    bad = jobman(*GOOD, "--capacity", "cheap")
    assert bad.returncode == 2 and bad.stderr.startswith("Error: --capacity: ")


def test_config_file_ladder_defaults_may_be_toml_arrays(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JOBMAN_HOME", str(tmp_path))
    for name in ("JOBMAN_INSTANCE_TYPE", "JOBMAN_SUBNET_ID"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "config.toml").write_text('[ec2]\ninstance_type = ["c7i.large", "c6i.large"]\n'
                                          'subnet_id = ["subnet-0000000a", "subnet-0000000b"]\n')
    settings = ec2_settings({})
    assert settings.instance_type == "c7i.large,c6i.large"
    assert settings.subnet_ids == ("subnet-0000000a", "subnet-0000000b")
