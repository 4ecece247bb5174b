"""Make docs/ui.png: the /ui page of a real agent in a demo-like state, light theme, 1280 px wide.

Run from the repository root (needs moto, selenium, Debian's chromium and chromium-driver)::

    PYTHONPATH=. .venv/bin/python docs/ui_screenshot.py [docs/ui.png [WIDTH [dark]]]

(the committed one: the defaults, 1280 px, light; a width and ``dark`` check other looks).

Everything on the page is the agent's own account, nothing is drawn by hand: a
real moto_server upstream, a real agent (in this process) behind the test
suite's fault proxy, four secrets, and three clients reading them. Rotation
history older than this run comes the way a restarted agent gets it: from an
audit file of earlier runs (``[audit] path``), written here with rotations
over the last days; the agent restores it at start. Then, live: one rotation
found by polling, an AWSPENDING version that lingers past the grace period
(failed), a schedule whose next rotation is a day past (overdue: upstream's
dates for that secret moved two days back by the proxy), a client still
reading the previous version, and one denied read. Reads are live too, so
they fill only the current hour of the strips.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import boto3
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from agent.config import load_settings
from agent.dev.emulator import MotoServer, free_port
from agent.server.lifecycle import Started, serve
from tests.support.faultproxy import FaultProxy

REGION = "us-east-1"
HOUR = 3600.0
DAY = 24 * HOUR
TOKENS = {name: f"{name}-{secrets.token_hex(8)}" for name in ("shared", "api", "worker", "billing")}
CLIENTS = """
[[clients]]
name = "api"
token = "env:API_TOKEN"
allow = ["prod/*", "demo/*"]

[[clients]]
name = "worker"
token = "env:WORKER_TOKEN"
allow = ["prod/db/*"]

[[clients]]
name = "billing"
token = "env:BILLING_TOKEN"
allow = ["prod/payments/*"]
"""
# Past rotations per secret, oldest first: (hours ago, how, detection delay in seconds).
PAST = {
    "prod/db/password": [
        (29, "poll", 17.2),
        (22, "poll", 8.4),
        (15, "event", 1.3),
        (8, "event", 0.9),
        (1.5, "poll", 21.0),
    ],
    "prod/payments/api-key": [(98, "event", 1.1), (74, "event", 0.8), (50, "event", 1.6)],
    "prod/search/token": [
        (26, "poll", 12.0),
        (20, "poll", 26.5),
        (14, "poll", 3.1),
        (8, "poll", 18.7),
        (2, "poll", 9.9),
    ],
    "demo/api-key": [(23, "poll", 14.0), (17, "refreshNow", 0.2), (11, "poll", 27.3), (5, "poll", 6.6)],
}

# Rotation schedules (days): the database weekly, payments daily.
SCHEDULES = {"prod/db/password": 7, "prod/payments/api-key": 1}


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _versions(sm: Any, name: str, count: int, schedule_days: int | None) -> tuple[str, list[str]]:
    """Create ``name`` with ``count`` versions, each a new AWSCURRENT; its ARN and version ids, oldest first.

    With ``schedule_days`` the second version comes from RotateSecret (which sets the schedule; moto's
    Lambda-less rotation leaves that version without a value, so a PutSecretValue always follows).
    """
    created = sm.create_secret(Name=name, SecretString=json.dumps({"value": secrets.token_urlsafe(16)}))
    ids = [created["VersionId"]]
    if schedule_days is not None:
        rules = {"AutomaticallyAfterDays": schedule_days}
        ids.append(sm.rotate_secret(SecretId=name, RotationRules=rules)["VersionId"])
    while len(ids) < count:
        ids.append(sm.put_secret_value(SecretId=name, SecretString=secrets.token_urlsafe(16))["VersionId"])
    return created["ARN"], ids


def _audit_lines(arn: str, name: str, ids: list[str], past: list[tuple[float, str, float]], now: float) -> list[str]:
    lines = []
    for index, (hours, how, delay) in enumerate(past):
        record = {
            "time": _stamp(now - hours * HOUR),
            "type": "rotation",
            "name": name,
            "arn": arn,
            "old_version": ids[index - 1] if index else None,
            "new_version": ids[index],
            "how": how,
            "delay_seconds": delay,
        }
        lines.append(json.dumps(record) + "\n")
    return lines


def _shift_one(name: str, seconds: float) -> Any:
    """A proxy rewrite moving one secret's dates by ``seconds``, wherever a reply describes it."""
    keys = {"CreatedDate", "LastChangedDate", "LastAccessedDate", "LastRotatedDate", "NextRotationDate"}

    def shift(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in keys and isinstance(value, int | float):
                    node[key] = value + seconds
                else:
                    shift(value)
        elif isinstance(node, list):
            for item in node:
                shift(item)

    def find(node: Any) -> None:  # DescribeSecret and ListSecretVersionIds at the top, ListSecrets in SecretList
        if isinstance(node, dict):
            if node.get("Name") == name:
                shift(node)
                return
            for value in node.values():
                find(value)
        elif isinstance(node, list):
            for item in node:
                find(item)

    def rewrite(_operation: str, reply: dict[str, Any]) -> None:
        find(reply)

    return rewrite


async def _read(session: aiohttp.ClientSession, base: str, client: str, path: str, times: int) -> None:
    headers = {"X-Aws-Parameters-Secrets-Token": TOKENS[client]}
    for _ in range(times):
        async with session.get(base + path, headers=headers) as reply:
            await reply.read()


def _screenshot(base: str, out: Path, width: int, dark: bool) -> None:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={width},900"):
        options.add_argument(argument)
    options.add_argument(f"--blink-settings=preferredColorScheme={0 if dark else 1}")
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    try:
        driver.get(base + "/ui")
        driver.find_element(By.ID, "token").send_keys(TOKENS["shared"])
        driver.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()
        WebDriverWait(driver, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "figure")) == len(PAST))
        time.sleep(1)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": int(height), "deviceScaleFactor": 1, "mobile": False},
        )
        time.sleep(0.5)
        driver.save_screenshot(str(out))
    finally:
        driver.quit()


async def main(out: Path, width: int = 1280, dark: bool = False) -> None:
    """Build the state, screenshot the page into ``out``, stop everything and remove the temporary files."""
    moto = MotoServer().start()
    work = Path(tempfile.mkdtemp(prefix="ui-shot-"))
    proxy = await FaultProxy(moto.url).start()
    try:
        sm = boto3.client("secretsmanager", region_name=REGION, endpoint_url=moto.url)
        now = time.time()
        audit: list[str] = []
        ids: dict[str, list[str]] = {}
        for name, past in PAST.items():
            arn, ids[name] = _versions(sm, name, len(past), SCHEDULES.get(name))
            audit += _audit_lines(arn, name, ids[name], past, now)
        # Payments rotates daily; its dates moved two days back make the next rotation a day overdue.
        proxy.rewrites.append(_shift_one("prod/payments/api-key", -2 * DAY))
        audit_path = work / "audit.log"
        audit_path.write_text("".join(sorted(audit, key=lambda line: json.loads(line)["time"])))
        config = work / "agent.toml"
        config.write_text(f'[audit]\npath = "{audit_path}"\n' + CLIENTS)
        settings = load_settings(
            str(config),
            environ={
                "AWS_TOKEN": TOKENS["shared"],
                "API_TOKEN": TOKENS["api"],
                "WORKER_TOKEN": TOKENS["worker"],
                "BILLING_TOKEN": TOKENS["billing"],
            },
            overrides={
                "server.http_port": free_port(),
                "aws.endpoint_url": proxy.url,
                "aws.region": REGION,
                "prefetch.secrets": list(PAST),
                "refresh.interval_seconds": 1,
                "status.rotation_grace_seconds": 5,
                "status.health_interval_seconds": 0.5,
                "log.level": "warning",
            },
        )
        loop = asyncio.get_running_loop()
        started: asyncio.Future[Started] = loop.create_future()
        task = asyncio.create_task(serve(settings, on_started=started.set_result, install_signals=False))
        running = await started
        base = f"http://{running.tcp[0]}:{running.tcp[1]}"
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                async with session.get(base + "/readyz") as reply:
                    if reply.status == 200:
                        break
                await asyncio.sleep(0.1)
            while proxy.calls["ListSecretVersionIds"] < len(PAST):  # history seeded: what follows is live
                await asyncio.sleep(0.1)
            await asyncio.sleep(1)
            # The database password rotates now; the worker keeps reading the previous version a while.
            sm.put_secret_value(SecretId="prod/db/password", SecretString=secrets.token_urlsafe(16))
            # The search token's rotation stalls: AWSPENDING never becomes current.
            sm.put_secret_value(
                SecretId="prod/search/token", SecretString=secrets.token_urlsafe(16), VersionStages=["AWSPENDING"]
            )
            await asyncio.sleep(3)
            sm.put_secret_value(SecretId="demo/api-key", SecretString=secrets.token_urlsafe(16))
            await _read(session, base, "api", "/v1/prod/db/password", 240)
            await _read(session, base, "worker", "/v1/prod/db/password?versionStage=AWSPREVIOUS", 12)
            await _read(session, base, "worker", "/v1/prod/db/password", 60)
            await _read(session, base, "worker", "/v1/prod/payments/api-key", 2)  # denied
            await _read(session, base, "billing", "/v1/prod/payments/api-key", 90)
            await _read(session, base, "api", "/v1/prod/payments/api-key", 30)
            await _read(session, base, "api", "/v1/prod/search/token", 120)
            await _read(session, base, "api", "/v1/demo/api-key", 45)
            await asyncio.sleep(4)  # past the grace: the lingering AWSPENDING makes the search token failed
            await asyncio.to_thread(_screenshot, base, out, width, dark)
        running.stop.set()
        await task
    finally:
        await proxy.stop()
        moto.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    # Fake credentials for moto, as `secrets-agent demo` sets them: a real profile never reaches it.
    os.environ.update({"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo", "AWS_SESSION_TOKEN": "demo"})
    args = sys.argv[1:]
    asyncio.run(main(Path(args[0] if args else "docs/ui.png"), int(args[1]) if len(args) > 1 else 1280, "dark" in args))
