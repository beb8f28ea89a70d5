"""The model repository in-process: several models at once, versions, the default model, reloads and failures."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr, ValidationError

from app.config import Settings
from tests.backends import classify_files, fastai_backend
from tests.conftest import copy_model
from tests.images import encode, sample
from training.manifest import manifest_path, sha256_file

ADMIN = "admin-key-for-tests"
PNGS = [encode(sample(label, seed=70 + i), "PNG") for i, label in enumerate(["red", "green", "blue"] * 2)]


@pytest.fixture
def repo(tiny_model: Path, second_model: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    copy_model(tiny_model, folder)
    copy_model(second_model, folder)
    return folder


def app_for(folder: Path, **changes: object) -> TestClient:
    from app.main import create_app

    settings = Settings(
        model_dir=folder, max_upload_bytes=200_000, max_files=8, top_k=3, admin_key=SecretStr(ADMIN)
    )
    return TestClient(create_app(settings.model_copy(update=changes)))


@pytest.fixture
def client(repo: Path) -> Iterator[TestClient]:
    with app_for(repo) as c:
        yield c


def post(client: TestClient, path: str, data: bytes) -> dict:  # type: ignore[type-arg]
    r = client.post(path, files={"file": ("x.png", data, "image/png")})
    assert r.status_code == 200, r.text
    return {"body": r.json(), "name": r.headers["x-model-name"], "version": r.headers["x-model-version"]}


def reload(client: TestClient) -> dict:  # type: ignore[type-arg]
    r = client.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_two_models_answer_as_their_own_learners(
    client: TestClient, tiny_model: Path, second_model: Path
) -> None:
    for model in (tiny_model, second_model):
        expected = classify_files(fastai_backend(model), PNGS)
        for data, want in zip(PNGS, expected, strict=True):
            got = post(client, f"/models/{model.stem}/predict", data)
            assert got["name"] == model.stem
            assert got["version"] == sha256_file(model)[:12]
            assert got["body"]["label"] == want.label
            assert got["body"]["probability"] == pytest.approx(want.probability, abs=1e-5)
    files = [("files", (f"{i}.png", d, "image/png")) for i, d in enumerate(PNGS)]
    batch = client.post("/models/shades/predict/batch", files=files)
    assert batch.headers["x-model-name"] == "shades"
    assert [r["label"] for r in batch.json()["results"]] == [
        p.label for p in classify_files(fastai_backend(second_model), PNGS)
    ]


def test_models_lists_each_with_version_and_accuracy(client: TestClient, tiny_model: Path) -> None:
    listing = client.get("/models").json()
    assert listing["default"] is None  # two models and no LEARNSERVE_DEFAULT_MODEL
    by_name = {m["name"]: m for m in listing["models"]}
    assert set(by_name) == {"colors", "shades"}
    colors = by_name["colors"]
    assert colors["version"] == sha256_file(tiny_model)[:12]
    assert colors["arch"] == "cnn"
    assert colors["classes"] == 3
    assert 0 <= colors["accuracy"] <= 1
    assert colors["ready"] is True
    assert colors["last_reload_error"] is None
    detail = client.get("/models/shades").json()
    assert detail["model"]["input_size"] == 24
    assert detail["runtime"]["model"] == "shades"
    assert "/" not in detail["model"]["dataset"]["source"]  # only the data folder's name is published


def test_unknown_model_is_404_and_no_default_is_400(client: TestClient) -> None:
    r = client.post("/models/nope/predict", files={"file": ("x.png", PNGS[0], "image/png")})
    assert r.status_code == 404
    assert r.json()["code"] == "model_not_found"
    assert "colors" in r.json()["detail"]
    assert client.get("/models/nope").json()["code"] == "model_not_found"
    r = client.post("/predict", files={"file": ("x.png", PNGS[0], "image/png")})
    assert r.status_code == 400
    assert r.json()["code"] == "model_required"
    assert "LEARNSERVE_DEFAULT_MODEL" in r.json()["detail"]
    assert client.get("/metadata").json()["code"] == "model_required"


def test_default_model_answers_predict_and_metadata(repo: Path) -> None:
    with app_for(repo, default_model="shades") as client:
        assert post(client, "/predict", PNGS[0])["name"] == "shades"
        assert client.get("/metadata").json()["runtime"]["model"] == "shades"
        assert client.get("/models").json()["default"] == "shades"


def test_v2_serves_every_model_and_its_version(client: TestClient, tiny_model: Path) -> None:
    version = sha256_file(tiny_model)[:12]
    meta = client.get("/v2/models/colors").json()
    assert meta["versions"] == [version]
    assert client.get(f"/v2/models/colors/versions/{version}").json()["name"] == "colors"
    assert client.get(f"/v2/models/colors/versions/{version}/ready").json() == {
        "name": "colors",
        "ready": True,
    }
    wrong = client.get("/v2/models/colors/versions/000000000000")
    assert wrong.status_code == 404
    assert set(wrong.json()) == {"error"}
    assert client.get("/v2/models/shades/ready").json()["ready"] is True


def test_a_manifest_naming_another_model_is_refused(repo: Path, tiny_model: Path) -> None:
    copy_model(tiny_model, repo, name="renamed")  # renamed.pkl whose manifest says "colors"
    with app_for(repo) as client:
        listing = {m["name"]: m for m in client.get("/models").json()["models"]}
        assert listing["renamed"]["ready"] is False
        assert "names the model 'colors'" in listing["renamed"]["last_reload_error"]
        assert listing["colors"]["ready"] is True


def test_reload_swaps_a_new_version_and_keeps_the_old_one_on_failure(
    client: TestClient, repo: Path, tiny_model: Path, colors_v2: Path
) -> None:
    old = post(client, "/models/colors/predict", PNGS[0])["version"]
    assert reload(client)["unchanged"] == ["colors", "shades"]

    copy_model(colors_v2, repo)
    report = reload(client)
    assert report["replaced"] == ["colors"]
    new = post(client, "/models/colors/predict", PNGS[0])["version"]
    assert new == sha256_file(colors_v2)[:12] != old

    # a corrupt replacement whose manifest matches it: verification passes, loading fails, v2 keeps serving
    broken = repo / "colors.pkl"
    staged = repo / ".colors.tmp"
    staged.write_bytes(b"not a pickle at all")
    staged.chmod(0o644)
    staged.replace(broken)
    manifest = json.loads(manifest_path(broken).read_text())
    manifest["sha256"] = sha256_file(broken)
    manifest_path(broken).write_text(json.dumps(manifest))
    report = reload(client)
    assert "colors" in report["failed"]
    assert "cannot load" in report["failed"]["colors"]
    assert post(client, "/models/colors/predict", PNGS[0])["version"] == new
    listing = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert "cannot load" in listing["colors"]["last_reload_error"]
    assert listing["colors"]["version"] == new
    assert client.get("/health/ready").status_code == 200
    metrics = client.get("/metrics").text
    assert 'learnserve_model_reload_failures_total{model="colors"} 1.0' in metrics
    assert reload(client)["failed"] == {}  # an unchanged bad file is not tried (nor counted) again

    # a good file again clears the error
    copy_model(tiny_model, repo)
    assert reload(client)["replaced"] == ["colors"]
    assert {m["name"]: m for m in client.get("/models").json()["models"]}["colors"][
        "last_reload_error"
    ] is None


def test_reload_loads_new_files_and_unloads_removed_ones(
    client: TestClient, repo: Path, tiny_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy_model(tiny_model, repo, name="colors")
    (repo / "shades.pkl").unlink()
    copy_model(tiny_model, repo, name="hues")  # its manifest names another model: refused
    with caplog.at_level(logging.INFO, logger="learnserve"):
        report = reload(client)
    assert report["removed"] == ["shades"]
    # the log says that a reload started, why, what changed and how long it took
    lines = [r.getMessage() for r in caplog.records if "model reload" in r.getMessage()]
    assert lines[0] == f"model reload started (POST /admin/reload): scanning {repo}"
    assert re.fullmatch(
        r"model reload \(POST /admin/reload\) done in \d+\.\d\ds: removed shades; failed hues; 1 unchanged",
        lines[1],
    ), lines
    (repo / "hues.pkl").unlink()
    r = client.post("/models/shades/predict", files={"file": ("x.png", PNGS[0], "image/png")})
    assert r.json()["code"] == "model_not_found"
    info = [s.labels["model"] for f in text_string_to_metric_families(client.get("/metrics").text)
            for s in f.samples if s.name == "learnserve_model_info"]  # fmt: skip
    assert info == ["colors"]
    # one model left: it is the default now
    assert post(client, "/predict", PNGS[0])["name"] == "colors"


def test_admin_routes_need_the_admin_key_and_exist_only_with_one(repo: Path, settings: Settings) -> None:
    with app_for(repo) as client:
        assert client.post("/admin/reload").status_code == 401
        assert client.post("/admin/reload", headers={"X-API-Key": "wrong"}).json()["code"] == "unauthorized"
    from app.main import create_app

    with TestClient(create_app(settings)) as plain:
        r = plain.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 404
        assert "/admin/reload" not in plain.get("/openapi.json").json()["paths"]


def test_model_dir_and_model_path_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not both"):
        Settings(model_dir=tmp_path, model_path=tmp_path / "x.pkl")
    with pytest.raises(ValidationError, match="MODEL_SHA256 pins one file"):
        Settings(model_dir=tmp_path, model_sha256="0" * 64)


def test_an_empty_or_missing_folder_stops_startup(tmp_path: Path) -> None:
    from app.core.errors import ModelLoadError

    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no model could be loaded"), app_for(tmp_path / "empty"):
        pass
    with pytest.raises(ModelLoadError, match="is not a folder"), app_for(tmp_path / "missing"):
        pass


def test_a_default_that_cannot_be_served_stops_startup(repo: Path) -> None:
    from app.core.errors import ModelLoadError

    with (
        pytest.raises(ModelLoadError, match="LEARNSERVE_DEFAULT_MODEL 'nope'"),
        app_for(repo, default_model="nope"),
    ):
        pass


def test_a_reload_longer_than_the_body_deadline_is_not_cut_off(
    repo: Path, colors_v2: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POST /admin/reload has no body: the body deadline must not cancel it while it loads a large model."""
    import time

    import app.core.repository as repository

    verify = repository.verify_model_file

    def slow_verify(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(0.6)  # hashing a large file
        return verify(*args, **kwargs)

    with app_for(repo, body_timeout_seconds=0.2) as client:
        monkeypatch.setattr(repository, "verify_model_file", slow_verify)
        copy_model(colors_v2, repo)
        assert reload(client)["replaced"] == ["colors"]
        assert post(client, "/models/colors/predict", PNGS[0])["version"] == sha256_file(colors_v2)[:12]


def test_an_unexpected_load_error_is_reported_and_retried_once_the_file_changes(
    client: TestClient, repo: Path, colors_v2: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.core.repository as repository

    def unreadable(*args: object) -> None:
        raise PermissionError(13, "Permission denied")

    old = post(client, "/models/colors/predict", PNGS[0])["version"]
    monkeypatch.setattr(repository, "verify_model_file", unreadable)
    copy_model(colors_v2, repo)
    (repo / "extra.pkl").write_bytes(b"x")  # the rest of the rescan still happens
    (repo / "extra.json").write_text("{}")
    report = reload(client)
    assert "PermissionError" in report["failed"]["colors"]
    assert "PermissionError" in report["failed"]["extra"]
    assert post(client, "/models/colors/predict", PNGS[0])["version"] == old
    assert reload(client)["failed"] == {}  # unchanged: not tried again
    monkeypatch.undo()
    (repo / "extra.pkl").unlink()
    (repo / "extra.json").unlink()
    copy_model(colors_v2, repo)  # a new write: tried again, and now it loads
    assert reload(client)["replaced"] == ["colors"]


def test_a_file_refused_for_its_permissions_is_retried_once_they_are_fixed(
    client: TestClient, repo: Path, colors_v2: Path
) -> None:
    copy_model(colors_v2, repo)
    (repo / "colors.pkl").chmod(0o666)
    assert "writable" in reload(client)["failed"]["colors"]
    assert reload(client)["failed"] == {}  # unchanged: not tried again
    (repo / "colors.pkl").chmod(0o644)  # only the ctime changes
    assert reload(client)["replaced"] == ["colors"]


def test_a_folder_others_can_write_serves_nothing_new_and_says_why(
    client: TestClient, repo: Path, colors_v2: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Finding 6: whoever can write the folder could drop NAME.pkl + a manifest with its hash; the next rescan
    must not unpickle it. The reason shows in the log, the failure metric and /models; once the mode is fixed,
    the rescan loads it."""
    old = post(client, "/models/colors/predict", PNGS[0])["version"]
    repo.chmod(0o777)
    copy_model(colors_v2, repo)  # "the attacker's" file, with a manifest that matches it
    copy_model(colors_v2, repo, name="dropped")
    caplog.set_level("ERROR", logger="learnserve")
    report = reload(client)
    assert "model folder" in report["failed"]["colors"]
    assert "group- or world-writable" in report["failed"]["dropped"]
    assert post(client, "/models/colors/predict", PNGS[0])["version"] == old  # the running version serves on
    listing = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert listing["dropped"]["ready"] is False
    assert f"model folder {repo} is group- or world-writable" in listing["dropped"]["last_reload_error"]
    assert any("model folder" in r.getMessage() and "colors" in r.getMessage() for r in caplog.records)
    metrics = client.get("/metrics").text
    assert 'learnserve_model_reload_failures_total{model="colors"} 1.0' in metrics
    (repo / "dropped.pkl").unlink()
    repo.chmod(0o755)  # only the folder's mode changes
    assert reload(client)["replaced"] == ["colors"]


def test_a_model_owned_by_another_user_is_refused_at_startup(repo: Path) -> None:
    import os

    from app.core.errors import ModelLoadError

    for path in repo.iterdir():
        os.chown(path, 12345, -1)
    with pytest.raises(ModelLoadError, match="owned by uid 12345"), app_for(repo):
        pass


def test_no_answer_carries_a_path_of_the_training_machine(
    repo: Path, tiny_model: Path, dataset: Path
) -> None:
    """Finding 7: the manifest records where training ran (hyperparameters data, out, reports); only their names
    are published, in every answer that carries the manifest."""
    recorded = json.loads(manifest_path(tiny_model).read_text())["hyperparameters"]
    assert recorded["data"] == str(dataset)  # what the file holds: the trainer's own record
    with app_for(repo, default_model="colors") as client:
        for route in ("/metadata", "/models/colors", "/v2/models/colors", "/models"):
            text = client.get(route).text
            assert str(dataset.parent) not in text, route
            assert str(tiny_model.parent) not in text, route
        published = client.get("/models/colors").json()["model"]["hyperparameters"]
        assert (published["data"], published["out"], published["reports"]) == (
            "colors",
            "colors.pkl",
            "reports",
        )
        assert published["epochs"] == recorded["epochs"]  # other values as they are


@pytest.mark.parametrize(
    ("value", "name"),
    [("/home/me/data/digits", "digits"), ("data/digits/", "digits"), ("C:\\data\\digits", "digits"),
     ("digits", "digits"), ("/", "/"), (0.01, 0.01), (None, None)],
)  # fmt: skip
def test_path_name(value: object, name: object) -> None:
    from training.manifest import path_name

    assert path_name(value) == name
