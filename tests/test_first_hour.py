"""Issue 14, "the operator's first hour": each rough edge a new user hit, black-box through the real
``jobman`` program (a subprocess of ``python -m jobman_cli``), so what is tested is what they see.

Silent failures first: a store that does not exist, a mistyped store URL, no daemon running,
config typos, Ctrl-C; then the smaller stumbles.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest
from moto_server import moto_server, moto_server_process  # noqa: F401  (fixtures)
from test_e2e_daemon import daemons  # noqa: F401  (fixture: real daemon processes, stopped at the end)

JOBMAN = [sys.executable, "-m", "jobman_cli"]

#: A real separate process holding a TinyDB store's daemon lock, as a running daemon does.
HOLDER = r"""
import sys, time
from jobman_cli.daemon.main import DaemonLock
DaemonLock(sys.argv[1])
print("locked", flush=True)
time.sleep(600)
"""


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBMAN_", "AWS_"))}
    env.update(JOBMAN_HOME=str(home), AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
               AWS_EC2_METADATA_DISABLED="true", **extra)
    return env


def jobman(home: Path, *args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*JOBMAN, *args], env=clean_env(home, **env), capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def one_line_error(result: subprocess.CompletedProcess, code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def hold_daemon_lock(holders: list[subprocess.Popen], store: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(store)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    holders.append(proc)
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"


def schedule(home: Path, *extra: str) -> subprocess.CompletedProcess:
    result = jobman(home, "schedule", "--image", "alpine:3.20", "--at", "+1h", *extra)
    assert result.returncode == 0, result.stderr
    return result


# --------------------------------------------------------------------------- the store does not exist
@pytest.mark.parametrize("args", [("list",), ("list", "--json"), ("status", "1"), ("status", "1", "--wait"),
                                  ("logs", "1"), ("cancel", "1"), ("callback", "1", "--status", "running")])
def test_readers_say_the_store_file_does_not_exist(home: Path, tmp_path: Path, args: tuple[str, ...]) -> None:
    typo = tmp_path / "jbos.json"
    result = jobman(home, *args, JOBMAN_DB=str(typo))
    error = one_line_error(result, 1)
    assert f"store file {typo} does not exist" in error and "JOBMAN_HOME" in error
    assert result.stdout == ""
    assert not typo.exists() and not home.exists() and sorted(os.listdir(tmp_path)) == []


def test_a_wrong_jobman_home_is_named_and_schedule_still_creates_the_store(home: Path) -> None:
    error = one_line_error(jobman(home, "list"), 1)
    assert f"store file {home / 'jobs.json'} does not exist" in error
    schedule(home)
    listed = jobman(home, "list")
    assert listed.returncode == 0 and "alpine:3.20" in listed.stdout


# --------------------------------------------------------------------------- --db after the subcommand
def test_db_and_store_work_after_the_subcommand(home: Path, tmp_path: Path) -> None:
    db = tmp_path / "x.json"
    created = jobman(home, "schedule", "--image", "alpine:3.20", "--at", "+1h", "--db", str(db), "-q")
    assert created.returncode == 0 and created.stdout == "1\n", created.stderr
    assert db.exists() and not (home / "jobs.json").exists()
    for flag in ("--db", "--store"):
        listed = jobman(home, "list", flag, str(db), "--json")
        assert listed.returncode == 0 and '"id": 1' in listed.stdout, listed.stderr
        shown = jobman(home, "status", "1", flag, str(db))
        assert shown.returncode == 0 and "alpine:3.20" in shown.stdout
    # after the subcommand beats before it, as a later flag does
    later = jobman(home, "--db", str(tmp_path / "other.json"), "list", "--db", str(db))
    assert later.returncode == 0 and "alpine:3.20" in later.stdout


# --------------------------------------------------------------------------- mistyped store URLs
@pytest.mark.parametrize("location, hint", [
    ("dynamodb:/t", "did you mean dynamodb://t?"),
    ("dynamodb:t", "did you mean dynamodb://t?"),
    ("dynamo://t", "did you mean dynamodb://t?"),
    ("s3://bucket/jobs.json", "the only URL store is dynamodb://TABLE"),
    ("dynamodb://", "names no table"),
])
@pytest.mark.parametrize("command", [("schedule", "--image", "alpine", "--at", "+1h"), ("list",), ("store", "init"),
                                     ("daemon", "--once", "--public-url", "http://10.0.0.5:8321")])
def test_a_store_location_that_looks_like_a_mistyped_url_is_refused(home: Path, tmp_path: Path, location: str,
                                                                     hint: str, command: tuple[str, ...]) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    result = jobman(home, "--store", location, *command, cwd=work)
    error = one_line_error(result, 2)
    assert error.startswith("Error: --store: ") and hint in error
    assert os.listdir(work) == [] and not home.exists()  # no file named like the URL, no lock file


def test_a_mistyped_url_in_the_environment_is_refused_and_a_dot_slash_path_is_a_file(home: Path,
                                                                                     tmp_path: Path) -> None:
    one_line_error(jobman(home, "list", JOBMAN_STORE="dynamodb:jobs"), 2)
    result = jobman(home, "schedule", "--image", "alpine", "--at", "+1h", "-q", "--store", "./dynamodb:jobs",
                    cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "dynamodb:jobs").is_file()


# --------------------------------------------------------------------------- no daemon running
NO_DAEMON = "Note: no jobman daemon is running on"


def test_schedule_without_a_daemon_says_so_on_stderr_and_succeeds(home: Path, holders) -> None:
    result = schedule(home, "-q")
    assert result.stdout == "1\n"
    assert result.stderr == (f"{NO_DAEMON} {home / 'jobs.json'}; jobs start only while one runs "
                             "('jobman daemon')\n")
    hold_daemon_lock(holders, home / "jobs.json")
    again = schedule(home, "-q")
    assert again.stdout == "2\n" and again.stderr == ""


def test_status_wait_says_no_daemon_runs_and_ctrl_c_exits_130(home: Path) -> None:
    schedule(home)
    proc = subprocess.Popen([*JOBMAN, "status", "1", "--wait"], env=clean_env(home), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        seen = _read_until(proc.stderr.fileno(), "\n")  # raw reads with a deadline: never hangs the suite
        assert seen.startswith(NO_DAEMON), seen  # said while waiting, before any Ctrl-C
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err == "Interrupted: stopped waiting; job 1 is still scheduled (waiting does not affect the job)\n"
    assert "Aborted" not in err and out == ""


def test_status_wait_next_to_a_daemon_says_nothing_about_it(home: Path, holders) -> None:
    schedule(home)
    hold_daemon_lock(holders, home / "jobs.json")
    result = jobman(home, "status", "1", "--wait", "--wait-timeout", "1s")
    assert result.returncode == 124
    assert NO_DAEMON not in result.stderr and result.stderr.startswith("Error: job 1 is still scheduled after 1s")


def _read_until(fd: int, text: str, limit: float = 60.0) -> str:
    seen, deadline = "", time.monotonic() + limit
    while text not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"{text!r} never appeared; got {seen!r}")
        seen += os.read(fd, 4096).decode()
    return seen


def test_status_wait_on_a_terminal_shows_what_it_waits_for_and_each_change(home: Path) -> None:
    from jobman_cli.stores.tinydb import TinyDBStore

    schedule(home)
    master, slave = pty.openpty()
    proc = subprocess.Popen([*JOBMAN, "status", "1", "--wait"], env=clean_env(home), stdout=subprocess.PIPE,
                            stderr=slave, text=True)
    os.close(slave)
    try:
        seen = _read_until(master, "Ctrl-C stops waiting")
        assert "Waiting for job 1 (scheduled, due in 1h)" in seen
        now = datetime.now(timezone.utc)
        with TinyDBStore(home / "jobs.json") as store:
            store.update(1, lambda j: j.claimed(now, "tok-1-1"))
            _read_until(master, "job 1: launching")
            store.update(1, lambda j: j.launched("i-0123456789abcdef0", now))
            store.update(1, lambda j: j.reported("finished", 0, now))
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert proc.returncode == 0 and "finished" in out


# --------------------------------------------------------------------------- config.toml typos
@pytest.mark.parametrize("text, expected", [
    ("[deamon]\nreconcile_interval = 30\n", "unknown table [deamon]; did you mean 'daemon'?"),
    ("[daemon]\nreconcile_intreval = 30\n", "unknown key 'reconcile_intreval' in [daemon]; did you mean "
                                            "'reconcile_interval'?"),
    ("[ec2]\ninstance_typ = \"t3.small\"\n", "unknown key 'instance_typ' in [ec2]; did you mean 'instance_type'?"),
    ("[daemon]\ninstance_type = \"t3.small\"\n", "unknown key 'instance_type' in [daemon]; did you mean "
                                                 "'instance_type' in [ec2]?"),
    ("region = \"us-east-1\"\n", "unknown table [region]"),
])
def test_config_typos_are_errors_naming_the_file_and_the_close_match(home: Path, text: str, expected: str) -> None:
    home.mkdir()
    (home / "config.toml").write_text(text)
    result = jobman(home, "daemon", "--once", "--public-url", "http://10.0.0.5:8321")
    error = one_line_error(result, 1)
    assert error.startswith(f"Error: config file {home / 'config.toml'}: ") and expected in error, error
    assert sorted(os.listdir(home)) == ["config.toml"]  # refused before anything was created


@pytest.mark.parametrize("text, expected", [
    ("[daemon]\nreconcile_interval = \"30\"\n", "config file [daemon] reconcile_interval: must be a number (got '30')"),
    ("[daemon]\nlaunch_workers = 2.5\n", "config file [daemon] launch_workers: must be a whole number (got 2.5)"),
    ("[daemon]\nmax_attempts = true\n", "config file [daemon] max_attempts: must be a whole number (got True)"),
    ("[logs]\nretention_days = \"30\"\n", "config file [logs] retention_days: '30' is not a retention"),
])
def test_config_values_of_the_wrong_type_are_errors(home: Path, text: str, expected: str) -> None:
    home.mkdir()
    (home / "config.toml").write_text(text)
    command = ("setup", "aws", "--dry-run") if "[logs]" in text else ("daemon", "--once", "--public-url",
                                                                       "http://10.0.0.5:8321")
    assert one_line_error(jobman(home, *command), 1).startswith(f"Error: {expected}")
    assert sorted(os.listdir(home)) == ["config.toml"]


def test_a_valid_config_file_is_accepted(home: Path) -> None:
    from jobman_cli.config import load_config_file

    home.mkdir()
    (home / "config.toml").write_text(
        "[daemon]\nreconcile_interval = 30\nlaunch_workers = 4\npublic_url = \"http://10.0.0.5:8321\"\n"
        "[ec2]\ninstance_type = \"t3.small\"\nsecurity_group_ids = [\"sg-1\"]\ntags = { team = \"data\" }\n"
        "[logs]\ngroup = \"jobman\"\nretention_days = 30\n[notify]\ntimeout = \"10s\"\nworkers = 4\n")
    assert load_config_file(home)["ec2"]["instance_type"] == "t3.small"


# --------------------------------------------------------------------------- next to a real daemon (moto)
def test_a_real_daemon_names_its_config_file_and_once_beside_it_says_what_to_do(moto_server, tmp_path: Path,
                                                                                  daemons) -> None:
    import http.client
    import re

    from moto_server import aws_env

    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("[daemon]\nreconcile_interval = 30\n")
    env = aws_env(moto_server, JOBMAN_HOME=str(home), JOBMAN_API_TOKEN="t" * 40)
    daemon = daemons(env)
    daemon.wait_for(lambda line: "ready" in line)
    assert re.search(rf"daemon \S+ starting; config file {re.escape(str(home / 'config.toml'))}$", daemon.text(), re.M)
    port = int(re.search(r"listening on http://127\.0\.0\.1:(\d+)", daemon.text()).group(1))  # type: ignore

    # an empty token (curl -H "Authorization: Bearer $TOKEN" with TOKEN unset) is named as such
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/jobMan/v1.1/jobs", headers={"Authorization": "Bearer "})
    answer = conn.getresponse()
    body = answer.read().decode()
    conn.close()
    assert answer.status == 401 and "the bearer token is empty" in body and "must be" not in body

    # daemon --once beside it: one line that says why and what to do
    once = subprocess.run([*JOBMAN, "daemon", "--once", "--public-url", "http://10.0.0.5:8321"], env=env,
                          capture_output=True, text=True, timeout=120)
    error = one_line_error(once, 1)
    assert "is already running on" in error and "--once is not needed" in error
    # schedule and status --wait next to it: no "no daemon" note
    scheduled = subprocess.run([*JOBMAN, "schedule", "--image", "alpine", "--at", "+1h", "-q"], env=env,
                               capture_output=True, text=True, timeout=120)
    assert scheduled.returncode == 0 and scheduled.stderr == ""
    assert daemon.stop() == 0


def test_daemon_without_public_url_outside_an_emulator_says_what_to_pass(home: Path) -> None:
    result = jobman(home, "daemon", AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y")
    error = one_line_error(result, 2)
    assert error.startswith("Error: --public-url: instances cannot reach 127.0.0.1; give an address they can reach")
    assert "no --public-url was given" in error and "--listen 0.0.0.0:8321 --public-url http://ADDRESS:8321" in error
    explicit = jobman(home, "daemon", "--public-url", "http://127.0.0.1:8321", AWS_REGION="us-east-1")
    assert "no --public-url was given" not in one_line_error(explicit, 2)  # the user's own URL: the plain message


# --------------------------------------------------------------------------- smaller stumbles
@pytest.mark.parametrize("args, first", [((), "Usage: jobman [OPTIONS] COMMAND [ARGS]..."),
                                         (("store",), "Usage: jobman store [OPTIONS] COMMAND [ARGS]..."),
                                         (("setup",), "Usage: jobman setup [OPTIONS] COMMAND [ARGS]...")])
def test_no_arguments_prints_the_help_laid_out_not_squashed(home: Path, args: tuple[str, ...], first: str) -> None:
    result = jobman(home, *args)
    assert result.returncode == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == first and "Commands:" in lines and len(lines) > 8
    assert result.stdout == jobman(home, *args, "--help").stdout


@pytest.mark.parametrize("at, shown", [("+10m", "(in 10m)"), ("+1d", "(in 1d)"), ("+2h", "(in 2h)"),
                                        ("+10 minutes", "(in 10m)"), ("in 10 minutes", "(in 10m)")])
def test_relative_times_read_back_as_given(home: Path, at: str, shown: str) -> None:
    result = jobman(home, "schedule", "--image", "alpine", "--at", at)
    assert result.returncode == 0 and shown in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("tz", ["utc", "UTC", "Utc", "z"])
def test_tz_utc_in_any_case_is_known(home: Path, tz: str) -> None:
    result = jobman(home, "schedule", "--image", "alpine", "--at", "2099-01-01 09:00:00", "--tz", tz)
    assert result.returncode == 0 and "2099-01-01T09:00:00Z" in result.stdout, result.stderr


def test_plus_form_still_refuses_uppercase_units(home: Path) -> None:
    assert "--at" in one_line_error(jobman(home, "schedule", "--image", "alpine", "--at", "+10M"), 2)


def test_repeated_env_name_is_refused_naming_it(home: Path) -> None:
    error = one_line_error(jobman(home, "schedule", "--image", "alpine", "--at", "+1h", "-e", "A=1", "-e", "A=2"), 2)
    assert error == "Error: -e: A is given twice (A=1 and A=2); give each name once\n"
    assert not home.exists()  # nothing written
    fine = jobman(home, "schedule", "--image", "alpine", "--at", "+1h", "-e", "A=1", "-e", "AB=2", "-q")
    assert fine.returncode == 0


def test_callback_errors_name_the_flags_not_the_api_fields(home: Path) -> None:
    schedule(home)
    error = one_line_error(jobman(home, "callback", "1", "--status", "finished", "--exit-code", "3"), 2)
    assert error.startswith("Error: --exit-code: ") and "use --status failed" in error
    assert "exit-code:" not in error.replace("--exit-code:", "")


@pytest.mark.parametrize("lock_file", ["absent", "read-only"])
def test_a_read_only_store_directory_can_still_be_read(home: Path, lock_file: str) -> None:
    """Readers take no lock: with the directory and files read-only (and the lock file gone), list and
    status still work; a write says why it cannot. Root ignores permissions, so the commands run
    without the capabilities that let root write anywhere (setpriv), as an ordinary user would."""
    schedule(home)
    if lock_file == "absent":
        (home / "jobs.json.lock").unlink()
    else:
        (home / "jobs.json.lock").chmod(0o400)
    (home / "jobs.json").chmod(0o400)
    home.chmod(0o500)
    prefix: list[str] = []
    if os.geteuid() == 0:
        import shutil

        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot make a directory read-only")
        drop = "-dac_override,-dac_read_search,-fowner"
        prefix = ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}"]
    env = clean_env(home)
    try:
        def run(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([*prefix, *JOBMAN, *args], env=env, capture_output=True, text=True, timeout=120)

        listed = run("list")
        assert listed.returncode == 0 and "alpine:3.20" in listed.stdout, listed.stderr
        shown = run("status", "1", "--json")
        assert shown.returncode == 0 and '"status": "scheduled"' in shown.stdout, shown.stderr
        denied = run("cancel", "1")
        error = one_line_error(denied, 1)
        assert "Permission denied" in error and str(home) in error
        assert sorted(os.listdir(home)) == (["jobs.json"] if lock_file == "absent" else ["jobs.json", "jobs.json.lock"])
    finally:
        home.chmod(0o700)


# --------------------------------------------------------------------------- --help
def _all_commands() -> list[tuple[str, ...]]:
    import click

    from jobman_cli.cli import cli

    found: list[tuple[str, ...]] = []

    def walk(group: click.Group, path: tuple[str, ...]) -> None:
        for name, command in group.commands.items():
            found.append((*path, name))
            if isinstance(command, click.Group):
                walk(command, (*path, name))

    walk(cli, ())
    return found


@pytest.mark.parametrize("path", _all_commands(), ids=" ".join)
def test_every_subcommand_help_ends_with_examples(home: Path, path: tuple[str, ...]) -> None:
    result = jobman(home, *path, "--help")
    assert result.returncode == 0
    tail = result.stdout.rstrip("\n").split("\n\n")[-1].splitlines()
    assert tail[0].strip() == "Examples:" and 1 <= len(tail) - 1 <= 2, result.stdout
    assert all(line.startswith(f"    $ jobman {' '.join(path)}") for line in tail[1:]), tail


def test_the_schedule_and_reader_examples_run_as_printed(home: Path) -> None:
    import shlex

    from jobman_cli.helptext import EXAMPLES

    for command in ("schedule", "list", "status"):
        for line in EXAMPLES[command]:
            argv = shlex.split(line.split("&&")[0])[1:]
            if "--wait" in argv:
                continue  # waits for a daemon
            result = jobman(home, *argv)
            assert result.returncode == 0, (line, result.stderr)


def test_help_shows_defaults_descriptions_and_the_config_file(home: Path) -> None:
    top = jobman(home, "--help").stdout
    assert "$JOBMAN_HOME/config.toml" in top and "--public-url http://ADDRESS:8321" in top
    assert "config.toml" in jobman(home, "daemon", "--help").stdout
    assert "[default: no limit]" in " ".join(jobman(home, "status", "--help").stdout.split())
    callback = " ".join(jobman(home, "callback", "--help").stdout.split())
    assert "--status [running|finished|failed] The job's new state" in callback
    at_help = jobman(home, "schedule", "--help").stdout
    assert "2026-" not in at_help and "YYYY-MM-DD HH:MM:SS" in at_help


# --------------------------------------------------------------------------- examples/quickstart.sh
@pytest.mark.slow
def test_quickstart_script_writes_no_escape_codes_into_a_file(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBMAN_", "AWS_"))}
    from moto_server import free_ports  # below the ephemeral range, which other workers' connections use

    moto_port, api_port = free_ports(2)
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", JOBMAN_HOME=str(tmp_path / "h"),
               MOTO_PORT=str(moto_port), API_PORT=str(api_port))
    log = tmp_path / "quickstart.log"
    with log.open("w") as out:
        result = subprocess.run(["bash", str(root / "examples" / "quickstart.sh")], cwd=root, env=env, stdout=out,
                                stderr=subprocess.PIPE, text=True, timeout=180)
    text = log.read_text()
    assert result.returncode == 0, text[-2000:] + result.stderr[-2000:]
    assert "\x1b" not in text and "\n$ jobman status 1\n" in text


def test_logs_without_credentials_is_one_plain_line(home: Path) -> None:
    from jobman_cli.stores.tinydb import TinyDBStore

    schedule(home)
    now = datetime.now(timezone.utc)
    with TinyDBStore(home / "jobs.json") as store:
        store.update(1, lambda j: j.claimed(now, "tok-1-1"))
        store.update(1, lambda j: j.launched("i-0123456789abcdef0", now))
    error = one_line_error(jobman(home, "logs", "1", AWS_REGION="us-east-1"), 1)
    assert error == ("Error: no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                     "or use an instance role)\n")


def test_the_readme_config_example_passes_the_config_check() -> None:
    import re
    import tomllib

    from jobman_cli.configcheck import check_config

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", readme, flags=re.S)
    assert blocks
    for block in blocks:
        check_config(Path("README.md"), tomllib.loads(block))


def test_every_key_the_code_reads_from_config_toml_passes_the_config_check() -> None:
    """A key the product reads (``config_section("T").get("K")`` or a settings helper's
    ``get("K", ...)`` on that section) but the check does not know would make config.toml with
    that documented key an error at start (it happened: [cost] and [notify] receipt_wait)."""
    import re

    from jobman_cli.configcheck import known_keys

    known = known_keys()
    root = Path(__file__).resolve().parent.parent / "jobman_cli"
    found: set[tuple[str, str]] = set()
    for path in root.rglob("*.py"):
        text = path.read_text()
        found |= set(re.findall(r'config_section\("(\w+)"[^)]*\)\.get\("(\w+)"', text))
        tables = set(re.findall(r'section = config_section\("(\w+)"', text))
        if len(tables) == 1 and tables != {"daemon"}:  # one table read through a local helper: get("key", ...)
            (table,) = tables  # ([daemon]'s keys are DaemonSettings' fields by construction)
            found |= {(table, key) for key in re.findall(r'\bget\("([a-z_]+)"', text)}
    assert ("cost", "receipts") in found and ("notify", "receipt_wait") in found  # the scan sees them
    unknown = sorted((t, k) for t, k in found if k not in known.get(t, frozenset()))
    assert unknown == []


@pytest.mark.parametrize("ahead, shown", [(9 * 60 + 40, "(in 10m)"), (86400 - 20, "(in 1d)"),
                                           (2 * 3600 - 15, "(in 2h)")])
def test_relative_times_round_to_the_nearest_minute(home: Path, ahead: int, shown: str) -> None:
    from datetime import timedelta

    at = (datetime.now(timezone.utc) + timedelta(seconds=ahead)).strftime("%Y-%m-%dT%H:%M:%SZ")
    result = jobman(home, "schedule", "--image", "alpine", "--at", at)
    assert result.returncode == 0 and shown in result.stdout, result.stdout + result.stderr
