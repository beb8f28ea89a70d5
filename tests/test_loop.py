"""The loop of README "Improving the model from traffic", end to end in a real server process: serve with capture
on, upload images, send feedback, harvest into a copy of the training data, train one epoch, reload, and the new
version serves."""

from __future__ import annotations

import io
import json
import re
import shutil
import time
import zlib
from pathlib import Path

import httpx
import pytest

from tests.conftest import COLORS, copy_model, make_image, run_cli, train_tiny
from tests.live_server import LiveServer, live_server

pytestmark = pytest.mark.slow

ADMIN = "admin-key-0123456789abcdef"


def png(label: str, i: int) -> bytes:
    buffer = io.BytesIO()
    make_image(COLORS[label], seed=zlib.crc32(f"loop-{label}-{i}".encode())).save(buffer, "PNG")
    return buffer.getvalue()


def written(server: LiveServer) -> int:
    """Inputs the capture writer has stored (written or already there)."""
    text = httpx.get(f"{server.base}/metrics").text
    found = re.findall(r'^learnserve_capture_total\{outcome="(?:written|duplicate)"\} (\S+)$', text, re.M)
    return int(sum(float(n) for n in found))


def wait_for_writes(server: LiveServer, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while written(server) < n:
        assert time.monotonic() < deadline, f"capture wrote {written(server)} of {n}:\n{server.log_text()}"
        time.sleep(0.05)


def test_serve_capture_feedback_harvest_train_reload(tiny_model: Path, dataset: Path, tmp_path: Path) -> None:
    models, capture, data = tmp_path / "models", tmp_path / "capture", tmp_path / "data"
    copy_model(tiny_model, models)
    shutil.copytree(dataset, data)
    before = sum(1 for _ in data.rglob("*.png"))
    env = {"CAPTURE_DIR": str(capture), "CAPTURE": "uncertain:0.6,sample:1.0", "ADMIN_KEY": ADMIN}
    with (
        live_server(models, tmp_path / "server.log", **env) as server,
        httpx.Client(base_url=server.base) as http,
    ):
        old = http.get("/models/colors").json()["runtime"]["version"]
        assert http.get("/capture").json()["enabled"] is True
        sent = [(label, png(label, i)) for label in COLORS for i in range(2)]
        for label, image in sent:  # 1. upload
            r = http.post("/predict", files={"file": ("x.png", image, "image/png")})
            assert r.status_code == 200, r.text
            verdict = "correct" if r.json()["label"] == label else label
            # 2. say what it is
            f = http.post("/feedback", json={"request_id": r.headers["X-Request-ID"], "label": verdict})
            assert f.status_code == 200, f.text
            assert f.json()["label"] == label
        wait_for_writes(server, len(sent))
        assert "learnserve_feedback_total" in http.get("/metrics").text

        # 3. harvest into the training data
        code, out, err = run_cli("harvest", str(capture), "--into", str(data))
        assert code == 0, err
        assert f"added {len(sent)}: blue 2, green 2, red 2" in out
        assert sum(1 for _ in data.rglob("*.png")) == before + len(sent)

        # 4. train one epoch on it, 5. put it where the server reads and reload
        retrained = train_tiny(data, tmp_path / "new" / "colors.pkl", "--size", "32", "--epochs", "1")
        manifest = json.loads(retrained.with_suffix(".json").read_text())
        assert manifest["dataset"]["train_size"] + manifest["dataset"]["valid_size"] == before + len(sent)
        copy_model(retrained, models)
        reload = http.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"})
        assert reload.status_code == 200, reload.text

        r = http.post("/predict", files={"file": ("x.png", png("red", 99), "image/png")})
        assert r.status_code == 200
        assert r.headers["X-Model-Version"] != old
        assert r.headers["X-Model-Version"] == http.get("/models/colors").json()["runtime"]["version"]
