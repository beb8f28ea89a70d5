"""The optional API key (how it is sent, how it is refused, how OpenAPI documents it) and CORS. Which routes need
which key, over every route the app has: tests/test_route_policy.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError

from app.api.security import same_secret
from app.config import Settings
from tests.images import encode, sample

KEY = "s3cret-key-with-enough-entropy"
PNG = encode(sample("blue"), "PNG")


@pytest.fixture
def keyed(settings: Settings) -> Iterator[TestClient]:
    from app.main import create_app

    with TestClient(create_app(settings.model_copy(update={"api_key": SecretStr(KEY)}))) as client:
        yield client


def test_401_shape_and_header(keyed: TestClient) -> None:
    r = keyed.post("/predict", files={"file": ("x.png", PNG, "image/png")})
    assert r.status_code == 401
    assert r.json()["code"] == "unauthorized"
    assert set(r.json()) == {"detail", "code"}
    assert r.headers["www-authenticate"] == "Bearer"
    wrong = keyed.get("/metadata", headers={"X-API-Key": KEY + "x"})
    assert wrong.json()["detail"] == "The API key is not valid."
    v2 = keyed.get("/v2/models/colors")
    assert v2.status_code == 401
    assert set(v2.json()) == {"error"}  # the v2 protocol's error shape
    assert v2.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Basic {KEY}"},  # not the Bearer scheme
        {"Authorization": f"Bearer {KEY[:-1]}"},  # a prefix of the key
        {"Authorization": "Bearer"},
        {"X-API-Key": ""},
        {"X-Api-Key": KEY.upper()},
    ],
)
def test_near_misses_are_refused(keyed: TestClient, headers: dict[str, str]) -> None:
    assert keyed.get("/metadata", headers=headers).status_code == 401


def test_openapi_documents_the_key(keyed: TestClient) -> None:
    spec = keyed.get("/openapi.json").json()
    assert {"HTTPBearer", "APIKeyHeader"} <= set(spec["components"]["securitySchemes"])
    assert "401" in spec["paths"]["/predict"]["post"]["responses"]
    assert "401" in spec["paths"]["/v2/models/{name}/infer"]["post"]["responses"]
    assert "security" not in spec["paths"]["/health/ready"]["get"]
    assert spec["paths"]["/models"]["get"]["security"]


def test_openapi_declares_no_key_without_one(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "securitySchemes" not in spec.get("components", {})
    assert not any("security" in op for path in spec["paths"].values() for op in path.values())
    assert "401" not in spec["paths"]["/predict"]["post"]["responses"]
    assert "401" not in spec["paths"]["/v2/models/{name}/infer"]["post"]["responses"]


def test_key_comparison() -> None:
    assert same_secret("abc", "abc")
    assert not same_secret("abc", "abd")
    assert not same_secret("ab", "abc")
    assert not same_secret("", "abc")


def test_key_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEARNSERVE_API_KEY", KEY)
    settings = Settings()
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == KEY
    assert KEY not in repr(settings)  # never printed by accident
    monkeypatch.setenv("LEARNSERVE_API_KEY", "  ")
    assert Settings().api_key is None
    for unusable in ("clé-secrète", "tab\tinside", " padded "):  # could never arrive intact in a header
        monkeypatch.setenv("LEARNSERVE_ADMIN_KEY", unusable)
        with pytest.raises(ValidationError, match="printable ASCII"):
            Settings()


ORIGIN = "https://app.example.com"


@pytest.fixture
def cors(settings: Settings) -> Iterator[TestClient]:
    from app.main import create_app

    with TestClient(create_app(settings.model_copy(update={"cors_origins": [ORIGIN]}))) as client:
        yield client


def test_cors_is_off_by_default(client: TestClient) -> None:
    r = client.get("/health/live", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in r.headers
    preflight = client.options(
        "/predict", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_the_configured_origin_only(cors: TestClient) -> None:
    preflight = cors.options(
        "/predict",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, x-request-id",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    r = cors.post("/predict", files={"file": ("x.png", PNG, "image/png")}, headers={"Origin": ORIGIN})
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
    too_big = cors.post(
        "/predict", content=b"\0" * 300_000, headers={"Origin": ORIGIN, "Content-Type": "x/y"}
    )
    assert too_big.status_code == 413
    assert too_big.headers["access-control-allow-origin"] == ORIGIN  # so the page can read the error
    other = cors.options(
        "/predict", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("", []),
        ("https://a.example", ["https://a.example"]),
        ("https://a.example/, http://localhost:3000", ["https://a.example", "http://localhost:3000"]),
        ('["https://a.example", "*"]', ["https://a.example", "*"]),
    ],
)
def test_cors_origins_setting(monkeypatch: pytest.MonkeyPatch, raw: str, parsed: list[str]) -> None:
    monkeypatch.setenv("LEARNSERVE_CORS_ORIGINS", raw)
    assert Settings().cors_origins == parsed


@pytest.mark.parametrize("raw", ["a.example", "https://a.example/path", "ftp://a.example"])
def test_cors_origins_setting_refuses_what_would_never_match(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("LEARNSERVE_CORS_ORIGINS", raw)
    with pytest.raises(ValidationError, match="CORS origin"):
        Settings()
