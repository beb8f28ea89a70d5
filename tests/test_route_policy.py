"""Every route's declared policy, enforced on the route the router matches: the whole key matrix (no key, a wrong
one, the API key, the admin key) through every route of `app.routes`, served plainly, under a root path (as
`uvicorn --root-path /api` behind a proxy) and mounted under another app; over real HTTP once."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from pydantic import SecretStr
from starlette.routing import Mount
from starlette.types import Message

from app.api.policy import Key, Policy, RoutePolicies, Shape, declared_policy
from app.config import Settings
from tests.live_server import free_port, wait_until_ready

API, ADMIN = "api-key-0123456789abcdef", "admin-key-0123456789abcdef"
KEYS: dict[str, dict[str, str]] = {
    "no key": {},
    "wrong key": {"Authorization": "Bearer not-the-key"},
    "api key": {"Authorization": f"Bearer {API}"},
    "admin key": {"X-API-Key": ADMIN},
}
ACCEPTED = {Key.NONE: set(KEYS), Key.API: {"api key"}, Key.ADMIN: {"admin key"}}


@pytest.fixture
def keyed_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"api_key": SecretStr(API), "admin_key": SecretStr(ADMIN)})


def declared_routes(app: FastAPI) -> list[tuple[str, str, Policy]]:
    """(method, template, declared policy) of every route the app has; a route without a policy fails here."""
    found = []
    for route in iter_route_contexts(app.routes):
        template = route.path_format or ""
        policy = declared_policy(route)
        if template == app.openapi_url:
            policy = Policy(Key.NONE)
        assert policy is not None, f"{template} declares no policy"
        for method in sorted(route.methods or {"GET"}):
            found.append((method, template, policy))
    return found


def concrete(template: str, version: str) -> str:
    values = {"name": "colors", "version": version, "path": "favicon.svg"}
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: values[m.group(1)], template)


def check_matrix(client: httpx.Client | TestClient, app: FastAPI, prefix: str) -> int:
    """Every route x every key: refused with 401 (in the route's error shape) exactly when its policy says."""
    version = client.get(f"{prefix}/models", headers=KEYS["api key"]).json()["models"][0]["version"]
    checked = 0
    for method, template, policy in declared_routes(app):
        path = prefix + concrete(template, version)
        for which, headers in KEYS.items():
            r = client.request(method, path, headers=headers)
            where = f"{which}: {method} {path} -> {r.status_code}"
            if which in ACCEPTED[policy.key]:
                assert r.status_code != 401, where
            else:
                assert r.status_code == 401, where
                assert r.headers["www-authenticate"] == "Bearer"
                if method != "HEAD":
                    shape = {"error"} if policy.shape is Shape.V2 else {"detail", "code"}
                    assert set(r.json()) == shape, where
            checked += 1
    return checked


def test_every_route_declares_a_policy_and_keys_hold(keyed_settings: Settings) -> None:
    from app.main import create_app

    app = create_app(keyed_settings)
    with TestClient(app) as client:
        assert check_matrix(client, app, "") > 100
    kinds = {policy.key for _, _, policy in declared_routes(app)}
    assert kinds == {Key.NONE, Key.API, Key.ADMIN}


def test_without_key_settings_no_route_asks_for_one(settings: Settings) -> None:
    from app.main import create_app

    app = create_app(settings)
    with TestClient(app) as client:
        version = client.get("/models").json()["models"][0]["version"]
        for method, template, _ in declared_routes(app):
            for headers in KEYS.values():
                r = client.request(method, concrete(template, version), headers=headers)
                assert r.status_code != 401, (method, template)
    assert "/admin/reload" not in {t for _, t, _ in declared_routes(app)}  # no admin key: no admin routes


def test_keys_hold_under_a_root_path(keyed_settings: Settings) -> None:
    """As uvicorn --root-path /api passes it: the path carries the root path, which routing strips."""
    from app.main import create_app

    app = create_app(keyed_settings)
    with TestClient(app, root_path="/api") as client:
        check_matrix(client, app, "/api")


def test_keys_hold_when_mounted_under_another_app(keyed_settings: Settings) -> None:
    from app.main import create_app

    app = create_app(keyed_settings)
    parent = FastAPI(routes=[Mount("/api", app=app)], lifespan=app.router.lifespan_context)
    with TestClient(parent) as client:
        check_matrix(client, app, "/api")
        assert client.get("/api/health/live").status_code == 200
        assert client.post("/api/admin/reload").status_code == 401


def call_without_key(app: FastAPI, method: str, path: str, root_path: str) -> tuple[int, bool]:
    """(status, whether the app read the body) for a keyless request announcing a 10-byte body."""
    messages: list[Message] = []
    read = False

    async def receive() -> Message:
        nonlocal read
        read = True
        return {"type": "http.request", "body": b"x" * 10, "more_body": False}

    async def send(message: Message) -> None:
        messages.append(message)

    scope = {"type": "http", "method": method, "path": path, "root_path": root_path, "query_string": b"",
             "headers": [(b"content-length", b"10"), (b"content-type", b"image/png")]}  # fmt: skip
    asyncio.run(app(scope, receive, send))
    return messages[0]["status"], read


@pytest.mark.parametrize("root_path", ["", "/api"])
def test_a_keyless_request_is_refused_before_any_body_byte(keyed_settings: Settings, root_path: str) -> None:
    from app.main import create_app

    app = create_app(keyed_settings)
    keyed = [(m, t) for m, t, p in declared_routes(app) if p.key is not Key.NONE and m == "POST"]
    assert len(keyed) >= 5  # the predict routes, v2 infer, admin reload
    for method, template in keyed:
        path = root_path + concrete(template, "0" * 12)
        status, read = call_without_key(app, method, path, root_path)
        assert status == 401, path
        assert not read, f"{path}: the body was read before the key was checked"


def test_unknown_paths_answer_404_with_or_without_a_key(keyed_settings: Settings) -> None:
    from app.main import create_app

    with TestClient(create_app(keyed_settings)) as client:
        for path in ("/nope", "/models/colors/predict/extra", "/v2/nope", "/admin/other"):
            for headers in KEYS.values():
                r = client.post(path, headers=headers)
                assert r.status_code == 404, path


def test_v2_readiness_is_matched_exactly_and_names_no_other_model(keyed_settings: Settings) -> None:
    from app.main import create_app

    with TestClient(create_app(keyed_settings)) as client:
        assert client.get("/v2/models/colors/ready").status_code == 200
        # the metadata of version "ready", not a readiness route: it needs the key
        assert client.get("/v2/models/colors/versions/ready").status_code == 401
        missing = client.get("/v2/models/nope/ready")
        assert missing.status_code == 404
        assert "colors" not in missing.text
        version = client.get("/models", headers=KEYS["api key"]).json()["models"][0]["version"]
        wrong = client.get("/v2/models/colors/versions/000000000000/ready")
        assert wrong.status_code == 404
        assert version not in wrong.text
        assert client.get(f"/v2/models/colors/versions/{version}/ready").status_code == 200


def test_without_keys_readiness_still_says_what_is_served(settings: Settings) -> None:
    from app.main import create_app

    with TestClient(create_app(settings)) as client:
        assert "colors" in client.get("/v2/models/nope/ready").text


def test_a_route_without_a_policy_stops_the_app_from_being_built(settings: Settings) -> None:
    app = FastAPI(docs_url=None, redoc_url=None)
    router = APIRouter()

    @router.get("/undeclared")
    async def undeclared() -> dict[str, str]:
        return {}

    app.include_router(router)
    with pytest.raises(RuntimeError, match="/undeclared declares no policy"):
        RoutePolicies.compile(app.routes, settings, app.openapi_url)


def test_an_admin_route_without_an_admin_key_is_refused_at_build(settings: Settings) -> None:
    from app.api.routes import admin

    app = FastAPI(docs_url=None, redoc_url=None)
    app.include_router(admin.router)
    with pytest.raises(RuntimeError, match="needs the admin key"):
        RoutePolicies.compile(app.routes, settings, app.openapi_url)


def uvicorn_with_root_path(model: Path, log: Path) -> AbstractContextManager[str]:
    class Server:
        def __enter__(self) -> str:
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("LEARNSERVE_")}
            env |= {
                "LEARNSERVE_MODEL_PATH": str(model),
                "LEARNSERVE_API_KEY": API,
                "LEARNSERVE_ADMIN_KEY": ADMIN,
            }
            self.out = log.open("wb")
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--root-path", "/api",
                 "--port", str(port)], env=env, stdout=self.out, stderr=self.out,
            )  # fmt: skip
            base = f"http://127.0.0.1:{port}"
            wait_until_ready(base, self.proc, lambda: log.read_text(errors="replace"))
            return base

        def __exit__(self, *exc: object) -> None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.out.close()

    return Server()


@pytest.fixture
def root_path_server(tiny_model: Path, tmp_path: Path) -> Iterator[str]:
    with uvicorn_with_root_path(tiny_model, tmp_path / "server.log") as base:
        yield base


def test_keys_hold_over_real_http_behind_a_root_path(root_path_server: str, keyed_settings: Settings) -> None:
    """The reported bypass: `uvicorn --factory app.main:create_app --root-path /api` with both keys set."""
    from app.main import create_app

    with httpx.Client(base_url=root_path_server, timeout=30) as client:
        assert client.post("/admin/reload").status_code == 401
        assert client.post("/predict").status_code == 401
        assert check_matrix(client, create_app(keyed_settings), "") > 100
