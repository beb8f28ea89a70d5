"""Zero-downtime reload in a real server process: SIGHUP under concurrent load swaps versions without one failed
request, a corrupt replacement leaves the old version serving, a removed file is unloaded."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from tests.conftest import copy_model
from tests.images import encode, sample
from tests.live_server import LiveServer, live_server
from training.manifest import manifest_path, sha256_file

pytestmark = pytest.mark.slow

PNG = encode(sample("green", seed=3), "PNG")


def versions_of(server: LiveServer) -> dict[str, str | None]:
    return {m["name"]: m["version"] for m in httpx.get(f"{server.base}/models").json()["models"]}


def wait_for(condition, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_sighup_under_load_swaps_versions_without_a_failed_request(
    tiny_model: Path, second_model: Path, colors_v2: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "models"
    copy_model(tiny_model, repo)
    copy_model(second_model, repo)
    old, new = sha256_file(tiny_model)[:12], sha256_file(colors_v2)[:12]
    seen: dict[int, list[str]] = defaultdict(list)
    failures: list[str] = []
    not_ready: list[int] = []
    stop = threading.Event()

    def client(i: int, base: str) -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            while not stop.is_set():
                r = http.post("/models/colors/predict", files={"file": ("g.png", PNG, "image/png")})
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text}")
                else:
                    seen[i].append(r.headers["x-model-version"])

    def probe(base: str) -> None:
        while not stop.is_set():
            if (status := httpx.get(f"{base}/health/ready", timeout=10).status_code) != 200:
                not_ready.append(status)
            time.sleep(0.02)

    with live_server(repo, tmp_path / "server.log", MAX_WAIT_MS="5") as server:
        threads = [threading.Thread(target=client, args=(i, server.base)) for i in range(4)]
        threads.append(threading.Thread(target=probe, args=(server.base,)))
        for t in threads:
            t.start()
        try:
            wait_for(lambda: sum(map(len, seen.values())) > 20)
            copy_model(colors_v2, repo)
            server.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: versions_of(server)["colors"] == new)
            before = sum(map(len, seen.values()))
            wait_for(lambda: sum(map(len, seen.values())) > before + 20)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        assert not failures, failures[:3]
        assert not not_ready, "readiness must stay 200 during a reload"
        for answers in seen.values():  # each client's requests run one after another: old ones, then new ones
            assert answers[0] == old
            assert answers[-1] == new
            switch = answers.index(new)
            assert set(answers[switch:]) == {new}, answers
        log = server.log_text()
        assert f"model colors version {new} ready" in log


def test_corrupt_replacement_keeps_the_old_version_and_removal_unloads(
    tiny_model: Path, second_model: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "models"
    copy_model(tiny_model, repo)
    copy_model(second_model, repo)
    version = sha256_file(tiny_model)[:12]
    with live_server(repo, tmp_path / "server.log") as server:
        # a truncated copy: the manifest's sha256 no longer matches, so nothing is unpickled
        staged = repo / ".colors.tmp"
        staged.write_bytes(tiny_model.read_bytes()[:1000])
        staged.chmod(0o644)
        staged.replace(repo / "colors.pkl")
        (repo / "shades.pkl").unlink()
        manifest_path(repo / "shades.pkl").unlink()
        server.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "shades" not in versions_of(server))
        models = {m["name"]: m for m in httpx.get(f"{server.base}/models").json()["models"]}
        assert models["colors"]["version"] == version
        assert "changed after export" in models["colors"]["last_reload_error"]
        r = httpx.post(f"{server.base}/models/colors/predict", files={"file": ("g.png", PNG, "image/png")})
        assert r.status_code == 200
        assert r.headers["x-model-version"] == version
        gone = httpx.post(f"{server.base}/models/shades/predict", files={"file": ("g.png", PNG, "image/png")})
        assert gone.status_code == 404
        assert gone.json()["code"] == "model_not_found"
        assert "model colors cannot be loaded" in server.log_text()
        assert "the running version keeps serving" in server.log_text()
        assert "model shades removed" in server.log_text()
        metrics = httpx.get(f"{server.base}/metrics").text
        assert 'learnserve_model_reload_failures_total{model="colors"} 1.0' in metrics
        assert json.loads(manifest_path(repo / "colors.pkl").read_text())["name"] == "colors"
