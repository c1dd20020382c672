"""The dashboard without JavaScript (README "Dashboard"), in-process over real sockets: the cookie
login (``POST /login`` -> 303 + an HttpOnly SameSite=Strict cookie that is not the token), what the
cookie opens (the server-rendered pages, never the JSON API), what it does not (forged, expired,
another token's, after logout), escaping of job data, paging and filters, and the log tail (read as
the API's logs route reads it, from moto's CloudWatch Logs, or one line saying why not). The real
browser with JavaScript disabled is tests/test_dashboard_nojs_browser.py."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import re
import ssl
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator
from urllib.parse import urlencode

import pytest

from jobman_cli.api import ApiServer
from jobman_cli.dashboard import CSP, session
from jobman_cli.service import JobService, ScheduleRequest
from jobman_cli.stores import open_store

TOKEN = "plain-dashboard-token-0123456789abcdef"
SECRET_TITLE = "quarterly-payroll-title"
SECRET_IMAGE = "registry.example/payroll-image:7"
XSS_TITLE = '<script>window.__x=1</script><img src=x onerror="alert(1)">'
XSS_ENV = ("XSS_ENV", '"><img src=x onerror=alert(2)>')
FAIL_REASON = "disk full <b>on /data</b> & more"
BULK = 120  #: jobs titled bulk-N, for paging (50 a page)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture()
def world(tmp_path: Path, isolated_aws) -> Iterator[tuple[ApiServer, JobService]]:
    """A listener whose store holds a secret job, an XSS job, a failed job and BULK more; no AWS
    credentials (isolated_aws), so a log read fails with a one-line reason."""
    store = open_store(tmp_path / "jobs.json")
    service = JobService(store)
    service.schedule(ScheduleRequest(image=SECRET_IMAGE, when="+1h", title=SECRET_TITLE))  # id 1
    service.schedule(ScheduleRequest(image="alpine:3.20", when="+1h", title=XSS_TITLE,
                                     env={XSS_ENV[0]: XSS_ENV[1]}))  # id 2
    failed, _ = service.schedule(ScheduleRequest(image="alpine:3.20", when="+1s", title="nightly-report"))  # id 3
    now = datetime.now(timezone.utc)
    store.update(failed.id, lambda j: j.claimed(now, "launch"))
    store.update(failed.id, lambda j: j.launched("i-0123456789abcdef0", now))
    service.report(failed.id, "failed", 3, None, FAIL_REASON)
    for n in range(BULK):
        service.schedule(ScheduleRequest(image="alpine:3.20", when="+2h", title=f"bulk-{n}"))  # ids 4..
    log: list[str] = []
    api = ApiServer(service, api_token=TOKEN, log=log.append).start()
    yield api, service
    api.stop()
    store.close()
    assert log == []  # no 5xx


def fetch(port: int, method: str, path: str, headers: dict[str, str] | None = None,
          body: bytes | None = None, tls: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
    if tls is None:
        conn: http.client.HTTPConnection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=tls)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()


def login(port: int, token: str = TOKEN, **kw) -> tuple[int, dict[str, str], bytes]:
    return fetch(port, "POST", "/login", FORM, urlencode({"token": token}).encode(), **kw)


def cookie_of(headers: dict[str, str]) -> str:
    return re.fullmatch(r"jobman_dash=([^;]*);.*", headers["set-cookie"]).group(1)  # type: ignore[union-attr]


def signed(expiry: int, token: str = TOKEN) -> str:
    """A cookie made by the documented recipe, independently of the module under test."""
    mac = hmac.new(token.encode(), f"jobman-dashboard-v1|{expiry}".encode(), hashlib.sha256).hexdigest()
    return f"{expiry}.{mac}"


def page(port: int, path: str, cookie: str) -> tuple[int, dict[str, str], str]:
    status, headers, body = fetch(port, "GET", path, {"Cookie": f"jobman_dash={cookie}"})
    return status, headers, body.decode()


# --------------------------------------------------------------------------- login
def test_login_with_the_token_answers_303_with_a_strict_httponly_cookie_that_is_not_the_token(world):
    api, _ = world
    status, headers, _ = login(api.port)
    assert status == 303 and headers["location"] == "/"
    flags = [part.strip() for part in headers["set-cookie"].split(";")]
    assert flags[1:] == ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"]  # no Secure without TLS
    value = cookie_of(headers)
    assert TOKEN not in value and value != TOKEN
    expiry = int(value.split(".")[0])
    assert abs(expiry - (time.time() + 43200)) < 600
    assert value == signed(expiry)  # exactly the documented HMAC, so nothing else can be in it
    assert headers["content-security-policy"] == CSP


@pytest.mark.parametrize("token", ["", "wrong", TOKEN[:-1], TOKEN + "x", TOKEN.upper()])
def test_a_wrong_token_gets_403_the_form_again_and_no_cookie(world, token):
    api, _ = world
    status, headers, body = login(api.port, token)
    assert status == 403 and "set-cookie" not in headers
    text = body.decode()
    assert "The token was refused" in text and 'action="/login"' in text
    assert SECRET_TITLE not in text and "<script" not in text


@pytest.mark.parametrize("headers,body,expected", [
    (FORM, b"", 400), (FORM, b"token=a&token=b", 400), (FORM, b"tok=x", 400), (FORM, b"token=%ff", 400),
    (FORM, b"token=" + TOKEN.encode() + b"&next=/evil", 400), (FORM, b"=&&", 400),
    ({"Content-Type": "application/json"}, b'{"token": "' + TOKEN.encode() + b'"}', 415),
    ({"Content-Type": "text/plain"}, b"token=" + TOKEN.encode(), 415),
    ({}, b"token=" + TOKEN.encode(), 415),
])
def test_a_malformed_login_is_a_one_line_4xx_never_a_cookie(world, headers, body, expected):
    api, _ = world
    status, answer_headers, answer = fetch(api.port, "POST", "/login", headers, body)
    assert status == expected and "set-cookie" not in answer_headers
    assert answer.startswith(b'{"error":') and b"\n" not in answer.strip()


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_login_and_logout_only_answer_post(world, method):
    api, _ = world
    for path in ("/login", "/logout"):
        status, headers, _ = fetch(api.port, method, path)
        assert status == 405 and headers["allow"] == "POST"


def test_the_json_api_refuses_the_cookie(world):
    """The cookie is for the pages only: the API still wants the Bearer token (so no CSRF on it)."""
    api, _ = world
    cookie = cookie_of(login(api.port)[1])
    for method, path in (("GET", "/jobMan/v1.1/jobs"), ("GET", "/jobMan/v1.1/jobs/1/status"),
                         ("POST", "/jobMan/v1.1/jobs/1/cancel"), ("GET", "/jobMan/v1.1/jobs/3/logs")):
        status, _, body = fetch(api.port, method, path, {"Cookie": f"jobman_dash={cookie}"})
        assert status == 401 and SECRET_TITLE.encode() not in body, path
    assert page(api.port, "/", cookie)[0] == 200  # while it does open the page


def test_logout_clears_the_cookie(world):
    api, _ = world
    cookie = cookie_of(login(api.port)[1])
    status, headers, _ = fetch(api.port, "POST", "/logout", {"Cookie": f"jobman_dash={cookie}"})
    assert status == 303 and headers["location"] == "/"
    assert headers["set-cookie"].startswith("jobman_dash=;") and "Max-Age=0" in headers["set-cookie"]
    assert "HttpOnly" in headers["set-cookie"]


def test_a_logout_body_is_read_not_taken_for_the_next_request(world):
    """A browser's logout form may send a body; on a kept-alive connection its bytes must not be
    parsed as the next request."""
    api, _ = world
    smuggled = b"GET /jobMan/v1.1/jobs HTTP/1.1\r\nHost: x\r\n\r\n"
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=30)
    try:
        conn.request("POST", "/logout", body=smuggled, headers=FORM)
        first = conn.getresponse()
        first.read()
        assert first.status == 303
        conn.request("GET", "/static/common.js")
        second = conn.getresponse()
        assert second.status == 200 and second.read().startswith(b"/*")
    finally:
        conn.close()


# --------------------------------------------------------------------------- no cookie, no data
def bad_cookies() -> list[str]:
    now = int(time.time())
    good = signed(now + 3600)
    return ["", "x", TOKEN, good[:-1] + ("0" if good[-1] != "0" else "1"),  # forged MAC
            signed(now - 1), signed(now - 86400),  # expired
            signed(now + 3600, "another-daemons-token"),  # another token's
            signed(now + 10 * 86400),  # claims more life than a login gives
            good.upper(), f"{now + 3600}.{'0' * 64}", good + "0"]


NEW_URLS = ["/", "/?page=2", "/?status=failed", f"/?title={SECRET_TITLE}", "/jobs/1", "/jobs/3", "/jobs/2/"]


#: Stable test ids (the cookies hold the time: ids made from them differ between pytest-xdist workers).
BAD_COOKIE_IDS = ["empty", "junk", "raw-token", "forged-mac", "expired-1s", "expired-1d", "another-token",
                  "too-long-a-life", "upper-case", "zero-mac", "one-char-more"]


@pytest.mark.parametrize("cookie", bad_cookies(), ids=BAD_COOKIE_IDS)
def test_without_a_valid_cookie_no_answer_holds_job_data(world, cookie):
    api, _ = world
    for path in NEW_URLS:
        status, headers, text = page(api.port, path, cookie)
        assert status == 200, path  # the fixed page (login form), nothing rendered
        for secret in (SECRET_TITLE, SECRET_IMAGE, "nightly-report", FAIL_REASON, "bulk-1", "i-0123456789abcdef0"):
            assert secret not in text, (path, cookie)
        assert 'id="plain-login"' in text
        assert "Max-Age=0" in headers["set-cookie"]  # the stale cookie is dropped
    for method, path in (("POST", "/logout"), ("GET", "/login"), ("GET", "/static/common.js")):
        _, _, body = fetch(api.port, method, path, {"Cookie": f"jobman_dash={cookie}"})
        assert SECRET_TITLE.encode() not in body


def test_without_any_cookie_the_new_urls_hold_no_job_data(world):
    api, _ = world
    for path in NEW_URLS:
        status, headers, body = fetch(api.port, "GET", path)
        assert status == 200 and SECRET_TITLE.encode() not in body and b"bulk-1" not in body
        assert "set-cookie" not in headers


def test_session_refuses_after_expiry_and_accepts_until_then():
    value = session.issue(TOKEN, now=1_000_000)
    assert session.valid(value, TOKEN, now=1_000_000)
    assert session.valid(value, TOKEN, now=1_000_000 + session.MAX_AGE - 1)
    assert not session.valid(value, TOKEN, now=1_000_000 + session.MAX_AGE)
    assert not session.valid(value, "other", now=1_000_000)


# --------------------------------------------------------------------------- the pages
def test_the_list_shows_jobs_newest_first_escaped_and_script_free(world):
    api, _ = world
    cookie = cookie_of(login(api.port)[1])
    status, headers, text = page(api.port, "/", cookie)
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert headers["content-security-policy"] == CSP and headers["vary"] == "Cookie"
    assert "<script" not in text.replace("&lt;script", "")  # no script tag at all, only the escaped title
    ids = [int(i) for i in re.findall(r'<tr data-job-id="(\d+)"', text)]
    assert ids == list(range(BULK + 3, BULK + 3 - 50, -1))  # newest first, one page of 50
    assert f"{BULK + 3} of {BULK + 3} job(s)" in text and "page 1 of 3" in text


def test_job_data_is_escaped_in_every_server_rendered_page(world):
    api, _ = world
    cookie = cookie_of(login(api.port)[1])
    _, _, listing = page(api.port, "/?page=3", cookie)
    _, _, job = page(api.port, "/jobs/2", cookie)
    for text in (listing, job):
        assert XSS_TITLE not in text and "<img" not in text and "<script" not in text
        assert "&lt;script&gt;window.__x=1&lt;/script&gt;&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in text
    assert "XSS_ENV=&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in job
    _, _, failed = page(api.port, "/jobs/3", cookie)
    assert "disk full &lt;b&gt;on /data&lt;/b&gt; &amp; more" in failed and "<b>" not in failed


def test_paging_and_filters(world):
    api, _ = world
    cookie = cookie_of(login(api.port)[1])
    rows = lambda text: [int(i) for i in re.findall(r'<tr data-job-id="(\d+)"', text)]  # noqa: E731
    _, _, second = page(api.port, "/?page=2", cookie)
    assert rows(second) == list(range(BULK + 3 - 50, BULK + 3 - 100, -1)) and "page 2 of 3" in second
    _, _, last = page(api.port, "/?page=99", cookie)  # past the end: the last page
    assert rows(last) == list(range(BULK + 3 - 100, 0, -1)) and 'id="next"' not in last
    _, _, failed = page(api.port, "/?status=failed", cookie)
    assert rows(failed) == [3] and "<option selected>failed</option>" in failed
    _, _, titled = page(api.port, "/?title=BULK-11", cookie)  # any case, substring
    assert rows(titled) == [4 + 110 + n for n in range(9, -1, -1)] + [4 + 11]
    assert 'value="BULK-11"' in titled
    _, _, both = page(api.port, "/?status=scheduled&title=payroll&page=1", cookie)
    assert rows(both) == [1]
    _, _, nothing = page(api.port, "/?status=cancelled", cookie)
    assert rows(nothing) == [] and "page 1 of 1" in nothing
    next_page = re.search(r'<a id="next" href="([^"]+)"', page(api.port, "/?title=bulk", cookie)[2])
    link = next_page.group(1)  # type: ignore[union-attr]
    assert link == "/?title=bulk&amp;page=2"  # filters kept, & escaped in the attribute


@pytest.mark.parametrize("query", ["page=0", "page=x", "page=1&page=2", "status=exploded", "limit=5", "page=%ff",
                                   "a&&b"])
def test_a_bad_list_query_is_a_one_line_400(world, query):
    api, _ = world
    cookie = cookie_of(login(api.port)[1])
    status, headers, text = page(api.port, "/?" + query, cookie)
    assert status == 400 and text.startswith('{"error":') and headers["content-security-policy"] == CSP


def test_a_job_page_shows_timeline_reason_instance_attempts_and_the_log_error_as_text(world):
    api, _ = world
    cookie = cookie_of(login(api.port)[1])
    _, _, text = page(api.port, "/jobs/3", cookie)
    for step in ("scheduled", "due", "claimed", "instance launched", "running", "failed"):
        assert f'<span class="step">{step}</span>' in text
    assert re.search(r'<span class="gap">\+[0-9.]+ (s|min [0-9]+ s) after instance launched</span>', text)
    assert '<dd class="detail-reason-code">exited</dd>' in text
    assert '<dd class="detail-instance">i-0123456789abcdef0</dd>' in text
    assert '<dd class="detail-attempts">1</dd>' in text and '<dd class="detail-cost">-</dd>' in text
    assert '<dd class="detail-exit-code">3</dd>' in text
    state = re.search(r'<span id="log-state" class="count">([^<]*)</span>', text).group(1)  # type: ignore[union-attr]
    assert state.startswith("(") and "\n" not in state and len(state) < 400  # no AWS here: one line why
    assert page(api.port, "/jobs/1", cookie)[2].count('id="log-state"') == 1  # not launched: a line too
    assert page(api.port, "/jobs/999", cookie)[0] == 404
    assert page(api.port, "/jobs/1?x=1", cookie)[0] == 400


def test_the_log_tail_is_read_as_the_api_reads_it(world, isolated_aws):
    """Under moto's CloudWatch Logs the job page shows the attempt's lines, escaped."""
    import boto3
    from moto import mock_aws

    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        isolated_aws.setenv(name, value)
    api, _ = world
    with mock_aws():
        logs = boto3.client("logs")
        logs.create_log_group(logGroupName="jobman")
        logs.create_log_stream(logGroupName="jobman", logStreamName="jobs/3/attempt-1")
        base = int(time.time() * 1000)
        logs.put_log_events(logGroupName="jobman", logStreamName="jobs/3/attempt-1", logEvents=[
            {"timestamp": base + i, "message": m} for i, m in enumerate(["first line", "<i>second</i> line"])])
        cookie = cookie_of(login(api.port)[1])
        _, _, text = page(api.port, "/jobs/3", cookie)
    assert '<pre id="log" class="log">first line\n&lt;i&gt;second&lt;/i&gt; line</pre>' in text
    assert "(2 line(s))" in text


def test_under_tls_the_cookie_is_secure(tmp_path):
    if not shutil_which("openssl"):
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    store = open_store(tmp_path / "jobs.json")
    api = ApiServer(JobService(store), api_token=TOKEN, tls_cert=str(cert), tls_key=str(key)).start()
    try:
        tls = ssl.create_default_context(cafile=str(cert))
        tls.check_hostname = False
        status, headers, _ = login(api.port, tls=tls)
        assert status == 303 and headers["set-cookie"].endswith("; Secure")
        status, headers, _ = fetch(api.port, "POST", "/logout", tls=tls)
        assert headers["set-cookie"].endswith("; Secure")
    finally:
        api.stop()
        store.close()


def shutil_which(name: str) -> str | None:
    import shutil

    return shutil.which(name)
