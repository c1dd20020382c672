"""The secrets block of the user-data, rendered (no AWS, no Docker): quoting, refused names, size,
determinism (DESIGN.md section 12). Running it for real: tests/test_secrets_userdata.py and
tests/test_secrets_docker.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timezone

import pytest

from jobman_cli.errors import InvalidInput
from jobman_cli.joblogs import LogTarget, size_probe_target
from jobman_cli.launchers.userdata import USER_DATA_LIMIT, WORST_CASE_TOKEN, render_user_data
from jobman_cli.model import Job, JobStatus
from jobman_cli.service import CLI_FIELDS, JobService, ScheduleRequest

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
URL = "https://jobman.example/jobMan/v1.1/jobs/9/callback"


def make_job(secrets: dict[str, str] | None = None, **changes) -> Job:
    fields = dict(id=9, title="t", date_time=NOW, docker_image="alpine:3", env_variables={"PLAIN": "v"},
                  status=JobStatus.LAUNCHING, created_at=NOW, timeout=60, attempts=1, secrets=secrets or {})
    fields.update(changes)
    return Job(**fields)


def render(job: Job, logs: LogTarget | None = LogTarget("jobman", "eu-west-1")) -> str:
    return render_user_data(job, callback_url=URL, callback_token="tok", logs=logs)


def bash_array(script: str, name: str) -> list[str]:
    """The elements of the bash array ``name=(...)`` as bash itself reads the script's text."""
    start = script.index(f"\n{name}=(") + 1
    end = script.index("\n)\n", start) + 3
    snippet = script[start:end] + f'printf "%s\\0" "${{{name}[@]}}"\n'
    out = subprocess.run([shutil.which("bash"), "-c", snippet], capture_output=True, check=True, timeout=30).stdout
    return out.decode().split("\0")[:-1]


def test_a_job_without_secrets_renders_no_secrets_block_and_needs_no_python3():
    script = render(make_job())
    assert "python3" not in script and "secret" not in script.lower()
    assert ' "${command_args[@]}" </dev/null &' in script  # the docker run line as it always was


def test_references_are_quoted_and_read_back_by_bash_exactly():
    odd_key = "the key: x=y/z @+.-_"
    secrets = {
        "B": "secretsmanager:app/creds#" + odd_key,
        "A": "ssm:/prod/db/password",
        "C": "secretsmanager:x@@IMAGE@@+=.@-/y",  # looks like a placeholder: stays literal
        "D": "secretsmanager:arn:aws:secretsmanager:eu-west-1:123456789012:secret:app/x-AbCdEf#k",
        "E": "ssm:arn:aws:ssm:us-east-2:123456789012:parameter/a/b.c-d_e",
    }
    script = render(make_job(secrets))
    assert bash_array(script, "secrets") == [x for name in sorted(secrets) for x in (name, secrets[name])]
    assert "\nsecret_region=eu-west-1\n" in script
    # The container gets `-e NAME` (its value from the docker process's environment), sorted.
    run_args = bash_array(script, "run_args")
    assert run_args[:12] == ["-e", "PLAIN=v", "-e", "A", "-e", "B", "-e", "C", "-e", "D", "-e", "E"]
    assert 'python3 -I -c "$secret_exec" docker run' in script
    assert "read_secrets || { : 2>/dev/null >\"$secret_err\"; fail 125 secret-unavailable" in script
    assert script.index("pull || fail") < script.index("read_secrets ||") < script.index("docker run --name")


def test_without_a_log_target_the_region_is_left_to_the_aws_cli():
    script = render(make_job({"A": "ssm:/a"}), logs=None)
    assert "\nsecret_region=''\n" in script


def test_the_same_job_renders_the_same_bytes_whatever_the_order_of_its_secrets():
    one = make_job({"A": "ssm:/a", "B": "secretsmanager:b#k"})
    two = make_job({"B": "secretsmanager:b#k", "A": "ssm:/a"})
    assert render(one) == render(two) == render(one)


@pytest.mark.parametrize("name", ["DOCKER_HOST", "DOCKER_CONFIG", "LD_PRELOAD", "LD_LIBRARY_PATH", "GODEBUG", "PATH",
                                  "HOME", "http_proxy", "HTTPS_PROXY", "no_proxy", "SSL_CERT_FILE"])
def test_names_the_docker_cli_reads_are_refused(name):
    with pytest.raises(InvalidInput) as caught:
        render(make_job({name: "ssm:/a"}))
    assert caught.value.field == "secrets" and name in str(caught.value)
    render(make_job(env_variables={name: "plain -e values keep these names"}))  # as a plain variable: fine


def test_a_refused_name_is_a_usage_error_at_schedule_time_naming_the_option(tmp_path, monkeypatch):
    monkeypatch.setenv("JOBMAN_HOME", str(tmp_path / "home"))
    db = tmp_path / "jobs.json"
    result = subprocess.run([sys.executable, "-m", "jobman_cli", "--db", str(db), "schedule", "--image", "alpine:3",
                             "--at", "now", "--secret", "DOCKER_HOST=ssm:/prod/docker"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1 and "--secret" in result.stderr and "DOCKER_HOST" in result.stderr
    assert "Traceback" not in result.stderr
    assert not db.exists() or "DOCKER_HOST" not in db.read_text()


def test_secrets_count_in_the_schedule_time_size_check_and_are_named_when_they_take_the_room(tmp_path):
    from jobman_cli.stores.tinydb import TinyDBStore

    service = JobService(TinyDBStore(tmp_path / "jobs.json"))
    many = {f"SECRET_{i:02d}": "ssm:/" + "p" * 400 + f"/{i}" for i in range(40)}  # about 16 KiB of references
    with pytest.raises(InvalidInput) as caught:
        service.validate(ScheduleRequest(image="alpine:3", when="now", secrets=many), CLI_FIELDS)
    assert caught.value.field == "--secret" and "the secrets' names and references" in str(caught.value)
    with pytest.raises(InvalidInput) as caught:
        service.validate(ScheduleRequest(image="alpine:3", when="now", secrets=many))
    assert caught.value.field == "secrets"
    # What the check accepts renders under EC2's limit in the worst case the daemon can render.
    fits = dict(list(many.items())[:5])
    draft = service.validate(ScheduleRequest(image="alpine:3", when="now", secrets=fits))
    worst = replace(draft, id=2**53, attempts=999)
    script = render_user_data(worst, callback_url="https://" + "h" * 200 + "/jobMan/v1.1/jobs/1/callback",
                              callback_token=WORST_CASE_TOKEN, logs=size_probe_target())
    assert len(script.encode()) <= USER_DATA_LIMIT


def test_the_fixed_secrets_block_is_small():
    """About 3.9 KiB on top of the script, whatever the job: a job with secrets keeps most of the
    16 KiB for its environment, command and references."""
    base = len(render(make_job()).encode())
    one = len(render(make_job({"A": "ssm:/a"})).encode())
    print(f"\nsecrets block: {one - base} bytes (script without secrets: {base})")
    assert one - base < 4096


def test_a_crafted_reference_is_refused_in_linear_time() -> None:
    """A nested repeat in a reference pattern made a 40-character ssm name take hours to refuse,
    holding the interpreter lock (the whole daemon) meanwhile. Checked in a child process with a
    generous limit: linear matching takes milliseconds, the old pattern took hours."""
    import subprocess
    import sys

    code = ("from jobman_cli.secretrefs import parse_secret_ref\n"
            "from jobman_cli.errors import InvalidInput\n"
            "for text in ['ssm:' + 'a' * 2048 + '!', 'ssm:/' + 'a/' * 1000 + '!', 'secretsmanager:' + 'a' * 511 + '!',\n"
            "             'ssm:arn:aws:ssm:us-east-1:123456789012:parameter/' + 'a/' * 900 + '!']:\n"
            "    try:\n        parse_secret_ref(text)\n    except InvalidInput:\n        pass\n"
            "    else:\n        raise SystemExit('accepted ' + text[:40])\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=20)


@pytest.mark.parametrize("reference", [
    "ssm:--debug", "ssm:-h", "ssm:a/b", "ssm:/a/../b", "ssm:.", "ssm:/aws/service/x", "ssm:SSM-thing",
    "secretsmanager:-", "secretsmanager:--query=Name",
    "ssm:arn:aws:ssm:us-east-1:\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669\u0660\u0661\u0662:parameter/x",
])
def test_references_the_instance_could_never_read_are_refused_at_schedule_time(reference: str) -> None:
    from jobman_cli.errors import InvalidInput
    from jobman_cli.secretrefs import parse_secret_ref

    with pytest.raises(InvalidInput):
        parse_secret_ref(reference)


@pytest.mark.parametrize("reference, resource", [
    ("secretsmanager:app/db", "arn:aws:secretsmanager:*:*:secret:app/db-??????"),
    ("secretsmanager:arn:aws:secretsmanager:us-east-1:123456789012:secret:app/db",
     "arn:aws:secretsmanager:us-east-1:123456789012:secret:app/db-??????"),
    ("secretsmanager:arn:aws:secretsmanager:us-east-1:123456789012:secret:app/db-AbC123#k",
     "arn:aws:secretsmanager:us-east-1:123456789012:secret:app/db-AbC123"),
    ("ssm:/prod/db", "arn:aws:ssm:*:*:parameter/prod/db"),
])
def test_iam_resources_grant_exactly_the_reference(reference: str, resource: str) -> None:
    from jobman_cli.secretrefs import parse_secret_ref

    assert parse_secret_ref(reference).iam_resource == resource
