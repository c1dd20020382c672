"""Notifications (issue 13), in process: targets, delivery rules, the message, the signing secret,
the sender against a real receiver on 127.0.0.1, and bad input on the CLI and the API (exit 2 /
HTTP 400, the store byte-identical). The daemon end to end is in test_notify_e2e.py / _ha.py."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from notify_receiver import Receiver

from jobman_cli.cli import cli
from jobman_cli.errors import ConfigError, InvalidInput
from jobman_cli.model import Job, JobStatus, as_stored, job_to_api
from jobman_cli.notify import deliveries as plan
from jobman_cli.notify.message import body, sign, slack_text, verify
from jobman_cli.notify.send import Sender
from jobman_cli.notify.settings import default_targets, load_or_create_secret, notify_settings
from jobman_cli.notify.targets import redact, target_kind, validate_notify_on, validate_targets

UTC = timezone.utc
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
POLICY = plan.Policy(backoff_base=10, backoff_max=100, max_age=1000, lease=60)
HOOK = "https://example.com/hook"


def ended(status: str = "failed", notify: tuple[str, ...] = (HOOK,), notify_on: str = "failure") -> Job:
    job = Job(id=7, title="report", date_time=T0, docker_image="alpine:3.20", env_variables={"PASSWORD": "env-val"},
              status=JobStatus.SCHEDULED, created_at=T0, secrets={"TOKEN": "ssm:/prod/token"},
              command=("--api-key", "cmd-secret"), notify=notify, notify_on=notify_on)
    job = job.claimed(T0, "lt", "hash").launched("i-0123", T0)
    if status == "cancelled":
        return job.cancelled(T0)
    return job.reported(status, 0 if status == "finished" else 4, T0)


# --------------------------------------------------------------------------- targets
@pytest.mark.parametrize("target, kind", [
    ("https://example.com/hook?x=1", "webhook"), ("http://127.0.0.1:8080/", "webhook"),
    ("https://hooks.slack.com/services/T0/B0/abc", "slack"), ("slack+https://chat.example.com/hooks/x", "slack"),
    ("sns:arn:aws:sns:eu-west-1:123456789012:alerts", "sns"), ("sns:arn:aws:sns:us-east-1:123456789012:a.fifo", "sns"),
])
def test_valid_targets_and_their_kind(target: str, kind: str) -> None:
    assert validate_targets([target]) == (target,)
    assert target_kind(target) == kind


@pytest.mark.parametrize("value, words", [
    (["ftp://example.com/x"], "is not a target"), (["example.com/hook"], "is not a target"),
    (["https://"], "is not a target"), (["sns:arn:aws:sqs:us-east-1:123456789012:q"], "not an SNS target"),
    (["sns:my-topic"], "not an SNS target"), (["https://ex ample.com"], "no spaces"),
    (["http://169.254.169.254/latest"], "link-local"), (["slack+http://chat.example.com/x"], "must be https"),
    (["https://example.com/a#frag"], "fragment"), ([HOOK, HOOK], "given twice"), ("https://x.example", "list"),
    ([HOOK + str(i) for i in range(11)], "at most 10"), ([""], "non-empty"), ([3], "non-empty string"),
    (["https://example.com:99999/"], "not a valid URL"),
])
def test_malformed_targets_are_refused_naming_them(value, words: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_targets(value, "--notify")
    assert caught.value.field == "--notify" and words in str(caught.value)


def test_notify_on() -> None:
    assert validate_notify_on(None) == "failure" and validate_notify_on("end") == "end"
    with pytest.raises(InvalidInput, match="must be one of failure, end"):
        validate_notify_on("always", "--notify-on")


def test_redaction_hides_what_may_be_a_credential() -> None:
    assert redact("https://hooks.slack.com/services/T0/B0/s3cr3t") == "https://hooks.slack.com/services/T0/B0/…"
    assert redact("https://user:pw@example.com/h?token=abc") == "https://…@example.com/h?…"
    assert redact("sns:arn:aws:sns:eu-west-1:123456789012:alerts") == "sns:arn:aws:sns:eu-west-1:123456789012:alerts"
    job = as_stored(ended(notify=("https://u:pw@example.com/h?token=abc",)))
    shown = json.dumps(job_to_api(job))
    assert "pw" not in shown and "token=abc" not in shown and job.notify == ("https://u:pw@example.com/h?token=abc",)


# --------------------------------------------------------------------------- delivery rules
def test_what_failure_and_end_cover() -> None:
    assert plan.wanted(ended("failed")) == [(0, "failed")]
    assert plan.wanted(ended("finished")) == [] and plan.wanted(ended("cancelled")) == []
    assert plan.wanted(ended("finished", notify_on="end")) == [(0, "finished")]
    assert plan.wanted(ended("cancelled", notify_on="end")) == [(0, "cancelled")]
    assert plan.wanted(ended("failed", notify=())) == []


def test_claim_settle_retry_deliver() -> None:
    job = ended()
    assert plan.next_due(job, T0, POLICY) == job.finished_at
    claimed = plan.claim(job, 0, "failed", T0, "daemon-a", POLICY, "eid")
    record = plan.record_of(claimed, 0, "failed")
    assert (record["state"], record["attempts"], record["claimed-by"]) == ("sending", 1, "daemon-a")
    with pytest.raises(plan.NotDue):  # another daemon cannot claim it while the claim lasts
        plan.claim(claimed, 0, "failed", T0 + timedelta(seconds=59), "daemon-b", POLICY, "eid")
    with pytest.raises(plan.NotDue):  # nor settle it
        plan.settle(claimed, 0, "failed", 1, "daemon-b", plan.Outcome(True, "HTTP 200"), T0, POLICY)
    retry = plan.settle(claimed, 0, "failed", 1, "daemon-a", plan.Outcome(False, "HTTP 500"), T0, POLICY)
    record = plan.record_of(retry, 0, "failed")
    assert record["state"] == "pending" and record["next-attempt-at"] == "2030-01-01T12:00:10Z"
    assert plan.next_due(retry, T0, POLICY) == T0 + timedelta(seconds=10)
    with pytest.raises(plan.NotDue):
        plan.claim(retry, 0, "failed", T0 + timedelta(seconds=9), "daemon-a", POLICY, "eid")
    second = plan.claim(retry, 0, "failed", T0 + timedelta(seconds=10), "daemon-b", POLICY, "eid")
    done = plan.settle(second, 0, "failed", 2, "daemon-b", plan.Outcome(True, "HTTP 200"), T0, POLICY)
    record = plan.record_of(done, 0, "failed")
    assert record["state"] == "delivered" and [h["outcome"] for h in record["history"]] == ["HTTP 500", "HTTP 200"]
    assert plan.next_due(done, T0, POLICY) is None and not plan.pending(done)


def test_backoff_doubles_to_its_cap_and_honours_retry_after() -> None:
    assert [POLICY.delay(n) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 80, 100]
    assert POLICY.delay(1, retry_after=30) == 30 and POLICY.delay(1, retry_after=5000) == 100


def test_a_final_refusal_and_the_age_limit_end_retries() -> None:
    claimed = plan.claim(ended(), 0, "failed", T0, "a", POLICY, "eid")
    final = plan.settle(claimed, 0, "failed", 1, "a", plan.Outcome(False, "HTTP 404", final=True), T0, POLICY)
    assert plan.record_of(final, 0, "failed")["state"] == "failed"
    late = T0 + timedelta(seconds=995)
    claimed = plan.claim(ended(), 0, "failed", late, "a", POLICY, "eid")
    gave_up = plan.settle(claimed, 0, "failed", 1, "a", plan.Outcome(False, "HTTP 503"), late, POLICY)
    record = plan.record_of(gave_up, 0, "failed")
    assert record["state"] == "failed" and "gave up after 1 attempts" in record["history"][-1]["outcome"]


def test_a_claim_whose_owner_died_is_taken_over_and_its_attempt_recorded_as_unknown() -> None:
    claimed = plan.claim(ended(), 0, "failed", T0, "dead", POLICY, "eid")
    later = T0 + timedelta(seconds=61)
    taken = plan.claim(claimed, 0, "failed", later, "alive", POLICY, "eid")
    record = plan.record_of(taken, 0, "failed")
    assert (record["attempts"], record["claimed-by"]) == (2, "alive")
    assert record["history"][0]["outcome"].startswith("unknown: dead stopped")
    with pytest.raises(plan.NotDue):  # the dead owner's late answer is not recorded over the new claim
        plan.settle(taken, 0, "failed", 1, "dead", plan.Outcome(True, "HTTP 200"), later, POLICY)


def test_deliveries_survive_the_store_round_trip() -> None:
    claimed = plan.claim(ended(), 0, "failed", T0, "a", POLICY, "eid")
    assert as_stored(claimed).deliveries == claimed.deliveries
    assert job_to_api(claimed)["notifications"][0]["event-id"] == "eid"


# --------------------------------------------------------------------------- the message
def test_body_has_public_fields_only() -> None:
    job = ended()
    data = body(job, "eid-1")
    raw = json.dumps(data)
    assert data["event"] == "job.failed" and data["event-id"] == "eid-1" and data["reason-code"] == "exited"
    assert data["exit-code"] == 4 and data["log"]["command"] == "jobman logs 7"
    for leak in ("env-val", "PASSWORD", "ssm:/prod/token", "cmd-secret", HOOK):
        assert leak not in raw


def test_signature_is_hmac_sha256_of_the_raw_body() -> None:
    raw = b'{"event":"job.failed"}'
    assert sign(raw, b"k" * 16) == "sha256=" + hmac.new(b"k" * 16, raw, hashlib.sha256).hexdigest()
    assert verify(raw, sign(raw, b"k" * 16), b"k" * 16) and not verify(raw, sign(raw, b"x" * 16), b"k" * 16)


def test_slack_paragraph_is_readable_and_escaped() -> None:
    job = dataclasses.replace(ended(), title="<!channel> & co")
    text = slack_text(body(job, "e"))
    assert text.startswith("jobman: job 7 \u201c&lt;!channel&gt; &amp; co\u201d (alpine:3.20) failed: exit code 4.")
    assert "Reason code exited, exit code 4." in text and "`jobman logs 7`" in text and "\n" not in text


# --------------------------------------------------------------------------- sending
def test_sender_outcomes_against_a_real_receiver() -> None:
    hook = Receiver(answers=[200, 500, 429, 404, 301])
    try:
        sender = Sender(b"s" * 16, timeout=5)
        data = body(ended(), "eid-9")
        outcomes = [sender.send(f"{hook.url}/x", data) for _ in range(5)]
        assert [(o.ok, o.final) for o in outcomes] == [(True, False), (False, False), (False, False), (False, True),
                                                       (False, True)]
        slack = sender.send(f"slack+{hook.url}/slack", data)
        assert slack.ok
        received = hook.wait_for(6)
        assert json.loads(received[5].body) == {"text": slack_text(data)}
        assert received[0].headers["X-Jobman-Event-Id"] == "eid-9"
    finally:
        hook.close()
    down = Sender(b"s" * 16, timeout=2).send(hook.url, data)  # the receiver is gone: try again later
    assert not down.ok and not down.final and down.text.startswith("no answer: ")


# --------------------------------------------------------------------------- settings and the secret
def test_secret_file_is_made_0600_and_a_readable_one_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("JOBMAN_NOTIFY_SECRET", raising=False)
    monkeypatch.delenv("JOBMAN_NOTIFY_SECRET_FILE", raising=False)
    secret, origin = load_or_create_secret(tmp_path)
    path = tmp_path / "notify-secret"
    assert origin == f"secret file {path}" and len(secret) == 64 and os.stat(path).st_mode & 0o777 == 0o600
    assert load_or_create_secret(tmp_path)[0] == secret
    os.chmod(path, 0o640)
    with pytest.raises(ConfigError, match="accessible by group or others"):  # a leaked secret: not used
        load_or_create_secret(tmp_path)
    monkeypatch.setenv("JOBMAN_NOTIFY_SECRET", "short")
    with pytest.raises(ConfigError, match="at least 16"):
        load_or_create_secret(tmp_path)
    monkeypatch.setenv("JOBMAN_NOTIFY_SECRET", "x" * 20)
    assert load_or_create_secret(tmp_path) == (b"x" * 20, "JOBMAN_NOTIFY_SECRET")


def test_settings_and_default_targets_from_config(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "config.toml").write_text(f'[notify]\ntargets = ["{HOOK}"]\non = "end"\nbackoff_base = "1m"\n'
                                          'max_age = 7200\n')
    monkeypatch.setenv("JOBMAN_NOTIFY_WORKERS", "4")
    assert default_targets(tmp_path) == ((HOOK,), "end")
    settings = notify_settings(tmp_path)
    assert (settings.policy.backoff_base, settings.policy.max_age, settings.workers) == (60, 7200, 4)
    (tmp_path / "config.toml").write_text('[notify]\ntargets = ["ftp://x"]\n')
    with pytest.raises(ConfigError, match=r"config file \[notify\] targets"):
        default_targets(tmp_path)


def test_schedule_uses_the_config_default_unless_notify_is_given(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("JOBMAN_HOME", str(tmp_path))
    (tmp_path / "config.toml").write_text(f'[notify]\ntargets = ["{HOOK}"]\n')
    db = str(tmp_path / "jobs.json")
    runner = CliRunner()
    default = runner.invoke(cli, ["--db", db, "schedule", "--image", "alpine", "--at", "+1h", "--json"])
    given = runner.invoke(cli, ["--db", db, "schedule", "--image", "alpine", "--at", "+1h", "--json",
                                "--notify", "sns:arn:aws:sns:us-east-1:123456789012:t", "--notify-on", "end"])
    assert default.exit_code == 0 and given.exit_code == 0, (default.output, given.output)
    assert (json.loads(default.stdout)["notify"], json.loads(default.stdout)["notify-on"]) == ([HOOK], "failure")
    assert json.loads(given.stdout)["notify"] == ["sns:arn:aws:sns:us-east-1:123456789012:t"]


# --------------------------------------------------------------------------- bad input
BAD_CLI = [
    (["--notify", "ftp://example.com/x"], "--notify", "ftp://example.com/x"),
    (["--notify", "sns:not-an-arn"], "--notify", "sns:not-an-arn"),
    (["--notify", HOOK, "--notify", HOOK], "--notify", "given twice"),
    (["--notify-on", "always"], "--notify-on", "always"),
]


@pytest.mark.parametrize("extra, field, words", BAD_CLI)
def test_cli_bad_notify_input_is_exit_2_and_writes_nothing(tmp_path: Path, monkeypatch, extra, field, words) -> None:
    monkeypatch.setenv("JOBMAN_HOME", str(tmp_path))
    db = tmp_path / "jobs.json"
    runner = CliRunner()
    assert runner.invoke(cli, ["--db", str(db), "schedule", "--image", "alpine", "--at", "+1h", "-q"]).exit_code == 0
    before = db.read_bytes()
    result = runner.invoke(cli, ["--db", str(db), "schedule", "--image", "alpine", "--at", "+1h", *extra])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and words in lines[0] and "Traceback" not in result.output
    assert db.read_bytes() == before


@pytest.mark.parametrize("fields, words", [
    ({"notify": ["ftp://example.com/x"]}, "notify: 'ftp://example.com/x' is not a target"),
    ({"notify": "https://example.com/hook"}, "notify: must be a list of targets"),
    ({"notify": [HOOK], "notify-on": "sometimes"}, "notify-on: must be one of failure, end"),
    ({"notify": [{"url": HOOK}]}, "notify: a target must be a non-empty string"),
])
def test_api_bad_notify_input_is_400_and_writes_nothing(tmp_path: Path, fields, words) -> None:
    from test_api import Api

    from jobman_cli.service import JobService
    from jobman_cli.stores import open_store

    db = tmp_path / "jobs.json"
    store = open_store(db)
    api = Api(JobService(store), db)
    try:
        api.schedule()
        before = db.read_bytes()
        status, _, answer = api.call("POST", "/jobs/schedule", {"date-time": "+10m", "docker-image": "alpine:3.20",
                                                                **fields})
        assert status == 400 and words in answer["error"], answer
        assert db.read_bytes() == before
        status, _, job = api.call("POST", "/jobs/schedule", {"date-time": "+10m", "docker-image": "alpine:3.20",
                                                             "notify": [HOOK], "notify-on": "end"})
        assert status == 201 and (job["notify"], job["notify-on"], job["notifications"]) == ([HOOK], "end", [])
    finally:
        api.server.stop()
        store.close()
