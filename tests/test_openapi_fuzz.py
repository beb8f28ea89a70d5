"""The OpenAPI document against the real server: `schemathesis run --checks all` (configured in
schemathesis.toml) fuzzes every operation of a real process serving two models, once without keys and once with
an API key and an admin key, and must report no failure: no 5xx, every answer in its documented status and shape,
schema-valid requests accepted and schema-violating ones refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import copy_model
from tests.live_server import live_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
KEY, ADMIN = "fuzz-api-key-0123456789", "fuzz-admin-key-0123456789"


def schemathesis(base: str, tmp_path: Path, *headers: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "schemathesis.cli", "run", f"{base}/openapi.json", "--checks", "all",
           "--seed", "20261126", "--no-color", *[x for h in headers for x in ("-H", h)]]  # fmt: skip
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "", "HOME": str(tmp_path)}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("keyed", [False, True], ids=["open", "with-keys"])
def test_schemathesis_finds_nothing(
    keyed: bool, tiny_model: Path, second_model: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "models"
    copy_model(tiny_model, repo)
    copy_model(second_model, repo)
    env = {"DEFAULT_MODEL": "colors", "LOG_LEVEL": "warning"}
    headers: tuple[str, ...] = ()
    if keyed:
        env |= {
            "API_KEY": KEY,
            "ADMIN_KEY": ADMIN,
            "CAPTURE_DIR": str(tmp_path / "capture"),
        }  # and /feedback on
        headers = (f"Authorization: Bearer {KEY}",)
    with live_server(repo, tmp_path / "server.log", **env) as server:
        run = schemathesis(server.base, tmp_path, *headers)
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
        summary = run.stdout.split("SUMMARY")[-1]
        assert "generated" in summary
        assert "Failures:" not in summary, summary
        assert "Traceback" not in server.log_text()
