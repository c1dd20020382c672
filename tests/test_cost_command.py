"""``jobman cost`` through the program (a subprocess, as an operator runs it) over a store of
1,000 ended jobs: the totals, the groups, ``--since`` and the JSON shape, each checked against a
computation made here independently (Decimal sums of the stored figures)."""

from __future__ import annotations

import dataclasses
import json
import random
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import pytest

from conftest import make_draft
from jobman_cli.model import JobStatus
from jobman_cli.stores.tinydb import TinyDBStore
from test_housekeeping_cli import jobman, one_line_error

NOW = datetime.now(timezone.utc)
TITLES = ("nightly", "report", "etl", "backup", "")
IMAGES = ("alpine:3.20", "python:3.12", "ghcr.io/acme/etl:7")
SCHEDULES = (None, 1, 2)


def fixture_jobs() -> list[dict]:
    """1,000 ended jobs (deterministic): 80 % priced, 10 % with an instance but no price (half
    pending, half unknown), 10 % never launched; ended over the last 60 days."""
    rng = random.Random(15)
    jobs = []
    for i in range(1000):
        kind = rng.random()
        jobs.append({
            "title": rng.choice(TITLES), "image": rng.choice(IMAGES), "schedule": rng.choice(SCHEDULES),
            "status": rng.choice((JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED)),
            "ended": NOW - timedelta(seconds=rng.randrange(60 * 86400)),
            "cost": round(rng.uniform(0, 7.5), 6) if kind < 0.8 else None,
            "basis": "on-demand ..." if kind < 0.8 else ("unknown: no price" if kind < 0.85 else None),
            "instance": f"i-{i:017x}" if kind < 0.9 else None,
        })
    return jobs


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, list[dict]]:
    home = tmp_path_factory.mktemp("cost") / "home"
    home.mkdir()
    jobs = fixture_jobs()
    with TinyDBStore(home / "jobs.json") as store:
        for spec in jobs:
            draft = make_draft(title=spec["title"], docker_image=spec["image"], status=spec["status"],
                               schedule_id=spec["schedule"], finished_at=spec["ended"], updated_at=spec["ended"],
                               created_at=spec["ended"] - timedelta(hours=1),
                               date_time=spec["ended"] - timedelta(hours=1),
                               instance_id=spec["instance"], cost=spec["cost"], cost_basis=spec["basis"])
            spec["id"] = store.add(draft)[0].id
    return home, jobs


def expected(jobs: list[dict], key=lambda spec: "all", since: datetime | None = None) -> dict:
    """Independently: Decimal sums of the figures as stored (their repr), counts, unpriced ids."""
    out: dict = defaultdict(lambda: {"jobs": 0, "priced": 0, "cost": Decimal(0), "unpriced": [], "not-launched": 0})
    for spec in jobs:
        if since is not None and spec["ended"] < since:
            continue
        group = out[key(spec)]
        group["jobs"] += 1
        if spec["cost"] is not None:
            group["priced"] += 1
            group["cost"] += Decimal(repr(spec["cost"]))
        elif spec["instance"]:
            group["unpriced"].append(spec["id"])
        else:
            group["not-launched"] += 1
    return dict(out)


def cents(value) -> str:
    return f"${Decimal(value).quantize(Decimal('0.01'), ROUND_HALF_EVEN):,}"


def check_group(got: dict, want: dict) -> None:
    assert (got["jobs"], got["priced"], got["not-launched"]) == (want["jobs"], want["priced"], want["not-launched"])
    assert got["cost"] == pytest.approx(float(want["cost"]), abs=1e-9)
    assert got["unpriced"] == {"count": len(want["unpriced"]), "ids": sorted(want["unpriced"])}


def test_the_total_of_1000_jobs(world):
    home, jobs = world
    result = jobman(home, "cost", "--json")
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    want = expected(jobs)["all"]
    assert want["jobs"] == 1000 and 700 < want["priced"] < 900 and want["unpriced"] and want["not-launched"]
    check_group(got, want)
    assert (got["since"], got["by"], got["groups"]) == (None, None, None)
    text = jobman(home, "cost").stdout
    assert text.startswith(f"Total {cents(want['cost'])} for {want['priced']} priced jobs of 1000 ended.\n")
    assert f"Without a price ({len(want['unpriced'])}: pending, or unknown" in text
    assert f"Never launched (nothing billed): {want['not-launched']}" in text


@pytest.mark.parametrize("by, key", [
    ("title", lambda s: s["title"] or "(untitled)"),
    ("image", lambda s: s["image"]),
    ("tag", lambda s: "one-off" if s["schedule"] is None else f"schedule {s['schedule']}"),
])
def test_groups(world, by, key):
    home, jobs = world
    got = json.loads(jobman(home, "cost", "--by", by, "--json").stdout)
    want = expected(jobs, key)
    assert got["by"] == by
    assert [g["key"] for g in got["groups"]] == sorted(want, key=lambda k: (-want[k]["cost"], k))
    for group in got["groups"]:
        check_group(group, want[group["key"]])
    assert sum(g["jobs"] for g in got["groups"]) == 1000
    table = jobman(home, "cost", "--by", by).stdout.splitlines()
    assert table[0].split() == [by.upper(), "JOBS", "PRICED", "COST"]
    first = got["groups"][0]
    assert table[1].split()[-3:] == [str(first["jobs"]), str(first["priced"]), cents(want[first["key"]]["cost"])]


def test_since_counts_only_jobs_that_ended_in_the_window(world):
    home, jobs = world
    got = json.loads(jobman(home, "cost", "--since", "30d", "--by", "tag", "--json").stdout)
    since = datetime.fromisoformat(got["since"].replace("Z", "+00:00"))
    assert NOW - timedelta(days=30) <= since <= datetime.now(timezone.utc) - timedelta(days=30)
    # the fixture's end times are spread over 60 days: roughly half are in; none within a second of the cut
    want = expected(jobs, since=since)["all"]
    assert 300 < want["jobs"] < 700
    check_group(got, want)
    in_window = expected(jobs, lambda s: "one-off" if s["schedule"] is None else f"schedule {s['schedule']}", since)
    for group in got["groups"]:
        check_group(group, in_window[group["key"]])


@pytest.mark.parametrize("args, words", [
    (("--since", "soon"), "--since"), (("--since", "0s"), "--since"), (("--by", "owner"), "--by"),
])
def test_bad_input_is_one_line_and_exit_2(world, args, words):
    home, _ = world
    assert words in one_line_error(jobman(home, "cost", *args), 2)


@pytest.fixture(scope="module")
def server(world):
    from jobman_cli.service import JobService
    from test_api import Api

    home, _ = world
    store = TinyDBStore(home / "jobs.json")
    api = Api(JobService(store), home / "jobs.json")
    yield api
    api.server.stop()
    store.close()


def test_with_server_the_daemon_answers_the_same_totals(world, server, tmp_path):
    from test_api import TOKEN

    home, jobs = world
    url = f"http://127.0.0.1:{server.server.port}"
    elsewhere = tmp_path / "elsewhere"  # no store here: everything comes from the server
    for args in ((), ("--by", "image"), ("--by", "tag", "--since", "30d")):
        remote = jobman(elsewhere, "--server", url, "cost", *args, "--json", JOBMAN_API_TOKEN=TOKEN)
        assert remote.returncode == 0, remote.stderr
        got = json.loads(remote.stdout)
        local = json.loads(jobman(home, "cost", *args, "--json").stdout)
        if "--since" in args:  # each computes its own cut, a moment apart: check the server's against its cut
            since = datetime.fromisoformat(got["since"].replace("Z", "+00:00"))
            check_group(got, expected(jobs, since=since)["all"])
            assert [g["key"] for g in got["groups"]] == [g["key"] for g in local["groups"]]
            continue
        assert got == local
    text = jobman(elsewhere, "--server", url, "cost", "--by", "title", JOBMAN_API_TOKEN=TOKEN).stdout
    assert text == jobman(home, "cost", "--by", "title").stdout


@pytest.mark.parametrize("query, status, words", [
    ("?by=owner", 400, "by: must be one of title, image, tag"), ("?since=soon", 400, "since"),
    ("?since=1d&since=2d", 400, "repeated"), ("?colour=red", 400, "unknown query parameter"),
])
def test_the_cost_route_refuses_bad_queries(server, query, status, words):
    code, _, answer = server.call("GET", "/cost" + query)
    assert code == status and words in answer["error"], answer


def test_the_cost_route_needs_the_token_and_get(server):
    assert server.call("GET", "/cost", token=None)[0] == 401
    assert server.call("GET", "/cost", token="nope")[0] == 401
    code, headers, _ = server.call("POST", "/cost", {})
    assert code == 405 and headers["allow"] == "GET"
    code, _, answer = server.call("GET", "/cost/?by=title")
    assert code == 200 and answer["by"] == "title" and answer["jobs"] == 1000


def test_an_empty_store(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    with TinyDBStore(home / "jobs.json"):
        pass
    result = jobman(home, "cost", "--by", "image")
    assert result.returncode == 0, result.stderr
    assert "Total $0.00 for 0 priced jobs of 0 ended." in result.stdout


def test_status_and_list_show_the_receipt(world):
    home, jobs = world
    priced = next(s for s in jobs if s["cost"] is not None)
    unknown = next(s for s in jobs if s["basis"] and s["basis"].startswith("unknown"))
    shown = json.loads(jobman(home, "status", str(priced["id"]), "--json").stdout)
    assert (shown["cost"], shown["cost-basis"]) == (priced["cost"], "on-demand ...")
    text = jobman(home, "status", str(unknown["id"])).stdout
    assert "\ncost           unknown: no price\n" in text
    listed = {j["id"]: j for j in json.loads(jobman(home, "list", "--json").stdout)}
    assert listed[priced["id"]]["cost"] == priced["cost"]


def test_a_job_whose_only_instance_was_interrupted_is_launched_not_free(tmp_path):
    """(review finding 2) Interrupted on spot, cancelled before its relaunch: no instance now, but
    one ran and was billed. Without a receipt it is listed without a price, never as not launched."""
    from jobman_cli.cost.totals import totals
    from jobman_cli.model import job_to_record

    t = NOW - timedelta(hours=6)
    job = make_draft(id=5, capacity="spot", date_time=t, created_at=t).claimed(t, "tok")
    job = job.launched("i-0first", t, {"instance-type": "m7i.large", "market": "spot"})
    job = job.reported("failed", None, t + timedelta(hours=5), "interrupted", "notice")
    job = job.cancelled(t + timedelta(hours=5, minutes=1))
    assert job.instance_id is None
    never = make_draft(id=6).cancelled(t)
    got = totals([job_to_record(job), job_to_record(never)]).to_json()
    assert (got["unpriced"], got["not-launched"]) == ({"count": 1, "ids": [5]}, 1)
    home = tmp_path / "home"
    home.mkdir()
    with TinyDBStore(home / "jobs.json") as store:
        stored, _ = store.add(dataclasses.replace(job, id=0))
    result = json.loads(jobman(home, "cost", "--json").stdout)
    assert (result["unpriced"], result["not-launched"]) == ({"count": 1, "ids": [stored.id]}, 0)


def test_the_server_option_names_cost_among_the_remote_verbs():
    """``jobman --help``: --server's help lists the verbs that work remotely; ``cost`` is one (through
    ``GET /cost``), and every verb it lists is a real command."""
    import re

    from jobman_cli.cli import cli

    server = next(p for p in cli.params if p.name == "server")
    listed = re.search(r"\(([a-z, ]+)\)", server.help or "").group(1).split(", ")
    assert "cost" in listed and "schedules" in listed, listed
    assert set(listed) <= set(cli.commands), set(listed) - set(cli.commands)
