"""Capture and POST /feedback through the app (its lifespan runs): what is kept, the opt-out header, every 4xx of
/feedback, answers older than memory found on disk, the metrics, a flood within the bound, an unwritable folder."""

from __future__ import annotations

import io
import json
import logging
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app.config import Settings
from app.core.capture import Answered
from app.main import create_app
from tests.conftest import COLORS, make_image


def png(label: str, i: int) -> bytes:
    buffer = io.BytesIO()
    make_image(COLORS[label], seed=zlib.crc32(f"traffic-{label}-{i}".encode())).save(buffer, "PNG")
    return buffer.getvalue()


@contextmanager
def serving(settings: Settings, **update: object) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update=update))) as client:
        yield client


def predict(client: TestClient, data: bytes, **headers: str) -> str:
    r = client.post("/predict", files={"file": ("x.png", data, "image/png")}, headers=headers)
    assert r.status_code == 200, r.text
    return r.headers["X-Request-ID"]


def lines(folder: Path) -> list[dict[str, object]]:
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl")) for line in f.read_text().splitlines()]


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_capture_is_off_by_default(client: TestClient) -> None:
    assert client.get("/capture").json() == {
        "enabled": False,
        "policy": None,
        "opt_out_header": "X-Capture: off",
    }
    r = client.post("/feedback", json={"request_id": "x", "label": "red"})
    assert r.status_code == 409
    assert r.json()["code"] == "capture_off"


def test_kept_inputs_feedback_and_its_refusals(settings: Settings, tmp_path: Path) -> None:
    capture = tmp_path / "capture"
    with serving(settings, capture_dir=capture, capture="sample:1.0") as client:
        assert client.get("/capture").json()["policy"] == "sample:1"
        kept = predict(client, png("red", 0))
        skipped = predict(client, png("blue", 0), **{"X-Capture": "off"})
        answered = client.post("/predict", files={"file": ("x.png", png("red", 0), "image/png")})
        predicted = answered.json()["label"]
        other = next(c for c in COLORS if c != predicted)

        right = client.post("/feedback", json={"request_id": kept, "label": "correct"})
        assert right.status_code == 200, right.text
        assert right.json() == {"request_id": kept, "model": "colors", "version": right.json()["version"],
                                "label": predicted, "predicted": predicted, "agrees": True, "captured": True}  # fmt: skip
        wrong = client.post("/feedback", json={"request_id": skipped, "label": other}).json()
        assert wrong["captured"] is False  # opted out: the label alone is still recorded
        assert wrong["label"] == other

        refusals = {
            "unknown id": ({"request_id": "never-answered", "label": "red"}, 404, "unknown_request"),
            "unknown label": ({"request_id": kept, "label": "purple"}, 422, "unknown_label"),
            "no label": ({"request_id": kept}, 422, "validation_error"),
            "extra field": ({"request_id": kept, "label": "red", "x": 1}, 422, "validation_error"),
        }
        for what, (body, status, code) in refusals.items():
            r = client.post("/feedback", json=body)
            assert (r.status_code, r.json()["code"]) == (status, code), what
        assert "purple" in client.post("/feedback", json=refusals["unknown label"][0]).json()["detail"]
        garbled = client.post("/feedback", content=b"\x89{", headers={"Content-Type": "application/json"})
        assert (garbled.status_code, garbled.json()["code"]) == (400, "bad_request")
        big = client.post("/feedback", content=b'{"request_id": "' + b"x" * 20_000 + b'"}',
                          headers={"Content-Type": "application/json"})  # fmt: skip
        assert big.status_code == 413

        metrics = client.get("/metrics").text
        assert 'learnserve_feedback_total{model="colors",verdict="agree",version=' in metrics
        assert 'learnserve_feedback_disagreement{model="colors",version=' in metrics
        assert 'learnserve_capture_total{outcome="opted_out"} 1.0' in metrics
    # the lifespan's end wrote what was queued
    records = lines(capture / "records")
    assert [r["request_id"] for r in records] == [kept, answered.headers["X-Request-ID"]]
    assert records[0]["answer"]["label"] == predicted
    assert records[0]["reason"] == "sample"
    assert (capture / "blobs" / records[0]["sha256"][:2] / records[0]["sha256"]).read_bytes() == png("red", 0)
    assert records[0]["sha256"] == records[1]["sha256"]  # the same bytes, stored once
    feedback = lines(capture / "feedback")
    assert [(f["request_id"], f["agrees"]) for f in feedback] == [(kept, True), (skipped, False)]


def test_feedback_for_an_answer_older_than_memory_is_found_on_disk(
    settings: Settings, tmp_path: Path
) -> None:
    capture = tmp_path / "capture"
    with serving(settings, capture_dir=capture, capture="sample:1.0", capture_remember=1) as client:
        first = predict(client, png("green", 1))
        predict(client, png("green", 2))
    with serving(settings, capture_dir=capture, capture="sample:1.0") as client:  # a restart: memory is empty
        r = client.post("/feedback", json={"request_id": first, "label": "green"})
        assert r.status_code == 200, r.text
        assert r.json()["captured"] is True


def test_feedback_needs_the_api_key_when_one_is_set(settings: Settings, tmp_path: Path) -> None:
    key = "k-0123456789abcdef"
    with serving(settings, capture_dir=tmp_path, api_key=SecretStr(key)) as client:
        r = client.post("/feedback", json={"request_id": "x", "label": "red"})
        assert r.status_code == 401
        r = client.post("/feedback", json={"request_id": "x", "label": "red"}, headers={"X-API-Key": key})
        assert r.status_code == 404
        assert client.get("/capture").status_code == 200  # the demo page asks before any key is typed


def test_a_flood_of_uploads_stays_within_the_bound(settings: Settings, tmp_path: Path) -> None:
    capture, bound = tmp_path / "capture", 60_000
    with serving(settings, capture_dir=capture, capture="sample:1.0", capture_max_mb=bound / 2**20) as client:
        for i in range(60):  # about 3 KB each: three times the bound
            predict(client, png("blue", 100 + i))
        assert client.get("/health/live").status_code == 200
    assert disk_bytes(capture) <= bound
    records = lines(capture / "records")
    assert records  # the newest are kept


def test_an_unwritable_folder_keeps_serving(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    with caplog.at_level(logging.ERROR, logger="learnserve"):
        with serving(settings, capture_dir=tmp_path / "a-file" / "capture", capture="sample:1.0") as client:
            ids = [predict(client, png("red", i)) for i in range(3)]
            r = client.post("/feedback", json={"request_id": ids[0], "label": "red"})
            assert r.status_code == 503
            assert r.json()["code"] == "capture_unavailable"
        assert len([r for r in caplog.records if "capture: cannot write" in r.message]) == 1


def test_feedback_on_a_model_without_classes_is_refused(settings: Settings, tmp_path: Path) -> None:
    """A regression's or key points' answer has no label to correct (their inputs are kept by `sample` only)."""
    with serving(settings, capture_dir=tmp_path) as client:
        capture = client.app_state["capture"]  # the lifespan's own object
        capture.recent.put("r-values", Answered("brightness", "v1", "regression", None, ["value_1"], True))
        r = client.post("/feedback", json={"request_id": "r-values", "label": "value_1"})
        assert (r.status_code, r.json()["code"]) == (409, "feedback_unsupported")
