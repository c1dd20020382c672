"""The dashboard in a real headless Chromium with JavaScript turned OFF, against a real ``jobman
daemon`` on ``moto_server``: the <noscript> form logs in (a cookie, not the token, HttpOnly and
SameSite=Strict), the server-rendered list shows the jobs (an XSS title as text), the filter form
works, a failed job's page shows its timeline, reason and log tail, and logging out shows the form
again with no job data. Screenshots go to the test's tmp dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from dashboard_browser import require_browser, start_browser
from moto_server import moto_server, moto_server_process  # noqa: F401  (fixtures)
from test_dashboard_browser import XSS, dashboard, put_log_lines, screenshot, text_of, wait  # noqa: F401
from test_e2e_daemon import poll

pytestmark = pytest.mark.slow


@pytest.fixture
def nojs_browser(tmp_path: Path) -> Iterator[Any]:
    require_browser()
    driver = start_browser(tmp_path / "browser-home", javascript=False)
    try:
        yield driver
    finally:
        driver.quit()


def visible(driver: Any, element_id: str) -> bool:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.ID, element_id)
    return bool(found) and found[0].is_displayed()


def test_without_javascript_log_in_by_form_read_the_list_and_a_failed_jobs_page(  # noqa: F811
        dashboard, nojs_browser, moto_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser = nojs_browser
    failed_id = dashboard.schedule("--title", "nojs nightly export", "--at", "now")
    xss_id = dashboard.schedule("--title", XSS, "--at", "+1h")
    assert poll(lambda: dashboard.status(failed_id)["status"] == "running", timeout=60), dashboard.daemon.text()
    put_log_lines(moto_server, failed_id, [f"export line {i}" for i in range(1, 6)] + ["<b>giving up</b>, disk full"])
    dashboard.fail(moto_server, failed_id, "disk full")

    browser.get(dashboard.url + "/")
    wait(browser, lambda d: visible(d, "plain-token"), "the no-JavaScript login form")
    assert not visible(browser, "login")  # the scripted form stays hidden: no script ran to show it
    assert "nojs nightly export" not in browser.page_source
    screenshot(browser, tmp_path, "dashboard-nojs-login")

    browser.find_element(By.ID, "plain-token").send_keys(dashboard.token)
    browser.find_element(By.CSS_SELECTOR, "#plain-login button[type=submit]").click()
    wait(browser, lambda d: visible(d, "plain-list"), "the server-rendered list")
    assert browser.current_url == dashboard.url + "/" and dashboard.token not in browser.current_url
    (cookie,) = browser.get_cookies()
    assert cookie["name"] == "jobman_dash" and cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert dashboard.token not in cookie["value"]
    rows = text_of(browser, "#rows")
    assert "nojs nightly export" in rows and "failed" in rows and "disk full" in rows
    assert XSS in text_of(browser, f'#rows tr[data-job-id="{xss_id}"] td.title')  # the title, as text
    assert browser.find_elements(By.CSS_SELECTOR, "body img, script") == []
    screenshot(browser, tmp_path, "dashboard-nojs-list")

    Select(browser.find_element(By.NAME, "status")).select_by_visible_text("failed")
    browser.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    wait(browser, lambda d: "status=failed" in d.current_url, "the filtered list")
    ids = [e.get_attribute("data-job-id") for e in browser.find_elements(By.CSS_SELECTOR, "#rows tr")]
    assert ids == [str(failed_id)]

    browser.find_element(By.CSS_SELECTOR, f'#rows tr[data-job-id="{failed_id}"] td.title a').click()
    wait(browser, lambda d: d.current_url.endswith(f"/jobs/{failed_id}"), "the job page")
    assert "failed" in text_of(browser, "#job-state")
    assert "exit code 3: disk full" in text_of(browser, ".detail-reason")
    assert text_of(browser, ".detail-reason-code") == "exited"
    assert text_of(browser, ".detail-instance").startswith("i-") and text_of(browser, ".detail-cost") == "-"
    timeline = text_of(browser, "#timeline")
    for step in ("scheduled", "due", "claimed", "instance launched", "running", "failed"):
        assert step in timeline
    assert "after due" in timeline
    log = browser.find_element(By.ID, "log").text
    assert log.startswith("export line 1") and log.endswith("<b>giving up</b>, disk full")
    screenshot(browser, tmp_path, "dashboard-nojs-job")

    browser.find_element(By.ID, "logout").click()
    wait(browser, lambda d: visible(d, "plain-token"), "the login form after logging out")
    assert browser.get_cookies() == [] and "nojs nightly export" not in browser.page_source
