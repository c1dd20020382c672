"""(F4) Idempotency keys ``schedule-<number>-...`` belong to the schedules materializer: each run of a
schedule is keyed ``schedule-<id>-<occurrence>``, which anyone can predict (the id and next-at are
public). A front end's key there would take the run's place, so ``jobman schedule`` refuses it with a
one-line usage error (exit 2) and the API with a 400, both naming the field; nothing is stored.
(In process, with the materializer: ``test_daemon_semantics``; over ``--server``: its e2e part.)
"""

from __future__ import annotations

import json

import pytest

from test_api import Api, api, service, store_path  # noqa: F401  (fixtures)
from test_housekeeping_cli import jobman, one_line_error

KEY = "schedule-10-2026-12-03T19:51:00Z"
REFUSAL = (f"{KEY!r} is reserved: keys that begin 'schedule-<number>-' name the runs of recurring schedules")


@pytest.mark.parametrize("extra", [(), ("--dry-run",)], ids=["store", "dry-run"])
def test_the_cli_refuses_a_reserved_key_with_a_usage_error(tmp_path, extra):
    home = tmp_path / "home"
    args = ("schedule", "--image", "alpine:3.20", "--at", "+1h", *extra)
    error = one_line_error(jobman(home, *args, "--idempotency-key", KEY), 2)
    assert error == f"Error: --idempotency-key: {REFUSAL}\n"
    assert json.loads(jobman(home, "list", "--json").stdout or "[]") == []  # nothing stored


def test_the_cli_accepts_keys_outside_the_namespace(tmp_path):
    home = tmp_path / "home"
    for key in ("schedule-nightly", "schedule-10", "nightly-schedule-10-x"):
        done = jobman(home, "schedule", "--image", "alpine:3.20", "--at", "+1h", "--idempotency-key", key, "-q")
        assert done.returncode == 0, done.stderr
    assert len(json.loads(jobman(home, "list", "--json").stdout)) == 3


def test_the_api_refuses_a_reserved_key_with_a_400(api: Api) -> None:  # noqa: F811
    body = {"title": "t", "date-time": "+1h", "docker-image": "alpine:3.20", "idempotency-key": KEY}
    status, _, answer = api.call("POST", "/jobs/schedule", body)
    assert (status, answer) == (400, {"error": f"idempotency-key: {REFUSAL}"})
    assert api.call("GET", "/jobs")[2] == {"jobs": []}
    ok = api.schedule(**{"idempotency-key": "schedule-nightly"})  # outside the namespace: 201
    again = api.call("POST", "/jobs/schedule", {"title": "nightly", "date-time": "+10m",
                                                "docker-image": "alpine:3.20", "env-variables": {},
                                                "idempotency-key": "schedule-nightly"})
    assert (again[0], again[2]["id"]) == (200, ok["id"])  # the key works as a key
