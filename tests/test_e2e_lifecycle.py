"""The whole life of a job with nothing faked but AWS: issue 4's end-to-end proof.

Real processes: ``moto_server``, ``jobman daemon`` (listening on a real port on 127.0.0.1) and
``jobman schedule``/``status``. The daemon launches each job in moto; the test reads the instance's
user-data back from moto and runs that very script with bash, stub ``docker``/``dnf``/
``systemctl``/``shutdown`` on ``PATH`` and the real ``curl``, so the real callback reaches the real
listener. One container exits 0, the other 3; ``jobman status --wait`` answers 0 and 1.
"""

from __future__ import annotations

import base64
import json

import pytest
from moto_server import aws_env, ec2_client, free_port, moto_server, moto_server_process  # noqa: F401
from stubtools import StubTools
from test_e2e_daemon import daemons, jobman, poll  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


def test_user_data_from_moto_reports_finished_and_failed_to_the_real_daemon(moto_server, daemons, tmp_path):  # noqa: F811
    env = aws_env(moto_server, JOBMAN_HOME=str(tmp_path / "home"), JOBMAN_DB=str(tmp_path / "jobs.json"))
    port = free_port()
    daemon = daemons(env, "--listen", f"127.0.0.1:{port}", "--public-url", f"http://127.0.0.1:{port}")
    daemon.wait_for(lambda line: "ready" in line)

    scheduled = {}
    for image, code in (("alpine:3.20", 0), ("busybox:1.36", 3)):
        result = jobman(env, "schedule", "--image", image, "--at", "now", "-e", "GREETING=hello world", "-q")
        assert result.returncode == 0, result.stderr
        scheduled[int(result.stdout)] = code

    def status(job_id: int) -> dict:
        return json.loads(jobman(env, "status", str(job_id), "--json").stdout)

    assert poll(lambda: all(status(j)["instance-id"] for j in scheduled)), daemon.text()
    ec2 = ec2_client(moto_server)
    for job_id, code in scheduled.items():
        instance_id = status(job_id)["instance-id"]
        answer = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        script = base64.b64decode(answer["UserData"]["Value"]).decode()
        assert f"http://127.0.0.1:{port}/jobMan/v1.1/jobs/{job_id}/callback" in script

        tools = StubTools(tmp_path / f"instance-{job_id}", docker_exit=code)
        ran = tools.run_script(script)
        assert tools.powered_off, ran.stderr.decode(errors="replace")
        (container,) = tools.docker_runs()
        assert container.env["GREETING"] == b"hello world"

        waited = jobman(env, "status", str(job_id), "--wait", "--wait-timeout", "30s", "--json")
        job = json.loads(waited.stdout)
        if code == 0:
            assert (waited.returncode, job["status"], job["exit-code"]) == (0, "finished", 0)
        else:
            assert (waited.returncode, job["status"], job["exit-code"]) == (1, "failed", 3)
            assert job["reason-code"] == "exited"
            # the stub tools have no AWS CLI, so the script's own log lines could not be sent:
            # the reason says so, and the outcome is still the container's
            assert job["reason"] == "exit code 3: log incomplete (no aws CLI on the instance)"
    assert daemon.stop() == 0
    assert "-> finished" in daemon.text() and "-> failed" in daemon.text()
