"""The consent flow in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) through selenium, against the app under hypercorn on PostgreSQL.

The app's "start" page redirects the browser to ``/oauth/authorize``; the user signs
in on the log-in form, sees the consent page (saved as a screenshot under
``tests/artifacts/``), presses Allow, and the browser lands on the app's loopback
callback with the code, which the test exchanges with its PKCE verifier.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from quart_api.oauth.pkce import s256_challenge
from tests.api.conftest import PASSWORD
from tests.oauth.serving import ROOT, register_app, serve

pytestmark = pytest.mark.slow

ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=900,1000",
)  # fmt: skip


class _App:
    """The third-party app's loopback server: ``/start`` redirects to the authorization
    URL, ``/callback`` records what the authorization server sent back."""

    def __init__(self) -> None:
        self.authorize_url = ""
        self.callbacks: list[dict[str, list[str]]] = []
        self.received = threading.Event()
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path == "/start":
                    self.send_response(302)
                    self.send_header("Location", app.authorize_url)
                    self.end_headers()
                    return
                if parts.path != "/callback":  # e.g. the browser's /favicon.ico
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                app.callbacks.append(parse_qs(parts.query))
                app.received.set()
                body = b"<html><body><h1 id='done'>Authorized, back in the app.</h1></body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _App:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _stuck(browser: webdriver.Chrome) -> str:
    return f"the browser is at {browser.current_url}"


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    missing = "is needed: `make servers` installs it (Debian: chromium, chromium-driver)"
    assert chromium is not None, f"chromium {missing}"
    assert chromedriver is not None, f"chromedriver {missing}"
    profile = tempfile.mkdtemp(prefix="quart-api-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    # The driver is Debian's: selenium must not look for (or download) another one.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_consent_in_a_real_browser_from_the_apps_redirect_to_its_callback(
    pg_database: str, tmp_path: Path, browser: webdriver.Chrome
) -> None:
    with serve(pg_database, tmp_path / "hypercorn.log") as served, _App() as third_party:
        registered = register_app(served, "http://127.0.0.1/callback")
        verifier = secrets.token_urlsafe(48)
        state = secrets.token_urlsafe(16)
        redirect_uri = f"http://127.0.0.1:{third_party.port}/callback"
        third_party.authorize_url = f"{served.url}/oauth/authorize?" + urlencode(
            {"response_type": "code", "client_id": registered["client_id"],
             "redirect_uri": redirect_uri, "scope": "users:read", "state": state,
             "code_challenge": s256_challenge(verifier), "code_challenge_method": "S256"}
        )  # fmt: skip
        wait = WebDriverWait(browser, 20)

        browser.get(f"http://127.0.0.1:{third_party.port}/start")
        wait.until(lambda d: d.find_elements(By.ID, "sign-in"))
        assert "Sign in to authorize Photo Printer" in browser.page_source
        browser.find_element(By.ID, "username").send_keys("alice")
        browser.find_element(By.ID, "password").send_keys(PASSWORD)
        browser.find_element(By.ID, "sign-in").click()

        wait.until(lambda d: d.find_elements(By.ID, "allow"), message=_stuck(browser))
        page = browser.find_element(By.TAG_NAME, "main").text
        assert "Authorize Photo Printer?" in page
        assert "See your profile, including your e-mail address" in page
        ARTIFACTS.mkdir(exist_ok=True)
        screenshot = ARTIFACTS / "oauth-consent.png"
        assert browser.save_screenshot(str(screenshot))
        print(f"consent page screenshot: {screenshot}")
        browser.find_element(By.ID, "allow").click()

        assert third_party.received.wait(20), f"no callback; browser at {browser.current_url}"
        wait.until(lambda d: d.find_elements(By.ID, "done"))
        (params,) = third_party.callbacks
        assert params["state"] == [state]
        assert params["iss"] == [served.url]
        exchanged = httpx.post(
            f"{served.url}/oauth/token",
            data={"grant_type": "authorization_code", "code": params["code"][0],
                  "redirect_uri": redirect_uri, "code_verifier": verifier,
                  "client_id": registered["client_id"]},
            timeout=10,
        )  # fmt: skip
        assert exchanged.status_code == 200, exchanged.text
        me = httpx.get(
            f"{served.url}/api/v1/users/current",
            headers={"Authorization": f"Bearer {exchanged.json()['access_token']}"},
            timeout=10,
        )
        assert me.json()["data"]["username"] == "alice"
    assert "Traceback" not in (tmp_path / "hypercorn.log").read_text()
