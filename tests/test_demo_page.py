"""The demo page at GET /: served with a strict Content-Security-Policy, and used for real in headless Chromium
(Debian's `chromium`, driven by Playwright's Python package) against a real server that needs an API key."""

from __future__ import annotations

import base64
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.api.routes.demo import STATIC
from tests.images import encode, sample
from tests.live_server import LiveServer, live_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip
KEY = "demo-page-key"
SCREENSHOT_COPY = Path("/tmp/learnserve-demo.png")


def playwright_or_skip() -> Any:
    """playwright's sync API for a browser test, or the test skipped saying what is missing."""
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); the browser test needs it")
    return pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")


@contextmanager
def demo_page(sync_api: Any, base: str, height: int = 760) -> Iterator[Any]:
    """The demo page at `base` in headless Chromium; on leaving, no console error or page error may have happened."""
    problems: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1180, "height": height})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(f"{base}/")
            yield page
        finally:
            browser.close()
    assert not problems, problems


def test_page_and_assets_are_served_with_a_strict_policy(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "default-src 'none'" in csp
    assert "unsafe-inline" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', r.text):
        assert client.get(asset).status_code == 200, asset
    assert 'href="/docs"' in r.text
    assert "http://" not in r.text
    assert "https://" not in r.text
    assert "/" not in client.get("/openapi.json").json()["paths"]


def test_script_never_writes_markup() -> None:
    """Server and user strings reach the page as text only (XSS): no HTML-parsing sinks in the script."""
    script = (STATIC / "demo.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
    assert "localStorage" not in script
    assert "sessionStorage" not in script


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); the browser test needs it")
    log = tmp_path_factory.mktemp("demo") / "server.log"
    with live_server(tiny_model, log, API_KEY=KEY) as s:
        yield s


@pytest.mark.slow
def test_upload_in_a_real_browser(server: LiveServer, tiny_model: Path, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")
    blue = tmp_path / "blue.png"
    sample("blue", size=96).save(blue)
    red_png = base64.b64encode(encode(sample("red", size=96), "PNG")).decode()
    expect = (
        sync_api.expect
    )  # web-first assertions: they wait without evaluating strings, which the CSP forbids
    problems: list[str] = []

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1180, "height": 720})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(f"{server.base}/")

            # The server wants a key: the page says so and asks for it.
            page.wait_for_selector("#key-panel:not([hidden])")
            assert page.text_content("#model-name") == "API key needed"
            page.fill("#api-key", KEY)
            page.click("#key-form button")
            expect(page.locator("#model-name")).to_have_text(tiny_model.stem)
            expect(page.locator("#key-panel")).to_be_hidden()
            assert re.fullmatch(r"\d{1,3}\.\d%", page.text_content("#model-accuracy") or "")
            assert page.text_content("#model-classes") == "3"

            # Choose a file.
            page.set_input_files("#file", str(blue))
            expect(page.locator("#label")).to_have_text("blue")
            assert page.locator("#bars li").count() == 3
            assert page.locator("#bars li.best .bar-name").text_content() == "blue"
            assert "request " in (page.text_content("#status") or "")
            expect(page.locator("#feedback")).to_be_hidden()  # capture is off: no "wrong? tell us"

            # Drop a file (a synthetic drop event carrying a real File).
            page.evaluate(
                """async (b64) => {
                    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                    const data = new DataTransfer();
                    data.items.add(new File([bytes], "red.png", { type: "image/png" }));
                    document.querySelector("#drop").dispatchEvent(
                        new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
                }""",
                red_png,
            )
            expect(page.locator("#label")).to_have_text("red")
            page.wait_for_timeout(400)  # let the bars finish their transition before the picture
            screenshot = tmp_path / "learnserve-demo.png"
            page.screenshot(path=str(screenshot), full_page=True)

            # A file the page refuses itself: the previous image and answer go, they must not look like its.
            notes = tmp_path / "notes.txt"
            notes.write_text("not an image")
            page.set_input_files("#file", str(notes))
            expect(page.locator("#status")).to_contain_text("is not an image")
            expect(page.locator("#preview")).to_be_hidden()
            expect(page.locator("#label")).to_have_text("–")
            assert page.locator("#bars li").count() == 0

            # Probabilities that would round to 100% and 0% keep a decimal more.
            answer = (
                '{"label":"blue","probability":0.99981,"top":[{"label":"blue","probability":0.99981},'
                '{"label":"red","probability":0.00017},{"label":"green","probability":0.00002}]}'
            )
            page.route(
                "**/predict?*",
                lambda route: route.fulfill(status=200, content_type="application/json", body=answer),
            )
            page.set_input_files("#file", str(blue))
            expect(page.locator("#confidence")).to_have_text("99.98% probability")
            values = page.locator("#bars .bar-value").all_text_contents()
            assert values == ["99.98%", "0.02%", "<0.01%"], values
        finally:
            browser.close()

    shutil.copy(screenshot, SCREENSHOT_COPY)
    print(f"\nscreenshot of the demo page: {screenshot} (copied to {SCREENSHOT_COPY})")
    assert screenshot.stat().st_size > 10_000
    assert not [x for x in problems if "401" not in x], problems  # the first, keyless /metadata is a 401
