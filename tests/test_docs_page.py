"""Swagger UI and ReDoc work without internet: their assets come from this server, and a real browser (Debian's
Chromium, driven by Playwright) loads /docs, sees the operations and runs "Try it out" on /predict with a real file,
while every request that would leave this machine is blocked and recorded."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.images import sample
from tests.live_server import LiveServer, live_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip


def test_docs_pages_use_only_local_assets(client: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        r = client.get(page)
        assert r.status_code == 200
        assert "cdn." not in r.text
        assert "fonts.googleapis" not in r.text
        for asset in (
            "/static/docs/swagger-ui-bundle.js",
            "/static/docs/swagger-ui.css",
            "/static/docs/redoc.standalone.js",
        ):
            if asset in r.text:
                served = client.get(asset)
                assert served.status_code == 200
                assert len(served.content) > 100_000
    assert client.get("/docs/oauth2-redirect").status_code == 200


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); the browser test needs it")
    with live_server(tiny_model, tmp_path_factory.mktemp("docs") / "server.log") as s:
        yield s


@pytest.mark.slow
def test_try_it_out_in_swagger_ui_offline(server: LiveServer, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")
    image = tmp_path / "green.png"
    sample("green", size=64).save(image)
    outside: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})

            def only_local(route):  # type: ignore[no-untyped-def]
                if route.request.url.startswith(server.base):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            page.route("**/*", only_local)
            page.goto(f"{server.base}/docs")
            block = page.locator("#operations-predict-predict_predict_post")
            block.wait_for(timeout=30_000)
            assert page.locator(".opblock").count() >= 10  # every operation is listed
            block.locator(".opblock-summary").click()
            block.locator("button.try-out__btn").click()
            block.locator("input[type=file]").set_input_files(str(image))
            block.locator("button.execute").click()
            status = block.locator(".live-responses-table tr.response .response-col_status").first
            status.wait_for(timeout=30_000)
            assert status.text_content().strip() == "200"
            body = block.locator(".live-responses-table .microlight").first.text_content() or ""
            assert '"label": "green"' in body or '"label":"green"' in body
            page.screenshot(path=str(tmp_path / "swagger.png"), full_page=False)
            assert outside == [], f"Swagger UI tried to reach the internet: {outside}"
            page.goto(f"{server.base}/redoc")
            page.locator("h2", has_text="Classify one image with the default model").first.wait_for(
                timeout=30_000
            )
        finally:
            browser.close()
    # ReDoc renders fully offline; only its "API docs by Redocly" badge image comes from Redocly's CDN.
    assert [u for u in outside if "cdn.redoc.ly/redoc/logo-mini.svg" not in u] == [], outside
