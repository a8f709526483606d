"""The web dashboard in a real headless Chromium (Debian's ``chromium`` + ``chromedriver``, via Selenium).

Logs in with an API token, opens an app's page, sees its charts drawn with
data from real traffic through HAProxy, saves a screenshot under
``test-artifacts/`` (``BILLOWIN_TEST_ARTIFACTS`` to change it), and logs out
through the form (which carries the session's CSRF token). The cookie holds a
session id, never the token. An app's page also lists its add-ons and their
newest backup, and never shows an add-on's password.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from billowin.addons.model import job_id
from billowin.apps.store import App
from billowin.release.deploy import Deployer
from billowin.release.jobspec import Process
from billowin.release.store import ReleaseStatus
from billowin.stack.single_box import SingleBox
from billowin.system import System

from .conftest import REPO, Cli, wait_for

ARTIFACTS = Path(os.environ.get("BILLOWIN_TEST_ARTIFACTS") or REPO / "test-artifacts")


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "chromium and chromedriver are missing: run `make setup`"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1366,900"):
        options.add_argument(arg)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.set_page_load_timeout(30)
    yield chrome
    chrome.quit()


def test_dashboard_shows_an_apps_charts_with_data(
    stack: SingleBox,
    browser: webdriver.Chrome,
    make_image,  # type: ignore[no-untyped-def]
    deployer: Deployer,
    app_name: str,
    router: httpx.Client,
    cleanup_apps: list[str],
) -> None:
    cleanup_apps.append(app_name)
    System(stack.settings).apps.create(App(name=app_name, repository="/nonexistent"))
    release = deployer.deploy(
        app_name, make_image(app_name, "dash", greeting="dashboard"), [Process(name="web")]
    )
    assert release.status == ReleaseStatus.LIVE, release.description
    token = System(stack.settings).tokens.create("dashboard test")
    api = f"http://127.0.0.1:{stack.ports.api}"

    # Traffic through the router until the monitoring has request points for the app, read as the
    # page's script reads them: from the dashboard, on a session (the JSON API wants a bearer token).
    seen: dict[str, object] = {}

    def has_points(session: httpx.Client) -> bool:
        seen["router"] = [
            router.get("/", headers={"Host": f"{app_name}.localhost"}).status_code for _ in range(20)
        ]
        resp = session.get(f"/dashboard/apps/{app_name}/charts.json")
        charts = {c["id"]: c for c in resp.json()["charts"]}
        seen["requests"] = charts["requests"]
        return any(v for s in charts["requests"]["series"] for v in s["values"] if v)

    with httpx.Client(base_url=api, timeout=20) as session:
        assert session.post("/dashboard/login", data={"token": token}).status_code == 303
        try:
            wait_for(lambda: has_points(session), 120, "request metrics for the app")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; router answers and chart data last seen: {seen}") from exc

    # Not logged in: the dashboard sends the browser to the login form.
    browser.get(f"{api}/dashboard")
    assert browser.current_url.endswith("/dashboard/login")
    browser.find_element(By.ID, "token").send_keys("bw_not_a_real_token")
    browser.find_element(By.ID, "login").click()
    error = WebDriverWait(browser, 20).until(ec.presence_of_element_located((By.ID, "login-error")))
    assert "not valid" in error.text

    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "login").click()
    WebDriverWait(browser, 20).until(ec.presence_of_element_located((By.ID, "apps")))
    cookie = browser.get_cookie("billowin_session")
    assert cookie is not None and cookie["httpOnly"] and cookie["path"] == "/dashboard"
    assert token.split("_", 2)[2] not in cookie["value"], "the cookie holds a session id, not the token"
    assert browser.get_cookie("billowin_token") is None
    browser.find_element(By.LINK_TEXT, app_name).click()

    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: b.find_element(By.ID, "charts").get_attribute("data-loaded") == "true")
    points = browser.find_element(By.ID, "chart-requests").get_attribute("data-points")
    assert points is not None and int(points) > 0
    assert browser.find_elements(By.CSS_SELECTOR, "#chart-requests canvas"), (
        "the requests chart was not drawn"
    )
    assert browser.find_elements(By.CSS_SELECTOR, "#chart-latency canvas"), "the latency chart was not drawn"
    releases = browser.find_element(By.ID, "releases").text
    assert "v1" in releases and "live" in releases
    # The live log reads from the dashboard too: it must not have been refused.
    assert "log stream ended" not in browser.find_element(By.ID, "logs").text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard-app.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000

    # Logging out is a form post with the session's CSRF token (Chromium sends Origin and
    # Sec-Fetch-Site itself); afterwards the dashboard wants a login again.
    csrf = browser.find_element(By.CSS_SELECTOR, "form[action='/dashboard/logout'] input[name=csrf]")
    assert csrf.get_attribute("value")
    browser.find_element(By.ID, "logout").click()
    WebDriverWait(browser, 20).until(ec.presence_of_element_located((By.ID, "token")))
    browser.get(f"{api}/dashboard")
    assert browser.current_url.endswith("/dashboard/login")


def test_dashboard_shows_an_apps_addons_and_their_backups_without_credentials(
    stack: SingleBox, browser: webdriver.Chrome, cli: Cli, tmp_path: Path, destroy_after: list[str]
) -> None:
    app = f"dash{uuid.uuid4().hex[:6]}"
    name = f"{app}-redis"
    destroy_after.append(app)
    cli("apps:create", app, "--repository", str(tmp_path))
    cli("addons:create", app, "redis", "--no-wait")
    # The API's add-on thread provisions it (no deployed app needed): the image, the job, its health.
    seen: dict[str, object] = {}

    def up() -> bool:
        found = seen["addon"] = cli.json("addons:info", app, name)
        assert found["state"] != "failed", found
        return bool(found["state"] == "ready" and found["status"] == "up")

    try:
        wait_for(up, 600, f"{name} to be ready and up")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the add-on last seen: {seen}") from exc
    backup = cli.json("pg:backups:capture", app, name)
    assert re.fullmatch(r"b0*1", backup["id"]), backup
    password = System(stack.settings).config.latest(f"addon-{name}")[1]["PASSWORD"]
    assert password

    token = System(stack.settings).tokens.create("dashboard add-ons test")
    api = f"http://127.0.0.1:{stack.ports.api}"
    browser.get(f"{api}/dashboard/login")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "login").click()
    WebDriverWait(browser, 20).until(ec.presence_of_element_located((By.ID, "apps")))
    browser.get(f"{api}/dashboard/apps/{app}")
    section = WebDriverWait(browser, 20).until(ec.presence_of_element_located((By.ID, "addons")))
    row = section.find_element(By.CSS_SELECTOR, f"tr[data-addon='{name}']")
    cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
    name_cell, kind, status, attached, url, node, newest = cells
    assert name_cell == name
    assert kind == "redis 7", cells
    assert status == "up", cells
    assert attached == f"{app} as REDIS_URL", cells
    assert url.startswith("redis://default:********@"), cells
    assert node and node != "—", cells
    assert newest.startswith(backup["id"]) and "(1 backup)" in newest, cells
    source = browser.page_source
    assert password not in source, "the dashboard showed the add-on's password"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert section.screenshot(str(ARTIFACTS / "dashboard-addons.png"))

    # Destroying the app destroys the add-on it made; its page is gone with it.
    cli("apps:destroy", app, "--confirm", app)
    destroy_after.remove(app)
    assert System(stack.settings).nomad.current(job_id(name)) is None
    browser.find_element(By.ID, "logout").click()
    WebDriverWait(browser, 20).until(ec.presence_of_element_located((By.ID, "token")))
