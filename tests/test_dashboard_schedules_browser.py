"""The dashboard's schedules pages in a real headless Chromium against a real ``jobman daemon`` on
``moto_server`` (DESIGN.md sections 14 and 15).

With JavaScript: after logging in, the Schedules link shows a schedule made with the CLI (its
hostile title as text, nothing run); the list follows ``jobman schedules pause``/``resume`` and a
schedule stored by another process without a reload, and shows the run the daemon creates at its
occurrence, linked to its job page; the schedule's page follows a pause live, lists the run, shows
no env value; the run's job page links back to the schedule. Without JavaScript: the cookie login,
then the server-rendered schedules list and schedule page. Waits poll the DOM with generous limits;
the occurrence is ordered by the store's state, not by sleeping.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from dashboard_browser import log_in, require_browser, start_browser
from moto_server import moto_server, moto_server_process  # noqa: F401  (fixtures)
from test_dashboard_browser import WAIT, XSS, browser, dashboard, screenshot, text_of  # noqa: F401
from test_e2e_daemon import jobman, poll

from jobman_cli.daemon.schedules import LEAD
from jobman_cli.model import format_time
from jobman_cli.schedules.service import ScheduleService
from jobman_cli.service import JobService
from jobman_cli.stores.tinydb import TinyDBStore

pytestmark = pytest.mark.slow

ENV_VALUE = "never-shown-env-value"


@pytest.fixture
def nojs_browser(tmp_path: Path) -> Iterator[Any]:
    require_browser()
    driver = start_browser(tmp_path / "browser-home-nojs", javascript=False)
    try:
        yield driver
    finally:
        driver.quit()


def cli(dashboard: Any, *args: str) -> str:
    result = jobman(dashboard.env, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def add_soon(db: Path, title: str) -> int:
    """A schedule stored by this process (another writer of the daemon's store) whose first
    occurrence is a few seconds past the daemon's lead, so the daemon creates its run soon."""
    store = TinyDBStore(db)
    try:
        draft = ScheduleService(JobService(store)).validate(
            {"docker-image": "alpine:3.20", "every": "1h", "tz": "UTC", "title": title,
             "env-variables": {"SOON_ENV": ENV_VALUE}})
        occurrence = (datetime.now(timezone.utc) + LEAD + timedelta(seconds=4)).replace(microsecond=0)
        return store.add_schedule(dataclasses.replace(draft, next_at=occurrence)).id
    finally:
        store.close()


def add_missed_range(db: Path, schedule_id: int, count: int) -> None:
    """One range record of ``count`` missed occurrences, written as the daemon writes records (a
    change of the schedule: its updated-at moves)."""
    store = TinyDBStore(db)
    try:
        now = datetime.now(timezone.utc)
        record = {"occurrence": format_time(now - timedelta(hours=3)), "outcome": "missed", "job-id": None,
                  "at": format_time(now), "detail": "no daemon ran", "until": format_time(now - timedelta(hours=1)),
                  "count": count}
        store.update_schedule(schedule_id, lambda s: s.changed(now, records=(*s.records, record)))
    finally:
        store.close()


def last_job(db: Path, schedule_id: int) -> int | None:
    store = TinyDBStore(db)
    try:
        return store.get_schedule(schedule_id).last_job_id
    finally:
        store.close()


def wait(driver: Any, condition: Any, what: str) -> Any:
    """Poll ``condition`` (an element read while the page navigated or re-rendered is tried again)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)).until(
        condition, message=f"waiting for {what}")


def txt(driver: Any, css: str) -> str:
    """The text of every element ``css`` matches, read in one script call: the page's scripts
    re-render their tables every 2 s, so an element found first and read later may be gone."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]))"
        ".map(function (e) { return e.innerText.trim(); }).join(' ');", css)


def click(driver: Any, css: str) -> None:
    """Click the first element ``css`` matches, found and clicked in one script call (see :func:`txt`)."""
    driver.execute_script("document.querySelector(arguments[0]).click();", css)


def test_the_schedules_view_follows_pause_resume_and_new_runs_live(  # noqa: F811
        dashboard, browser, tmp_path):
    from selenium.webdriver.common.by import By

    db = Path(dashboard.env["JOBMAN_DB"])
    first = dashboard.schedule("--every", "2h", "--tz", "Europe/Berlin", "--title", XSS, "--overlap", "allow")
    log_in(browser, dashboard.url, dashboard.token)
    browser.find_element(By.ID, "nav-schedules").click()
    row = f'#rows tr[data-schedule-id="{first}"]'
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, row), "the schedule's row")
    assert txt(browser, f"{row} td.title") == XSS  # the title, as text
    assert browser.execute_script("return window.__x === undefined")  # and nothing of it ran
    assert txt(browser, f"{row} td.spec") == "every 2h" and txt(browser, f"{row} td.tz") == "Europe/Berlin"
    assert txt(browser, f"{row} td.state") == "active" and txt(browser, f"{row} td.overlap") == "allow"
    assert txt(browser, f"{row} td.next").endswith("Z") and "CE" in txt(browser, f"{row} td.next-local")
    assert txt(browser, f"{row} td.last-run") == "–" and txt(browser, f"{row} td.records") == "none"
    loaded_at = browser.execute_script("return performance.timeOrigin")

    cli(dashboard, "schedules", "pause", str(first))
    wait(browser, lambda d: txt(d, f"{row} td.state") == "paused", "the pause, live")
    assert txt(browser, f"{row} td.next") == "– (paused)"
    screenshot(browser, tmp_path, "dashboard-schedules-paused")
    cli(dashboard, "schedules", "resume", str(first))
    wait(browser, lambda d: txt(d, f"{row} td.state") == "active", "the resume, live")

    soon = add_soon(db, "soon-run")
    soon_row = f'#rows tr[data-schedule-id="{soon}"]'
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, soon_row), "a schedule stored by another process")
    assert poll(lambda: last_job(db, soon) is not None, timeout=WAIT), dashboard.daemon.text()
    run = last_job(db, soon)
    wait(browser, lambda d: txt(d, f"{soon_row} td.last-run").startswith(f"#{run} "), "the new run, live")
    wait(browser, lambda d: txt(d, f"{soon_row} td.last-run").startswith(f"#{run} running"),
         "the run's own state, live (its schedule did not change)")
    add_missed_range(db, first, 3)
    wait(browser, lambda d: txt(d, f"{row} td.records") == "missed 3", "a new record's count, live")
    assert browser.execute_script("return performance.timeOrigin") == loaded_at  # never reloaded
    screenshot(browser, tmp_path, "dashboard-schedules")

    click(browser, f"{soon_row} td.title a")
    wait(browser, lambda d: d.current_url.endswith(f"/schedules/{soon}"), "the schedule's page")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'#runs tr[data-job-id="{run}"]'), "its run")
    assert txt(browser, ".tpl-env") == "SOON_ENV" and ENV_VALUE not in browser.page_source
    assert txt(browser, "#runs-hint") == f"jobman list --schedule {soon}"
    assert txt(browser, ".detail-schedule") == "every 1h" and txt(browser, "#schedule-state") == "active"
    cli(dashboard, "schedules", "pause", str(soon))
    wait(browser, lambda d: txt(d, "#schedule-state") == "paused", "the schedule page's live state")
    screenshot(browser, tmp_path, "dashboard-schedule")

    click(browser, f'#runs tr[data-job-id="{run}"] a')
    wait(browser, lambda d: d.current_url.endswith(f"/jobs/{run}"), "the run's job page")
    wait(browser, lambda d: d.find_elements(By.ID, "schedule-link"), "the link back to the schedule")
    click(browser, "#schedule-link")
    wait(browser, lambda d: d.current_url.endswith(f"/schedules/{soon}"), "back on the schedule's page")
    wait(browser, lambda d: "soon-run" in txt(d, "#schedule-title"), "the schedule's title")


def test_without_javascript_the_schedules_read_as_plain_pages(dashboard, nojs_browser, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By

    browser = nojs_browser
    first = dashboard.schedule("--every", "15m", "--tz", "UTC", "--title", XSS, "-e", f"XSS_ENV={ENV_VALUE}")
    browser.get(dashboard.url + "/schedules")
    wait(browser, lambda d: [e for e in d.find_elements(By.ID, "plain-token") if e.is_displayed()],
         "the no-JavaScript login form")
    assert "every 15m" not in browser.page_source
    browser.find_element(By.ID, "plain-token").send_keys(dashboard.token)
    browser.find_element(By.CSS_SELECTOR, "#plain-login button[type=submit]").click()
    wait(browser, lambda d: d.find_elements(By.ID, "plain-list"), "the server-rendered jobs list")
    browser.find_element(By.ID, "nav-schedules").click()
    wait(browser, lambda d: d.find_elements(By.ID, "plain-schedules"), "the server-rendered schedules list")
    row = f'#rows tr[data-schedule-id="{first}"]'
    assert text_of(browser, f"{row} td.title") == XSS and text_of(browser, f"{row} td.spec") == "every 15m"
    assert text_of(browser, f"{row} td.state") == "active"
    assert browser.find_elements(By.CSS_SELECTOR, "body img, script") == []
    screenshot(browser, tmp_path, "dashboard-nojs-schedules")

    cli(dashboard, "schedules", "pause", str(first))
    browser.find_element(By.ID, "refresh").click()  # no script: a reload shows the change
    wait(browser, lambda d: text_of(d, f"{row} td.state") == "paused", "the pause after a refresh")
    browser.find_element(By.CSS_SELECTOR, f"{row} td.title a").click()
    wait(browser, lambda d: d.find_elements(By.ID, "plain-schedule"), "the server-rendered schedule page")
    assert text_of(browser, "#schedule-state") == "paused" and text_of(browser, ".tpl-env") == "XSS_ENV"
    assert ENV_VALUE not in browser.page_source and XSS in text_of(browser, "#schedule-title")
    assert browser.find_elements(By.CSS_SELECTOR, "body img, script") == []
    screenshot(browser, tmp_path, "dashboard-nojs-schedule")
