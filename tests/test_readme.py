"""The README's set-up stays true: its quick start runs, and CI runs its test command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent


def sh_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", README, flags=re.S)


def test_setup_is_two_commands_install_and_run_then_test() -> None:
    setup = README.split("## Set-up: two commands", 1)[1].split("###", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", setup, flags=re.S)
    assert len(blocks) == 2
    install, test = (b.strip() for b in blocks)
    assert "pip install -e '.[test]'" in install and "examples/quickstart.sh" in install
    ci = (ROOT / ".ci" / "run").read_text()
    assert test in ci, f"README test command {test!r} is not what .ci/run runs"


@pytest.mark.slow
def test_quickstart_script_runs_the_whole_life_of_a_job(tmp_path: Path) -> None:
    from moto_server import free_ports

    moto_port, api_port = free_ports(2)
    # Ports below the ephemeral range (the script's own pick may be taken by another worker's
    # outgoing connection before moto_server or the daemon binds it).
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", JOBMAN_HOME=str(tmp_path / "home"),
               MOTO_PORT=str(moto_port), API_PORT=str(api_port))
    for name in ("AWS_PROFILE", "JOBMAN_DB", "JOBMAN_STORE", "JOBMAN_API_TOKEN"):
        env.pop(name, None)
    result = subprocess.run(["bash", str(ROOT / "examples" / "quickstart.sh")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert re.search(r"^1$", out, flags=re.M), "schedule -q printed the id"
    assert re.search(r"instance-id\s+i-[0-9a-f]+", out), "the daemon launched an instance in moto"
    assert '"status":"finished"' in out, "the callback answered the finished job"
    assert re.search(r"job 1 scheduled -> launching", out)
    assert re.search(r"job 1 launching -> running", out)
    assert re.search(r"^\s*1\s+finished\s", out, flags=re.M), "jobman list shows it finished"


def test_readme_documents_every_command() -> None:
    for command in ("schedule", "list", "status", "callback", "cancel", "logs", "daemon", "store init"):
        assert f"### `jobman {command}`" in README
        assert any(f"jobman {command}" in block or (command == "store init" and "store init" in block)
                   for block in sh_blocks()), command
