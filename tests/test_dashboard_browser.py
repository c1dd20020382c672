"""The dashboard in a real headless Chromium against a real ``jobman daemon`` on ``moto_server``.

What a person sees: log in, a job scheduled from the CLI appears without a reload, its page shows
the timeline and the log tail (lines put into moto's CloudWatch Logs) and, after a real failed
callback, the reason. Without the token no answer holds job data; an XSS attempt through the title
and an env value shows as text and runs nothing. Screenshots of each page go to the test's tmp dir
(and to docs/ with ``JOBMAN_DASHBOARD_DOCS=1``). Waits poll the DOM with generous limits.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from dashboard_browser import log_in, require_browser, start_browser
from moto_server import aws_env, ec2_client, moto_server, moto_server_process  # noqa: F401  (fixtures)
from test_e2e_daemon import DaemonProcess, jobman, poll

from jobman_cli.dashboard import CSP, STATIC_FILES

pytestmark = pytest.mark.slow

WAIT = 60.0
DOCS = Path(__file__).resolve().parents[1] / "docs"
DOC_SHOTS = ("dashboard-list", "dashboard-job")  # the two the README shows
XSS = '<script>window.__x=1</script><img src=x onerror="window.__x=1">'


class Dashboard:
    """A running daemon, its URL and API token, and the environment the CLI needs to reach it."""

    def __init__(self, env: dict[str, str], daemon: DaemonProcess) -> None:
        self.env = env
        self.daemon = daemon
        daemon.wait_for(lambda line: " ready;" in line, timeout=WAIT)
        text = daemon.text()
        scheme, port = re.search(r"listening on (https?)://127\.0\.0\.1:(\d+)", text).groups()  # type: ignore[union-attr]
        self.port = int(port)
        token_file = re.search(r"API token file (\S+)", text).group(1)  # type: ignore[union-attr]
        self.token = Path(token_file).read_text().strip()
        self.url = f"{scheme}://127.0.0.1:{self.port}"

    def schedule(self, *args: str) -> int:
        result = jobman(self.env, "schedule", "--image", "alpine:3.20", *args, "-q")
        assert result.returncode == 0, result.stderr
        return int(result.stdout)

    def status(self, job_id: int) -> dict[str, Any]:
        return json.loads(jobman(self.env, "status", str(job_id), "--json").stdout)

    def raw(self, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def fail(self, moto_url: str, job_id: int, reason: str) -> None:
        """The instance's own callback: its token from the user-data moto keeps, a real PUT."""
        instance = self.status(job_id)["instance-id"]
        answer = ec2_client(moto_url).describe_instance_attribute(InstanceId=instance, Attribute="userData")
        script = base64.b64decode(answer["UserData"]["Value"]).decode()
        token = re.search(r"^callback_token=(\S+)$", script, re.M).group(1)  # type: ignore[union-attr]
        body = json.dumps({"status": "failed", "exit-code": 3, "reason": reason}).encode()
        status, _, data = self.raw("PUT", f"/jobMan/v1.1/jobs/{job_id}/callback", body,
                                   {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        assert status == 200, data


def signed_cookie(token: str, expiry: int) -> str:
    """A dashboard cookie by the documented recipe (README): expiry.hex(HMAC-SHA256(token, ...))."""
    mac = hmac.new(token.encode(), f"jobman-dashboard-v1|{expiry}".encode(), hashlib.sha256).hexdigest()
    return f"{expiry}.{mac}"


def put_log_lines(moto_url: str, job_id: int, lines: list[str]) -> None:
    import boto3

    logs = boto3.client("logs", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")
    stream = f"jobs/{job_id}/attempt-1"
    for create, kwargs in ((logs.create_log_group, {}), (logs.create_log_stream, {"logStreamName": stream})):
        try:
            create(logGroupName="jobman", **kwargs)
        except logs.exceptions.ResourceAlreadyExistsException:
            pass
    base = int(time.time() * 1000)
    logs.put_log_events(logGroupName="jobman", logStreamName=stream,
                        logEvents=[{"timestamp": base + i, "message": line} for i, line in enumerate(lines)])


@pytest.fixture
def dashboard(moto_server, tmp_path) -> Iterator[Dashboard]:  # noqa: F811
    require_browser()
    env = aws_env(moto_server, JOBMAN_HOME=str(tmp_path / "home"), JOBMAN_DB=str(tmp_path / "jobs.json"))
    daemon = DaemonProcess(env)
    try:
        yield Dashboard(env, daemon)
    finally:
        if daemon.proc.poll() is None:
            daemon.stop()


@pytest.fixture
def browser(tmp_path) -> Iterator[Any]:
    require_browser()
    driver = start_browser(tmp_path / "browser-home")
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, condition: Any, what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(condition, message=f"waiting for {what}")


def text_of(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, css))


def screenshot(driver: Any, tmp_path: Path, name: str) -> Path:
    """The whole page, beyond the window's height (Chromium's DevTools capture)."""
    size = driver.execute_script("return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": int(size[0]), "height": min(int(size[1]), 4000), "scale": 1}})
    data = base64.b64decode(shot["data"])
    assert data.startswith(b"\x89PNG") and len(data) > 1000
    path = tmp_path / f"{name}.png"
    path.write_bytes(data)
    if os.environ.get("JOBMAN_DASHBOARD_DOCS") == "1" and name in DOC_SHOTS:
        DOCS.mkdir(exist_ok=True)
        (DOCS / f"{name}.png").write_bytes(data)
    return path


def test_log_in_watch_a_job_appear_open_it_see_timeline_log_and_failure(  # noqa: F811
        dashboard, browser, moto_server, tmp_path):
    from selenium.webdriver.common.by import By

    for title, when in (("warm-up backup", "now"), ("hourly report", "+1h")):
        dashboard.schedule("--title", title, "--at", when)
    log_in(browser, dashboard.url, dashboard.token)
    assert browser.execute_script("return sessionStorage.length") == 1
    assert dashboard.token not in browser.current_url
    wait(browser, lambda d: "hourly report" in text_of(d, "#rows"), "the jobs scheduled before the login")
    loaded_at = browser.execute_script("return performance.timeOrigin")

    job_id = dashboard.schedule("--title", "nightly export", "--at", "now", "-e", "TARGET=s3://bucket/x")
    row = f'#rows tr[data-job-id="{job_id}"]'
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, row), "the new job's row without a reload")
    assert browser.execute_script("return performance.timeOrigin") == loaded_at  # the same page, not reloaded
    assert poll(lambda: dashboard.status(job_id)["status"] == "running", timeout=WAIT), dashboard.daemon.text()
    wait(browser, lambda d: "running" in text_of(d, row), "the row's live state")
    assert "nightly export" in text_of(browser, row)
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#runs-chart svg rect.bar"), "the runs chart")
    screenshot(browser, tmp_path, "dashboard-list-live")

    put_log_lines(moto_server, job_id, [f"export line {i}" for i in range(1, 41)])
    browser.find_element(By.CSS_SELECTOR, f"{row} a").click()
    wait(browser, lambda d: d.current_url.endswith(f"/jobs/{job_id}"), "the job page")
    wait(browser, lambda d: "export line 40" in text_of(d, "#log"), "the log tail")
    assert "export line 1\n" in browser.find_element(By.ID, "log").text + "\n"
    timeline = text_of(browser, "#timeline")
    for step in ("scheduled", "due", "claimed", "instance launched", "running"):
        assert step in timeline
    assert "after due" in timeline  # a duration between two timestamped steps
    assert browser.find_element(By.CSS_SELECTOR, ".detail-instance").text.startswith("i-")
    assert browser.find_element(By.CSS_SELECTOR, ".detail-cost").text == "-"
    screenshot(browser, tmp_path, "dashboard-job-running")

    put_log_lines(moto_server, job_id, ["export line 41: giving up, disk full"])
    dashboard.fail(moto_server, job_id, "disk full")
    wait(browser, lambda d: "failed" in text_of(d, "#job-state"), "the failed state")
    wait(browser, lambda d: "exit code 3: disk full" in text_of(d, ".detail-reason"), "the reason")
    assert text_of(browser, ".detail-reason-code") == "exited"
    wait(browser, lambda d: "giving up, disk full" in text_of(d, "#log"), "the log's last line")
    wait(browser, lambda d: "complete" in text_of(d, "#log-state"), "the log follow to end")
    screenshot(browser, tmp_path, "dashboard-job")

    browser.find_element(By.CSS_SELECTOR, "header a.brand").click()
    wait(browser, lambda d: "failed" in text_of(d, row), "the list to show the failure")
    assert "disk full" in text_of(browser, row)
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#runs-chart rect.outcome-failed"), "the chart's red bar")
    screenshot(browser, tmp_path, "dashboard-list")


def test_without_the_token_no_answer_holds_job_data(dashboard, browser, tmp_path):
    from selenium.webdriver.common.by import By

    secrets = ("confidential-title-7", "registry.example/confidential:9", "CONFIDENTIAL_NAME", "confidential-value")
    job_id = dashboard.schedule("--title", secrets[0], "--image", secrets[1], "-e", f"{secrets[2]}={secrets[3]}",
                                "--at", "+1h")
    paths = ["/", "/index.html", f"/jobs/{job_id}", *(f"/static/{name}" for name in STATIC_FILES),
             "/jobMan/v1.1/jobs", f"/jobMan/v1.1/jobs/{job_id}/status", f"/jobMan/v1.1/jobs/{job_id}/logs"]
    paths += ["/?page=1", "/?status=scheduled", f"/?title={secrets[0]}", f"/jobs/{job_id}/"]  # the no-JS pages'
    now = int(time.time())
    good = signed_cookie(dashboard.token, now + 3600)
    cookies = [None, "forged." + "0" * 64, good[:-1] + ("0" if good[-1] != "0" else "1"),  # a forged MAC
               signed_cookie(dashboard.token, now - 1), signed_cookie("another-daemons-token", now + 3600)]
    for path in paths:
        for cookie in cookies:  # no cookie, or one that must open nothing: forged, expired, another token's
            status, headers, body = dashboard.raw("GET", path, headers={"Cookie": f"jobman_dash={cookie}"}
                                                  if cookie else {})
            for secret in secrets:
                assert secret.encode() not in body, (path, cookie)
            if not path.startswith("/jobMan/"):
                assert status == 200 and headers["content-security-policy"] == CSP, path
                assert headers["x-content-type-options"] == "nosniff"
            else:
                assert status == 401, path
    _, _, opened = dashboard.raw("GET", "/", headers={"Cookie": f"jobman_dash={good}"})
    assert secrets[0].encode() in opened  # the real cookie does open the page: the ones above were near misses
    for path, body in (("/login", b"token=not-the-token"), ("/logout", b"")):
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        status, headers, answer = dashboard.raw("POST", path, body, form)
        assert status in (303, 403) and "jobman_dash=;" in headers.get("set-cookie", "jobman_dash=;"), path
        for secret in secrets:
            assert secret.encode() not in answer, path

    for path in ("/", f"/jobs/{job_id}"):  # the browser, too, shows the login form and nothing else
        browser.get(dashboard.url + path)
        wait(browser, lambda d: d.find_element(By.ID, "token").is_displayed(), "the login form")
        assert not browser.find_element(By.ID, "app").is_displayed()
        for secret in secrets:
            assert secret not in browser.page_source
        screenshot(browser, tmp_path, f"dashboard-login-{path.strip('/').replace('/', '-') or 'list'}")

    browser.find_element(By.ID, "token").send_keys("not-the-token-" + "x" * 30)  # refused: still nothing shown
    browser.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    wait(browser, lambda d: "invalid token" in text_of(d, "#login-error"), "the refusal")
    assert not browser.find_element(By.ID, "app").is_displayed()
    assert browser.execute_script("return sessionStorage.length") == 0
    for secret in secrets:
        assert secret not in browser.page_source


def test_xss_in_title_and_env_is_text_and_nothing_runs(dashboard, browser, tmp_path):
    from selenium.webdriver.common.by import By

    job_id = dashboard.schedule("--title", XSS, "-e", f"EVIL={XSS}", "--at", "+1h")
    log_in(browser, dashboard.url, dashboard.token)
    row = f'#rows tr[data-job-id="{job_id}"]'
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, row), "the job's row")
    assert XSS in text_of(browser, f"{row} td.title")  # shown literally
    assert browser.find_elements(By.CSS_SELECTOR, "body img, body script") == []
    assert browser.execute_script("return typeof window.__x") == "undefined"
    screenshot(browser, tmp_path, "dashboard-xss-list")

    browser.find_element(By.CSS_SELECTOR, f"{row} a").click()
    wait(browser, lambda d: XSS in text_of(d, "#job-title"), "the title on the job page")
    assert f"EVIL={XSS}" in text_of(browser, ".detail-environment")
    assert browser.find_elements(By.CSS_SELECTOR, "body img, body script") == []
    assert browser.execute_script("return typeof window.__x") == "undefined"
    screenshot(browser, tmp_path, "dashboard-xss-job")


def test_the_dashboard_works_behind_the_listeners_tls(moto_server, tmp_path):  # noqa: F811
    """``--tls-cert``: the same pages over HTTPS (a self-signed certificate the browser is told to accept)."""
    from selenium.webdriver.common.by import By

    require_browser()
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-days", "2", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=120)
    env = aws_env(moto_server, JOBMAN_HOME=str(tmp_path / "home"), JOBMAN_DB=str(tmp_path / "jobs.json"))
    daemon = DaemonProcess(env, "--tls-cert", str(cert), "--tls-key", str(key), "--callback-ca", str(cert),
                           "--public-url", "https://127.0.0.1:9")
    driver = None
    try:
        site = Dashboard(env, daemon)
        assert site.url.startswith("https://")
        job_id = site.schedule("--title", "over tls", "--at", "+1h")
        driver = start_browser(tmp_path / "browser-home", accept_insecure_certs=True)
        log_in(driver, site.url, site.token)
        row = f'#rows tr[data-job-id="{job_id}"]'
        wait(driver, lambda d: "over tls" in text_of(d, row), "the job over HTTPS")
        assert driver.execute_script("return window.isSecureContext") is True
        driver.find_element(By.CSS_SELECTOR, f"{row} a").click()
        wait(driver, lambda d: "over tls" in text_of(d, "#job-title"), "the job page over HTTPS")
        screenshot(driver, tmp_path, "dashboard-tls-job")
    finally:
        if driver is not None:
            driver.quit()
        if daemon.proc.poll() is None:
            daemon.stop()
