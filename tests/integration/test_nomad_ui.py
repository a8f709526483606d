"""Nomad's own web UI, in the session's real stack, in a real headless Chromium.

The Nomad that ``make setup`` installed must serve its UI: a release binary has it, and one built
from the Go module gets it built from the module's ``ui/`` (billowin/stack/nomad_ui.py). A Nomad
without it fails here, saying where setup recorded why. The test deploys a Billowin app, finds
it in the UI's jobs list, opens the job, saves ``test-artifacts/nomad-ui.png``, and opens an
evaluation's side panel: the one page that runs Billowin's stand-in for ember-usable.
"""

from __future__ import annotations

import subprocess

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from billowin.apps.store import App
from billowin.release.deploy import Deployer
from billowin.release.jobspec import Process
from billowin.release.store import ReleaseStatus
from billowin.stack.nomad_ui import ServedUi, load_record, record_path, served_ui
from billowin.stack.single_box import SingleBox
from billowin.stack.tools import Toolset
from billowin.system import System

from .conftest import REPO, Cli
from .test_dashboard import ARTIFACTS, browser  # noqa: F401 - the dashboard test's Chromium fixture


def why_no_ui(stack: SingleBox) -> str:
    nomad = Toolset.resolve(stack.settings).nomad
    record = load_record(nomad)
    if record is None:
        return f"{nomad} has no UI record ({record_path(nomad)}): run `make setup`"
    return f"{nomad}: {record}"


def test_the_nomad_ui_lists_and_opens_a_billowin_apps_job(
    stack: SingleBox,
    browser: webdriver.Chrome,  # noqa: F811 - the imported fixture
    make_image,  # type: ignore[no-untyped-def]
    deployer: Deployer,
    app_name: str,
    cleanup_apps: list[str],
    cli: Cli,
) -> None:
    nomad = stack.settings.nomad_addr
    assert served_ui(nomad) is ServedUi.UI, f"Nomad at {nomad} serves no web UI; {why_no_ui(stack)}"
    assert "web UI at /ui/" in stack.endpoints()["Nomad UI/API"]
    status = subprocess.run(
        cli.argv("status"),
        env={**cli.env, "BILLOWIN_API_PORT": str(stack.ports.api)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert f"Nomad {nomad}: web UI at /ui/" in status.stdout, status.stdout + status.stderr

    cleanup_apps.append(app_name)
    System(stack.settings).apps.create(App(name=app_name, repository="/nonexistent"))
    release = deployer.deploy(app_name, make_image(app_name, "nomad-ui"), [Process(name="web")])
    assert release.status == ReleaseStatus.LIVE, release.description

    wait = WebDriverWait(browser, 60)
    browser.get(f"{nomad}/ui/jobs")
    link = wait.until(ec.element_to_be_clickable((By.LINK_TEXT, app_name)))
    assert browser.title.startswith("Jobs"), browser.title
    link.click()
    wait.until(lambda b: f"/ui/jobs/{app_name}" in b.current_url)
    # The job's page: its task group (the Procfile's `web`) and its running allocation.
    wait.until(lambda b: "Task Groups" in b.find_element(By.TAG_NAME, "body").text)
    body = browser.find_element(By.TAG_NAME, "body").text
    assert app_name in body and "web" in body, body[:2000]
    wait.until(lambda b: "running" in b.find_element(By.TAG_NAME, "body").text.lower())
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "nomad-ui.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000

    # The evaluations page keeps its side panel in a statechart (ember-statecharts' useMachine
    # behind `@use`): opening one evaluation runs Billowin's ember-usable.
    browser.get(f"{nomad}/ui/evaluations")
    # The row's first cell, its id: the middle of the row may be the job's link.
    cell = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "table tbody tr td:first-child")))
    cell.click()
    try:
        panel = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, ".evaluations-sidebar.open")))
    except TimeoutException as exc:
        text = browser.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"no evaluation panel at {browser.current_url}:\n{text[:2000]}") from exc
    wait.until(lambda _b: "Evaluation Response" in panel.text or "Related Evaluations" in panel.text)
    assert "currentEval=" in browser.current_url
    errors = [
        entry["message"]
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE" and "/v1/acl/token/self" not in entry["message"]
    ]  # (that one is Nomad's UI asking for a token on a Nomad without ACLs: a 400, as upstream)
    assert errors == [], errors
