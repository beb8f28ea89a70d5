"""The demo page's "wrong? tell us" control in headless Chromium against a real server with capture on: shown
under a classifier's answer, it sends the chosen label to POST /feedback, which records it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.images import sample
from tests.live_server import LiveServer, live_server
from tests.test_demo_page import CHROMIUM, demo_page, playwright_or_skip

pytestmark = pytest.mark.slow


@pytest.fixture
def capturing(tiny_model: Path, tmp_path: Path) -> Iterator[LiveServer]:
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); the browser test needs it")
    with live_server(tiny_model, tmp_path / "server.log", CAPTURE_DIR=str(tmp_path / "capture")) as s:
        yield s


def test_wrong_tell_us_sends_feedback(capturing: LiveServer, tmp_path: Path) -> None:
    sync_api = playwright_or_skip()
    expect = sync_api.expect
    image = tmp_path / "blue.png"
    sample("blue", size=96).save(image)
    with demo_page(sync_api, capturing.base) as page:
        expect(page.locator("#model-name")).to_have_text("colors")
        expect(page.locator("#feedback")).to_be_hidden()  # no answer yet
        page.set_input_files("#file", str(image))
        expect(page.locator("#label")).to_have_text("blue")
        expect(page.locator("#feedback")).to_be_visible()
        page.select_option("#feedback-label", "green")
        page.click("#feedback button[type=submit]")
        expect(page.locator("#status")).to_contain_text("recorded “green” as the right label")
        expect(page.locator("#feedback")).to_be_hidden()
    [day] = (tmp_path / "capture" / "feedback").glob("*.jsonl")
    [line] = [json.loads(x) for x in day.read_text().splitlines()]
    assert (line["label"], line["predicted"], line["agrees"]) == ("green", "blue", False)
