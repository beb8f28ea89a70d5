"""X-Request-ID on every answer (errors, 413s, 500s included), and in every log line of the request."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.api.logs import log_config
from app.api.request_id import accept_or_make
from tests.images import encode, sample

GENERATED = re.compile(r"[0-9a-f]{32}")


def png() -> bytes:
    return encode(sample("green"), "PNG")


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("abc-123", True),
        ("trace=4bf92f3577b34da6a3ce929d0e0e4736;span=00f067aa0ba902b7", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("", False),
        ("has space", False),
        ("forged\nINFO learnserve: fake line", False),
        ("caf\u00e9", False),
    ],
)
def test_caller_ids_are_kept_only_when_safe(given: str, kept: bool) -> None:
    result = accept_or_make(given)
    assert (result == given) is kept
    if not kept:
        assert GENERATED.fullmatch(result)


def test_every_answer_carries_an_id(client: TestClient) -> None:
    answers = [
        client.post("/predict", files={"file": ("x.png", png(), "image/png")}),
        client.post("/predict", files={"file": ("x.txt", b"text", "text/plain")}),  # 415 from a handler
        client.get("/nope"),  # 404 from the router
        client.post(
            "/predict", content=b"\0" * 300_000, headers={"Content-Type": "multipart/form-data; boundary=x"}
        ),
        client.get("/metrics"),
        client.get("/"),
    ]
    assert [r.status_code for r in answers] == [200, 415, 404, 413, 200, 200]
    ids = [r.headers["x-request-id"] for r in answers]
    assert all(GENERATED.fullmatch(i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_caller_id_is_echoed_and_a_bad_one_replaced(client: TestClient) -> None:
    r = client.get("/health/live", headers={"X-Request-ID": "job-17/step-3"})
    assert r.headers["x-request-id"] == "job-17/step-3"
    r = client.get("/health/live", headers={"X-Request-ID": "y" * 500})
    assert GENERATED.fullmatch(r.headers["x-request-id"])


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The server's own JSON log configuration, writing to a buffer instead of stderr."""
    config = log_config("info", "json")
    config["handlers"]["stderr"]["stream"] = buffer = io.StringIO()
    logger = logging.getLogger("learnserve")
    saved = logger.handlers[:], logger.level, logger.propagate
    logging.config.dictConfig({**config, "loggers": {"learnserve": config["loggers"]["learnserve"]}})
    handler = logger.handlers[0]

    class Flushed(io.StringIO):  # lines are written by a background thread: wait for it before reading
        def getvalue(self) -> str:
            handler.flush()
            return buffer.getvalue()

    try:
        yield Flushed()
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved


def test_log_lines_inside_a_request_carry_its_id_and_a_500_answers_it(
    settings, captured: io.StringIO
) -> None:  # type: ignore[no-untyped-def]
    from app.main import create_app

    app = create_app(settings)
    log = logging.getLogger("learnserve.test")

    @app.get("/boom")
    def boom() -> None:  # a plain def: runs in the thread pool, which must see the ID too
        log.info("about to fail")
        raise RuntimeError("bug")

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom", headers={"X-Request-ID": "req-500"})
    assert r.status_code == 500
    assert r.json()["code"] == "internal_error"
    assert r.headers["x-request-id"] == "req-500"
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    mine = [line for line in lines if line["request_id"] == "req-500"]
    assert [line["message"] for line in mine] == ["about to fail", "unexpected error on GET /boom"]
    assert "RuntimeError: bug" in mine[1]["exception"]
    assert {line["request_id"] for line in lines if "ready: serving" in line["message"]} == {
        "-"
    }  # startup: no request


def test_plain_format_shows_the_id_in_brackets() -> None:
    formatter = logging.Formatter(log_config("info")["formatters"]["plain"]["format"])
    record = logging.LogRecord("learnserve", logging.INFO, __file__, 1, "hello", None, None)
    record.request_id = "abc"
    assert formatter.format(record).endswith("learnserve [abc]: hello")
