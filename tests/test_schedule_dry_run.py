"""``jobman schedule ... --dry-run``: nothing written, and the printed request is the daemon's.

The CLI runs as the real ``jobman`` script without AWS credentials. The request it prints is set
against what :class:`~jobman_cli.launchers.ec2.EC2Launcher` sends for the same job under the same
settings: the job is then scheduled for real, claimed as the daemon claims it, its user-data
rendered as the daemon's launch does (with the same placeholder token), and launched under moto's
``mock_aws`` with the RunInstances parameters captured on botocore's event hook.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobman_cli.dryrun import ROOT_DEVICE_PLACEHOLDER, TOKEN_PLACEHOLDER

SCRIPT = str(Path(sys.executable).with_name("jobman"))
SETTINGS = {
    "AWS_REGION": "us-east-1",
    "JOBMAN_AMI": "ami-12345678",
    "JOBMAN_PUBLIC_URL": "https://jobs.example.com:8321",
    "JOBMAN_SUBNET_ID": "subnet-0abc",
    "JOBMAN_SECURITY_GROUP_IDS": "sg-1,sg-2",
    "JOBMAN_IAM_INSTANCE_PROFILE": "jobman-instance",
    "JOBMAN_KEY_NAME": "ops",
    "JOBMAN_TAGS": "team=data,cost-center=42",
}
JOB_ARGS = ("--image", "alpine:3.20", "--at", "2030-01-01 00:00Z", "--title", "nightly", "-e", "GREETING=hi",
            "--secret", "DB_PASSWORD=ssm:/prod/db/password", "--instance-type", "t3.small", "--timeout", "10m",
            "--container-imds")
COMMAND = ("--", "sh", "-c", "echo $GREETING")


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "JOBMAN_"))}
    env.update(SETTINGS)
    env.update(JOBMAN_HOME=str(tmp_path / "home"), JOBMAN_DB=str(tmp_path / "store" / "jobs.json"),
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_EC2_METADATA_DISABLED="true")
    env.update(extra)
    return env


def jobman(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SCRIPT, *args], env=env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(root.rglob("*"))}


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    # No store yet: none is created (nor JOBMAN_HOME).
    done = jobman(env, "schedule", *JOB_ARGS, "--dry-run", *COMMAND)
    assert done.returncode == 0 and done.stdout.startswith("Dry run:"), done.stderr
    assert tree(tmp_path) == {}
    # An existing store: byte-identical afterwards, and no other file appears (no lock, no temp file).
    for n in range(3):
        assert jobman(env, "schedule", "--image", "alpine:3.20", "--at", "+1h", "-q").stdout == f"{n + 1}\n"
    before = tree(tmp_path)
    for args in (("--dry-run",), ("--dry-run", "--json"), ("--dry-run", "--idempotency-key", "k1")):
        done = jobman(env, "schedule", *JOB_ARGS, *args, *COMMAND)
        assert done.returncode == 0, done.stderr
    assert tree(tmp_path) == before
    listed = jobman(env, "list", "--json")
    assert [job["id"] for job in json.loads(listed.stdout)] == [3, 2, 1]


def test_bad_input_is_the_schedule_error_and_writes_nothing(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    for bad in (("--at", "yesterday"), ("--timeout", "forever"), ("--secret", "X=vault:/nope")):
        args = ["--image", "alpine:3.20", "--at", "+1h", *bad]
        before = tree(tmp_path)
        dry = jobman(env, "schedule", *args, "--dry-run")
        assert tree(tmp_path) == before
        real = jobman(env, "schedule", *args)
        assert (dry.returncode, dry.stderr, dry.stdout) == (2, real.stderr, "") and real.returncode == 2
        assert dry.stderr.startswith("Error: ") and dry.stderr.count("\n") == 1
    for combination in (("-q",), ("--json", "-q")):
        done = jobman(env, "schedule", "--image", "alpine:3.20", "--at", "+1h", "--dry-run", *combination)
        assert done.returncode == 2 and done.stderr.count("\n") == 1
    done = jobman(cli_env(tmp_path, JOBMAN_SERVER="http://127.0.0.1:9", JOBMAN_API_TOKEN="t" * 40),
                  "schedule", "--image", "alpine:3.20", "--at", "+1h", "--dry-run")
    assert done.returncode == 2 and "--dry-run cannot be used with --server" in done.stderr


def test_text_output_shows_job_request_and_user_data(tmp_path: Path) -> None:
    done = jobman(cli_env(tmp_path), "schedule", *JOB_ARGS, "--disk-gb", "30", "--dry-run", *COMMAND)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("Dry run: nothing was written and nothing was launched.\n")
    for part in ("Job (validated):", "RunInstances request", "User-data (", '"InstanceType": "t3.small"',
                 '"VolumeSize": 30', ROOT_DEVICE_PLACEHOLDER, "#!/bin/bash", TOKEN_PLACEHOLDER):
        assert part in out, part
    assert "ssm:/prod/db/password" in out  # the secret as its reference (there is no value to show)


def test_dry_run_needs_no_boto3(tmp_path: Path) -> None:
    """In-process: the dry run leaves boto3 and botocore unimported (schedule stays fast)."""
    program = ("import sys\nfrom jobman_cli.cli import cli\n"
               f"code = cli.main({['schedule', *JOB_ARGS, '--dry-run', '--json', *COMMAND]!r}, standalone_mode=False)\n"
               "print(code, 'boto3' in sys.modules, 'botocore' in sys.modules, file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", program], env=cli_env(tmp_path), capture_output=True, text=True,
                          timeout=60)
    assert done.stderr.strip().endswith("0 False False"), done.stderr
    assert json.loads(done.stdout)["dry-run"] is True


def test_printed_request_is_what_the_launcher_sends(tmp_path: Path, mock_ec2, monkeypatch) -> None:
    from jobman_cli.joblogs import job_log_target
    from jobman_cli.launchers.ec2 import EC2Launcher
    from jobman_cli.launchers.ec2_params import run_instances_params
    from jobman_cli.launchers.factory import ec2_settings
    from jobman_cli.launchers.userdata import callback_url_for, render_user_data
    from jobman_cli.model import JobStatus
    from jobman_cli.service import launch_token_for
    from jobman_cli.stores.tinydb import TinyDBStore

    env = cli_env(tmp_path)
    assert jobman(env, "schedule", "--image", "alpine:3.20", "--at", "+1h", "-q").returncode == 0  # job 1
    done = jobman(env, "schedule", *JOB_ARGS, "--dry-run", "--json", *COMMAND)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    scheduled = jobman(env, "schedule", *JOB_ARGS, "--json", *COMMAND)
    assert scheduled.returncode == 0, scheduled.stderr
    stored_api = json.loads(scheduled.stdout)
    assert plan["job"]["id"] == stored_api["id"] == 2
    ignore = ("created-at",)
    assert {k: v for k, v in plan["job"].items() if k not in ignore} == \
        {k: v for k, v in stored_api.items() if k not in ignore}

    # The daemon's side, in this process, under the same settings.
    for name, value in SETTINGS.items():
        monkeypatch.setenv(name, value)
    settings = ec2_settings({})
    with TinyDBStore(tmp_path / "store" / "jobs.json", create=False) as store:
        job = store.get(2)
        store_id = store.store_id
    assert job.status is JobStatus.SCHEDULED
    claimed = job.claimed(job.created_at, launch_token_for(store_id, job.id, 1))
    user_data = render_user_data(claimed, callback_url=callback_url_for(SETTINGS["JOBMAN_PUBLIC_URL"], job.id),
                                 callback_token=TOKEN_PLACEHOLDER, logs=job_log_target(settings))
    assert plan["user-data"] == user_data
    assert plan["run-instances"] == run_instances_params(claimed, settings, user_data, image_id="ami-12345678",
                                                         store_id=store_id)
    sent: list[dict] = []

    class Captured(Exception):
        pass

    def capture(params: dict, **_: object) -> None:  # before anything is sent: moto would check the profile
        sent.append(json.loads(json.dumps(params)))
        raise Captured

    launcher = EC2Launcher(settings)
    launcher._ec2_run.meta.events.register("provide-client-params.ec2.RunInstances", capture)
    with pytest.raises(Captured):
        launcher.launch(claimed, user_data=user_data, store_id=store_id)
    assert sent == [plan["run-instances"]]
    assert plan["run-instances"]["MetadataOptions"]["HttpPutResponseHopLimit"] == 2  # --container-imds
    assert {"Key": "team", "Value": "data"} in plan["run-instances"]["TagSpecifications"][0]["Tags"]


@pytest.mark.parametrize("ami,expected", [(None, "resolve:ssm:/aws/service/ami-amazon-linux-latest/"),
                                          ("resolve:ssm:/my/ami", "resolve:ssm:/my/ami")])
def test_an_ami_from_ssm_is_shown_as_its_parameter(tmp_path: Path, ami: str | None, expected: str) -> None:
    env = cli_env(tmp_path)
    if ami is None:
        del env["JOBMAN_AMI"]
    else:
        env["JOBMAN_AMI"] = ami
    done = jobman(env, "schedule", "--image", "alpine:3.20", "--at", "+1h", "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["run-instances"]["ImageId"].startswith(expected)
    assert any("resolves SSM parameter" in note for note in plan["notes"])
