"""High availability for callbacks (DESIGN.md sections 5 and 7; issue 9 item 5).

Two real ``jobman daemon`` processes share one DynamoDB table (a real ``moto_server``), behind one
address: a tiny TCP load balancer on 127.0.0.1 that forwards each connection to the first backend
that accepts it. Both daemons give the balancer's address as ``--public-url``, so every instance
calls back to it, whichever daemon launched it. Callback tokens are per attempt and stored only as
SHA-256 hashes in the job, so any daemon on the table can check any job's callback.

The daemon that launched the job (``claimed-by``) is SIGKILLed for good. The instance is then
simulated for real: its user-data, read back from moto (``DescribeInstanceAttribute``), runs under
bash with stub docker/dnf/systemctl/shutdown and the real ``curl``; its ``running`` and
``finished`` callbacks go to the balancer, which now reaches the surviving daemon. The job ends
``finished`` (exit code 0), the survivor's reconciler — which ran several times meanwhile — never
failed it as vanished, and the survivor's reaper ends the instance afterwards.
"""

from __future__ import annotations

import base64
import re
import signal
import socket
import threading
import time

import pytest
from moto_server import ec2_client, free_ports, moto_server, moto_server_process  # noqa: F401  (fixtures)
from stubtools import StubTools
from test_dynamodb_race import daemon_id, dynamodb_server, dynamodb_server_process, env, store  # noqa: F401
from test_e2e_daemon import DaemonProcess, poll

from jobman_cli.daemon import CLAIMED_BY
from jobman_cli.model import JobStatus
from jobman_cli.service import JobService, ScheduleRequest

pytestmark = pytest.mark.slow


class Balancer:
    """A TCP forwarder on 127.0.0.1: each connection goes to the first backend (host, port) in
    ``backends`` that accepts one; bytes are copied both ways until either side closes."""

    def __init__(self) -> None:
        self.backends: list[tuple[str, int]] = []
        self.routed: list[tuple[str, int]] = []
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        for backend in list(self.backends):
            try:
                upstream = socket.create_connection(backend, timeout=2)
            except OSError:
                continue  # down: the next one
            upstream.settimeout(None)
            self.routed.append(backend)
            threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
            _pipe(client, upstream)
            return
        client.close()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock, how in ((sink, socket.SHUT_WR), (source, socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass


def test_the_launching_daemon_dies_for_good_and_the_callback_lands_on_the_other(
        store, env, moto_server, tmp_path):  # noqa: F811
    balancer = Balancer()
    public = f"http://127.0.0.1:{balancer.port}"
    ports = free_ports(2)
    env = {**env, "JOBMAN_RECONCILE_INTERVAL": "1"}
    started = [DaemonProcess(env, "--listen", f"127.0.0.1:{port}", "--public-url", public) for port in ports]
    try:
        for daemon in started:
            daemon.wait_for(lambda line: " ready;" in line, timeout=60)
        by_id = {daemon_id(d): (d, port) for d, port in zip(started, ports)}
        job, _ = JobService(store).schedule(ScheduleRequest(image="alpine:3.20", when="now"))
        assert poll(lambda: store.get(job.id).status is JobStatus.RUNNING, timeout=60)
        launched = store.get(job.id)
        launcher, launcher_port = by_id[launched.extra[CLAIMED_BY]]
        (survivor, survivor_port), = [v for k, v in by_id.items() if k != launched.extra[CLAIMED_BY]]
        balancer.backends = [("127.0.0.1", launcher_port), ("127.0.0.1", survivor_port)]
        # The store is written before the line is logged: wait for the line, do not race it.
        launcher.wait_for(lambda line: f"job {job.id} launching -> running (instance {launched.instance_id}"
                          in line, timeout=10)

        launcher.proc.send_signal(signal.SIGKILL)
        assert launcher.stop() == -signal.SIGKILL
        time.sleep(3.0)  # the survivor reconciles every second meanwhile: the instance is alive
        assert store.get(job.id).status is JobStatus.RUNNING

        answer = ec2_client(moto_server).describe_instance_attribute(InstanceId=launched.instance_id,
                                                                      Attribute="userData")
        script = base64.b64decode(answer["UserData"]["Value"]).decode()
        assert f"{public}/jobMan/v1.1/jobs/{job.id}/callback" in script
        tools = StubTools(tmp_path / "instance", docker_exit=0)
        ran = tools.run_script(script)
        assert tools.powered_off, ran.stderr.decode(errors="replace")
        assert balancer.routed and set(balancer.routed) == {("127.0.0.1", survivor_port)}

        final = store.get(job.id)
        assert (final.status, final.exit_code) == (JobStatus.FINISHED, 0), final
        survivor.wait_for(lambda line: f"job {job.id} -> finished (reported, exit code 0)" in line)
        # The survivor's reaper ends the finished job's instance; it never called the job vanished.
        survivor.wait_for(lambda line: f"instance {launched.instance_id} terminated by the reaper" in line,
                          timeout=30)
        assert "vanished" not in survivor.text()
        assert not re.search(rf"job {job.id} \w+ -> failed", survivor.text())
        assert store.get(job.id).status is JobStatus.FINISHED
        assert survivor.stop() == 0
    finally:
        balancer.close()
        for daemon in started:
            if daemon.proc.poll() is None:
                daemon.proc.kill()
                daemon.proc.wait(timeout=10)
