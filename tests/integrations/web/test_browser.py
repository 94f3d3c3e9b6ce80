"""End to end in a real headless browser (Debian's chromium and chromedriver, driven by
Selenium): a survey email arrives on a local SMTP server (aiosmtpd), its link is opened, a score
is clicked, and the answer is in the database; an email's unsubscribe link is clicked, and the
next touch is suppressed. ``retain web`` runs for real (uvicorn on 127.0.0.1).

The browser is never downloaded: Selenium is pointed at /usr/bin/chromium and
/usr/bin/chromedriver (``.ci/run`` installs them). Without them these tests skip, except under
CI=true, where they fail. With RETAIN_SCREENSHOTS=<folder>, each page is saved at phone width
(390x844): that is how docs/web/ was made.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from flows.engine.tick import tick
from integrations.channels import build_channels
from integrations.links import sign
from integrations.web.server import WebThread, web_server
from models import Settings, SurveyResponse, Touch
from playbooks import compile_source

from ._book import book
from .conftest import T0

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PHONE = (390, 844)


def _browser_missing() -> None:
    reason = f"a browser is needed: {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)"
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI=true: the browser tests must run, not skip)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def _chromium() -> Iterator[Any]:
    """One headless chromium for the module's tests (it takes seconds to start)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        _browser_missing()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="retain-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--window-size={PHONE[0]},{PHONE[1]}", f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    # a phone's viewport (headless windows have a minimum width of their own)
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": PHONE[0], "height": PHONE[1], "deviceScaleFactor": 1, "mobile": True},
    )
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser(_chromium: Any) -> Iterator[Any]:
    """The module's chromium, left as the next test needs it: a blank page, no cookies (each test's
    server is on a port of its own, so nothing else of one test's pages reaches the next's)."""
    yield _chromium
    _chromium.get("about:blank")
    _chromium.execute_cdp_cmd("Network.clearBrowserCookies", {})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``retain web`` on 127.0.0.1 (a free port); the links in emails point to it."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("RETAIN_PUBLIC_URL", url)
    monkeypatch.setenv("RETAIN_SURVEY_SECRET", "browser-survey-secret")
    monkeypatch.setenv("RETAIN_UNSUBSCRIBE_SECRET", "browser-unsubscribe-secret")
    server = web_server(sqlite_engine, Settings(), host="127.0.0.1", port=port, log_level="warning")
    with WebThread(server):
        deadline = time.monotonic() + 15
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        yield url


def _shot(driver: Any, name: str) -> None:
    folder = os.environ.get("RETAIN_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))


def _shows(driver: Any, css: str, words: str) -> str:
    """The text of ``css`` once it holds ``words`` (a click loads the next page a moment later)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def holds(d: Any) -> str | bool:
        try:
            text = str(d.find_element(By.CSS_SELECTOR, css).text)
        except Exception:  # the old page went away between finding and reading
            return False
        return text if words in text else False

    try:
        return str(WebDriverWait(driver, 15).until(holds))
    except Exception:
        pytest.fail(f"the page never showed {words!r} in {css}: {driver.page_source[:2000]}")


def _link(html: str, words: str) -> str:
    found = re.search(rf'<a href="([^"]+)"[^>]*>{words}</a>', html)
    assert found, f"no link {words!r} in {html}"
    return found.group(1).replace("&amp;", "&")


def _html(received: Any) -> str:
    [html] = [p for p in received.message.walk() if p.get_content_type() == "text/html"]
    return str(html.get_content())


def _settings(smtp: Any, tmp_path: Path) -> Settings:
    return Settings(  # type: ignore[call-arg]
        smtp_url=smtp.url(query="starttls=false"), email_from="Acme Success <success@acme.example>", outbox_dir=tmp_path
    )


SURVEY = compile_source(
    textwrap.dedent(
        """
        playbook: pulse
        name: Pulse
        lifecycle: check_in
        audience: account.external_id == "acme"
        steps:
          - id: ask_nps
            kind: survey
            survey: nps
        """
    ),
    "pulse.yaml",
)


def test_a_survey_email_s_link_a_click_on_a_score_and_the_answer_is_in_the_database(
    browser: Any, served: str, sqlite_engine: Engine, smtp_server: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    book(sqlite_engine, tmp_path)
    tick(sqlite_engine, SURVEY, T0, channels=build_channels(_settings(smtp_server, tmp_path)), window=None)
    [received] = smtp_server.sink.messages
    link = _link(_html(received), "Open the survey")
    assert link.startswith(f"{served}/survey?t=")

    browser.get(link)
    _shows(browser, "h1", "How likely are you to recommend us")
    _shot(browser, "survey")
    browser.find_element(By.CSS_SELECTOR, 'button[name="score"][value="9"]').click()
    _shows(browser, '[role="status"]', "your answer 9 is recorded")
    _shot(browser, "survey-thanks")
    browser.find_element(By.ID, "comment").send_keys("Onboarding was quick.")
    browser.find_element(By.CSS_SELECTOR, 'form[action^="/survey/comment"] button').click()
    _shows(browser, '[role="status"]', "and your comment are recorded")
    _shot(browser, "survey-commented")

    with sqlite_engine.connect() as conn:
        answers = conn.execute(select(SurveyResponse.kind, SurveyResponse.score, SurveyResponse.comment)).all()
    assert [tuple(a) for a in answers] == [("nps", 9, "Onboarding was quick.")]


NUDGES = compile_source(
    textwrap.dedent(
        """
        playbook: nudges
        name: Nudges
        lifecycle: check_in
        audience: account.external_id == "acme"
        steps:
          - id: first
            kind: email
            subject: "Hello {{ account.name }}"
            body: "Hi {{ contact.first_name }}, a first note."
          - id: pause
            kind: wait
            for: 1 day
          - id: second
            kind: email
            subject: "Again"
            body: "Hi {{ contact.first_name }}, a second note."
        """
    ),
    "nudges.yaml",
)


def test_a_click_on_the_unsubscribe_link_and_the_next_touch_is_suppressed(
    browser: Any, served: str, sqlite_engine: Engine, smtp_server: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    book(sqlite_engine, tmp_path)
    channels: Callable[[], Any] = lambda: build_channels(_settings(smtp_server, tmp_path))  # noqa: E731
    tick(sqlite_engine, NUDGES, T0, channels=channels(), window=None)
    [first] = smtp_server.sink.messages
    link = _link(_html(first), "Unsubscribe")
    assert first.message["List-Unsubscribe"].startswith("<mailto:")  # http: no one-click header (RFC 8058 wants https)

    browser.get(link)
    _shows(browser, "h1", "Unsubscribe from our emails?")
    _shot(browser, "unsubscribe")
    browser.find_element(By.CSS_SELECTOR, "button.primary").click()
    _shows(browser, "h1", "You are unsubscribed")
    _shot(browser, "unsubscribed")

    tick(sqlite_engine, NUDGES, T0.replace(day=4), channels=channels(), window=None)
    assert len(smtp_server.sink.messages) == 1  # nothing more arrived
    with sqlite_engine.connect() as conn:
        second = conn.execute(select(Touch.status, Touch.reason).where(Touch.step_id == "second")).one()
    assert second.status == "suppressed" and "unsubscribed from email" in (second.reason or "")

    browser.find_element(By.CSS_SELECTOR, 'form[action^="/unsubscribe/undo"] button').click()
    _shows(browser, "h1", "You are subscribed again")
    _shot(browser, "resubscribed")
    browser.get(link.replace("t=", "t=x"))
    _shows(browser, "h1", "This link is not valid")
    _shot(browser, "invalid-link")
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    expired = sign("browser-unsubscribe-secret", "unsubscribe", "email|contact:1", yesterday)
    browser.get(f"{served}/unsubscribe?t={expired}")
    _shows(browser, "h1", "This link has expired")
    _shot(browser, "expired-link")
