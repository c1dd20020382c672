"""A real headless Chromium driven by Selenium, for the dashboard's tests and benchmark.

Debian's ``chromium`` and ``chromium-driver`` plus ``pip install selenium`` (NOTES.md): Selenium
Manager is kept offline (``SE_OFFLINE``) and the browser resolves no name but 127.0.0.1, so nothing
leaves the machine. Without them the tests skip with the reason, unless ``JOBMAN_REQUIRE_BROWSER=1``
(CI), where a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL = ("apt-get install -y --no-install-recommends chromium chromium-driver; pip install selenium")


def missing() -> str | None:
    """Why no browser can run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return f"selenium is not installed ({INSTALL})"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.exists(path) or shutil.which(os.path.basename(path))):
            return f"{path} is missing ({INSTALL})"
    return None


def require_browser() -> None:
    """Skip (or, with JOBMAN_REQUIRE_BROWSER=1, fail) when the browser is not installed."""
    reason = missing()
    if reason is None:
        return
    if os.environ.get("JOBMAN_REQUIRE_BROWSER") == "1":
        pytest.fail(f"JOBMAN_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


def start_browser(home: Path, *, accept_insecure_certs: bool = False, javascript: bool = True) -> Any:
    """A headless Chromium with its own empty profile under ``home``; ``javascript=False`` turns
    JavaScript off for every page (both the content-setting preference and Blink's own switch)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    home.mkdir(parents=True, exist_ok=True)
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium") or CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-gpu",
                 "--disable-extensions", "--window-size=1280,1000", f"--user-data-dir={home / 'profile'}",
                 '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1'):
        options.add_argument(flag)
    if accept_insecure_certs:
        options.set_capability("acceptInsecureCerts", True)
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
        options.add_argument("--blink-settings=scriptEnabled=false")
    driver_path = CHROMEDRIVER if os.path.exists(CHROMEDRIVER) else shutil.which("chromedriver") or CHROMEDRIVER
    env = {**os.environ, "HOME": str(home)}
    service = Service(driver_path, env=env)
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    return driver


def log_in(driver: Any, base_url: str, token: str) -> None:
    """Open the dashboard and log in through its form, as a person would."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(base_url + "/")
    WebDriverWait(driver, 30).until(ec.visibility_of_element_located((By.ID, "token")))
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    WebDriverWait(driver, 30).until(ec.visibility_of_element_located((By.ID, "jobs")))
