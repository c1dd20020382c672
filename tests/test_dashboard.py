"""The dashboard's HTTP side (DESIGN.md section 15), in-process over real sockets: which URLs it
answers, that no answer without the API token holds job data, the security headers on every
answer, and that the API's own auth and 404s are unchanged. The browser side is
tests/test_dashboard_browser.py."""

from __future__ import annotations

import http.client
from pathlib import Path
from typing import Iterator

import pytest

from jobman_cli.api import ApiServer
from jobman_cli.dashboard import CSP, STATIC_FILES
from jobman_cli.service import JobService, ScheduleRequest
from jobman_cli.stores import open_store

TOKEN = "dashboard-test-token-0123456789"
SECRET_TITLE = "quarterly-payroll-title"
SECRET_IMAGE = "registry.example/payroll-image:7"
SECRET_ENV = ("PAYROLL_ENV_NAME", "payroll-env-value")
PAGES = ["/", "/index.html", "/jobs/1", "/jobs/1/", *(f"/static/{name}" for name in STATIC_FILES)]


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[ApiServer]:
    store = open_store(tmp_path / "jobs.json")
    service = JobService(store)
    service.schedule(ScheduleRequest(image=SECRET_IMAGE, when="+1h", title=SECRET_TITLE,
                                     env={SECRET_ENV[0]: SECRET_ENV[1]}))
    log: list[str] = []
    api = ApiServer(service, api_token=TOKEN, log=log.append).start()
    yield api
    api.stop()
    store.close()
    assert log == []  # no 5xx


def fetch(server: ApiServer, method: str, path: str, headers: dict[str, str] | None = None,
          body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()


@pytest.mark.parametrize("path", PAGES)
def test_every_page_answers_without_credentials_with_no_job_data_and_the_security_headers(server, path):
    status, headers, body = fetch(server, "GET", path)
    assert status == 200
    assert headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP and "frame-ancestors 'none'" in CSP and "base-uri 'none'" in CSP
    assert "'unsafe-inline'" not in CSP and "'unsafe-eval'" not in CSP
    assert headers["x-content-type-options"] == "nosniff"
    assert int(headers["content-length"]) == len(body)
    expected = {"html": "text/html", "css": "text/css", "js": "text/javascript"}[
        "html" if not path.startswith("/static/") else path.rsplit(".", 1)[1]]
    assert headers["content-type"].startswith(expected)
    for secret in (SECRET_TITLE, SECRET_IMAGE, *SECRET_ENV):
        assert secret.encode() not in body


def test_without_javascript_each_page_offers_the_cookie_login_form(server):
    """The choice (README): with JavaScript the token lives in session storage; without it the
    <noscript> part holds a second form that POSTs the token to /login (never a GET: the token must
    not land in a URL) and names the CLI commands. The scripted form stays hidden until the script
    shows it."""
    for path in ("/", "/jobs/1"):
        _, _, body = fetch(server, "GET", path)
        text = body.decode()
        notice = text[text.index("<noscript>"):text.index("</noscript>")]
        assert "Without JavaScript" in notice and "jobman list" in notice and "jobman logs ID" in notice
        nojs_form = notice[notice.index("<form"):].split(">", 1)[0]
        assert 'method="post"' in nojs_form and 'action="/login"' in nojs_form
        assert 'name="token" type="password"' in notice
        form = text[text.index('<form id="login"'):]
        assert form.split(">", 1)[0].endswith("hidden") and 'method="post"' in form.split(">", 1)[0]


def test_pages_have_no_inline_script_or_handler(server):
    for path in ("/", "/jobs/1"):
        _, _, body = fetch(server, "GET", path)
        text = body.decode()
        assert text.count("<script") == text.count('<script src="/static/')
        assert "onclick" not in text and "onload" not in text and "javascript:" not in text


@pytest.mark.parametrize("path", ["/nope", "/static/", "/static/../api.py", "/static/index.html.bak",
                                  "/static/%2e%2e/api.py", "/jobs/0", "/jobs/abc", "/jobs/1/status", "/favicon.ico",
                                  "/jobMan/v1.1x", "*"])
def test_other_paths_stay_the_apis_401_without_the_token_then_404(server, path):
    status, headers, body = fetch(server, "GET", path)
    assert status == 401 and SECRET_TITLE.encode() not in body
    status, headers, body = fetch(server, "GET", path, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 404 and SECRET_TITLE.encode() not in body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_the_dashboard_changes_nothing_other_methods_are_405(server, method):
    status, headers, _ = fetch(server, method, "/", {"Content-Type": "application/json"}, b"{}")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    assert headers["content-security-policy"] == CSP


def test_head_gives_the_headers_only(server):
    status, headers, body = fetch(server, "HEAD", "/")
    assert status == 200 and body == b"" and headers["content-security-policy"] == CSP


def test_the_api_still_needs_the_token_and_answers_json_with_it(server):
    for path in ("/jobMan/v1.1/jobs", "/jobMan/v1.1/jobs/1/status", "/jobMan/v1.1", "/jobMan/v1.1/nope"):
        status, headers, body = fetch(server, "GET", path)
        assert status == 401 and SECRET_TITLE.encode() not in body, path
    status, headers, body = fetch(server, "GET", "/jobMan/v1.1/jobs", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and SECRET_TITLE.encode() in body
    assert headers["content-type"] == "application/json"
    assert "content-security-policy" not in headers  # the API's answers are data, not pages


def test_the_static_files_are_package_data():
    """pyproject's package-data globs ship every file the dashboard serves."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "jobman_cli.dashboard"]
    static = root / "jobman_cli" / "dashboard" / "static"
    shipped = {p.name for g in globs for p in static.glob(g.removeprefix("static/"))}
    assert shipped == {p.name for p in static.iterdir()} >= {"index.html", "job.html", *STATIC_FILES}
