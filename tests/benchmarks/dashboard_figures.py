"""The dashboard's jobs list at 10,000 jobs: first paint and rows shown, in a real headless Chromium.

A real ``jobman daemon`` (moto_server for AWS) serves the 10,000-job history store on 127.0.0.1.
The browser logs in once through the form (the token stays in the tab's session storage), then
loads ``/`` afresh ``sizes.runs`` times. Per load, from the browser's own clock (Performance API,
milliseconds since the navigation started): ``first-contentful-paint`` (the page's frame, before
any job data), and the ``jobman-rows-shown`` mark list.js sets once the table has rows (the
whole ``GET /jobs`` answer fetched, parsed, sorted and the first page drawn). The baseline is the
same ``GET /jobs`` fetched by this process (urllib, interleaved with the loads): what the page
adds on top of the data's own transfer is the difference. Skipped with the reason when chromium,
chromium-driver or selenium are absent (tests/dashboard_browser.py says how to install them).
"""

from __future__ import annotations

import sys
import time
import urllib.request
from pathlib import Path

import datagen
from harness import BenchError, Daemon, aws_env, median, ms
from report import Row, Sizes

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the browser helper
from dashboard_browser import log_in, missing, start_browser  # noqa: E402

TOKEN = "bench-dashboard-token-" + "0123456789abcdef" * 2
TARGET_ROWS = 3.0  # seconds until 10,000 jobs' first page is on screen, on a loaded 2-core box
TARGET_PAINT = 1.0


def _fetch_list(url: str) -> float:
    request = urllib.request.Request(url + "/jobMan/v1.1/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as answer:
        answer.read()
    return time.perf_counter() - start


def _load(driver, url: str) -> tuple[float, float]:
    """One fresh load of the list: (first contentful paint, rows shown), seconds."""
    driver.get(url + "/")
    deadline = time.monotonic() + 60
    while True:
        found = driver.execute_script(
            "var p = performance.getEntriesByName('first-contentful-paint');"
            "var r = performance.getEntriesByName('jobman-rows-shown');"
            "return (p.length && r.length) ? [p[0].startTime, r[0].startTime] : null;")
        if found:
            return found[0] / 1000, found[1] / 1000
        if time.monotonic() > deadline:
            raise BenchError("the dashboard showed no rows within 60 s")
        time.sleep(0.05)


def dashboard(workdir: Path, sizes: Sizes, moto) -> list[Row]:
    n = f"{sizes.store:,}"
    reason = missing()
    if reason:
        return [Row(f"dashboard job list, {n} jobs: first paint / rows shown", "skipped", "-", reason, None)]
    db = workdir / "dashboard-10k.json"
    datagen.history_store(db, sizes.store)
    daemon = Daemon(aws_env(moto.url, JOBMAN_HOME=str(workdir / "home"), JOBMAN_API_TOKEN=TOKEN), db,
                    "--reconcile-interval", "3600", log=workdir / "daemon-dashboard.log")
    driver = None
    try:
        daemon.wait_ready()
        driver = start_browser(workdir / "browser-home")
        log_in(driver, daemon.url, TOKEN)
        _load(driver, daemon.url)  # warm-up: the daemon's store cache, the browser's caches
        paints, rows, fetches = [], [], []
        for _ in range(sizes.runs):
            paint, shown = _load(driver, daemon.url)
            paints.append(paint)
            rows.append(shown)
            fetches.append(_fetch_list(daemon.url))
        shown_count = driver.execute_script("return document.getElementById('rows').rows.length")
        if shown_count != 50:
            raise BenchError(f"the first page shows {shown_count} rows, expected 50")
    finally:
        if driver is not None:
            driver.quit()
        daemon.stop()
    paint, shown, fetch = median(paints), median(rows), median(fetches)
    return [
        Row(f"dashboard job list, {n} jobs: first contentful paint (headless Chromium)", ms(paint),
            f"< {ms(TARGET_PAINT)}", "-", paint < TARGET_PAINT),
        Row(f"dashboard job list, {n} jobs: until the table shows rows", ms(shown), f"< {ms(TARGET_ROWS)}",
            f"GET /jobs alone (urllib) {ms(fetch)}", shown < TARGET_ROWS),
    ]
