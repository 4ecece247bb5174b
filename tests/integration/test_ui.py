"""The /ui page: public static files with strict headers behind the usual guards, and in a real browser."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from agent.dev.emulator import MotoServer, free_port
from agent.server import ui
from tests.support.agent import TOKEN, AgentFactory, AgentProcess
from tests.support.waiting import wait_until

CSP = "default-src 'self'; frame-ancestors 'none'"
# Debian's chromium and chromium-driver (make test installs them). Both paths are given to Selenium,
# so Selenium Manager never runs and nothing downloads a browser.
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PAGE_TIMEOUT = 45.0  # generous: the browser, the agent and moto share two busy cores


async def test_page_and_assets_are_public_with_strict_headers(moto: MotoServer, run_agent: AgentFactory) -> None:
    """/ui and each asset answer 200 without a token, with the CSP, nosniff, no CORS headers, no data."""
    async with run_agent(moto.url) as agent:
        for path, (_name, kind) in ui.ASSETS.items():
            reply = await agent.get(path, token=None, headers={"Origin": "http://evil.example"})
            assert reply.status == 200, path
            assert reply.headers["Content-Type"] == f"{kind}; charset=utf-8"
            assert reply.headers["Content-Security-Policy"] == CSP
            assert reply.headers["X-Content-Type-Options"] == "nosniff"
            assert not [name for name in reply.headers if name.lower().startswith("access-control-")]
            assert TOKEN not in reply.text
        with_token = await agent.get("/ui")
        assert with_token.status == 200 and TOKEN not in with_token.text


async def test_page_follows_the_guard_order(moto: MotoServer, run_agent: AgentFactory) -> None:
    """On /ui: X-Forwarded-For 400 before anything, a method other than GET 405; unknown /ui/ paths need the token."""
    async with run_agent(moto.url) as agent:
        xff = {"X-Forwarded-For": "10.0.0.1"}
        for path in ("/ui", "/ui/app.js"):
            assert (await agent.get(path, token=None, headers=xff)).status == 400
            assert (await agent.get(path, headers=xff, method="POST")).status == 400
            for method in ("POST", "PUT", "DELETE"):
                assert (await agent.get(path, token=None, method=method)).status == 405, (path, method)
        assert (await agent.get("/ui", token=None, headers={"Host": "evil.example"})).status == 400
        assert (await agent.get("/ui/secrets.json", token=None)).status == 403
        assert (await agent.get("/ui/secrets.json")).status == 404


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Headless Debian chromium at 1280 px, light theme, driven through /usr/bin/chromedriver; quit at teardown."""
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.fail("the browser test needs Debian's chromium and chromium-driver (make test installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        "--blink-settings=preferredColorScheme=1",  # light
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _start_agent(start: Callable[..., AgentProcess], endpoint: str, secrets: list[str]) -> str:
    """The agent as a child process (the browser blocks this thread), polling every second; its base URL."""
    port = free_port()
    proc = start(
        ["run", "--http-port", str(port), "--endpoint-url", endpoint, "--region", "us-east-1"],
        {"SECRETS_AGENT_PREFETCH_SECRETS": ",".join(secrets), "SECRETS_AGENT_REFRESH_INTERVAL_SECONDS": "1"},
    )
    proc.wait_for('"listening"', timeout=PAGE_TIMEOUT)
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=15) as reply:
                return bool(reply.status == 200)
        except OSError:  # URLError, and a read that timed out (not wrapped in URLError): ask again
            return False

    wait_until(ready, timeout=PAGE_TIMEOUT, interval=0.2, message="the agent to become ready")
    return base


def _sign_in(driver: WebDriver, base: str, token: str) -> None:
    driver.get(base + "/ui")
    field = driver.find_element(By.ID, "token")
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()


def _wait(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    return WebDriverWait(driver, PAGE_TIMEOUT, poll_frequency=0.2).until(condition, message=f"waited for {what}")


def test_browser_shows_secrets_and_a_rotation_without_reloading(
    sm: Any, moto: MotoServer, agent_process: Callable[..., AgentProcess], browser: WebDriver, tmp_path: Path
) -> None:
    """In chromium: the token shows every prefetched secret; a PutSecretValue appears on the timeline, no reload."""
    values = {f"ui/app-{n}": f"CANARY-VALUE-{n}-" + "9e1f" * 6 for n in range(3)}
    for name, value in values.items():
        sm.create_secret(Name=name, SecretString=value)
    base = _start_agent(agent_process, moto.url, list(values))
    _sign_in(browser, base, TOKEN)

    rows = _wait(
        browser,
        lambda d: len(found := d.find_elements(By.CSS_SELECTOR, "#secrets tbody tr")) == len(values) and found,
        "a table row per prefetched secret",
    )
    assert {row.get_attribute("data-secret") for row in rows} == set(values)
    shown = {figure.get_attribute("data-secret") for figure in browser.find_elements(By.CSS_SELECTOR, "figure")}
    assert shown == set(values)
    browser.execute_script("window.notReloaded = true;")

    rotated = "ui/app-1"
    new_version = sm.put_secret_value(SecretId=rotated, SecretString=values[rotated] + "-NEXT")["VersionId"]
    values[rotated + "#next"] = values[rotated] + "-NEXT"
    marker = f'figure[data-secret="{rotated}"] g.rotation[data-version="{new_version}"]'
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, marker), "the new version's marker on the timeline")
    label = browser.find_element(By.CSS_SELECTOR, marker + " text").text
    assert label.startswith(new_version[:8])
    row = browser.find_element(By.CSS_SELECTOR, f'#secrets tr[data-secret="{rotated}"]')
    assert new_version[:8] in row.text
    assert browser.execute_script("return window.notReloaded === true;")

    page = browser.page_source
    for value in values.values():
        assert value not in page
    assert TOKEN not in page
    assert browser.save_screenshot(str(tmp_path / "ui.png"))


def test_browser_wrong_token_shows_a_message_and_no_data(
    sm: Any, moto: MotoServer, agent_process: Callable[..., AgentProcess], browser: WebDriver
) -> None:
    """In chromium: a refused token shows a clear message and no secret name, table row or timeline."""
    sm.create_secret(Name="ui/hidden-name", SecretString="v")
    base = _start_agent(agent_process, moto.url, ["ui/hidden-name"])
    _sign_in(browser, base, TOKEN + "-wrong")
    message = _wait(
        browser, lambda d: (m := d.find_element(By.ID, "message")).is_displayed() and m.text and m, "the refusal"
    )
    assert "refused" in message.text and "403" in message.text
    assert browser.find_elements(By.CSS_SELECTOR, "#secrets tbody tr") == []
    assert browser.find_elements(By.CSS_SELECTOR, "figure") == []
    assert not browser.find_element(By.ID, "data").is_displayed()
    assert browser.find_element(By.ID, "token-form").is_displayed()
    assert "ui/hidden-name" not in browser.page_source


# Holds every /status answer, its body already read, until the test releases it: once released, the page's
# handling of it runs in microtasks, all done before the browser runs the test's next script.
_HOLD_FETCH = """
window.held = [];
const original = window.fetch;
window.fetch = (...args) => original(...args).then((reply) => reply.json().then((body) => new Promise((resolve) => {
  reply.json = () => Promise.resolve(body);
  window.held.push(() => resolve(reply));
})));
"""


def test_browser_forget_token_is_not_undone_by_an_answer_in_flight(
    sm: Any, moto: MotoServer, agent_process: Callable[..., AgentProcess], browser: WebDriver
) -> None:
    """In chromium: a /status answer arriving after "Forget token" is dropped: no data comes back without a token."""
    sm.create_secret(Name="ui/forgotten", SecretString="v")
    base = _start_agent(agent_process, moto.url, ["ui/forgotten"])
    _sign_in(browser, base, TOKEN)
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#secrets tbody tr"), "the table")
    browser.execute_script(_HOLD_FETCH)
    _wait(browser, lambda d: d.execute_script("return window.held.length > 0;"), "the next refresh in flight")
    browser.find_element(By.ID, "forget").click()
    assert browser.find_element(By.ID, "token-form").is_displayed()
    browser.execute_script("window.held.forEach((release) => release());")
    assert not browser.find_element(By.ID, "data").is_displayed()
    assert browser.find_elements(By.CSS_SELECTOR, "#secrets tbody tr") == []
    assert browser.find_element(By.ID, "token-form").is_displayed()
