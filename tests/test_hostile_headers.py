"""A class, not an instance: every header a client controls (Content-Type and its parameters, the multipart
boundary, charset, Content-Length, Transfer-Encoding, Authorization, X-Request-ID, Accept) answers 4xx or is
ignored, never 5xx, on every upload route and in both error shapes. A server fault (MemoryError, a bug) stays a
5xx, logged with the request ID and counted."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from app.api.policy import Body, Key, Shape, declared_policy
from app.api.request_id import RequestIdFilter
from app.config import Settings
from tests.images import encode, sample

PNG = encode(sample("blue"), "PNG")
BOUNDARY = "hostile-test-boundary"
FORM = (
    (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
        f"Content-Type: image/png\r\n\r\n"
    ).encode()
    + PNG
    + f"\r\n--{BOUNDARY}--\r\n".encode()
)
INFER = (
    '{"inputs":[{"name":"image","shape":[1],"datatype":"BYTES","data":["'
    + base64.b64encode(PNG).decode()
    + '"]}]}'
).encode()


@pytest.fixture(scope="module")
def upload_client(tiny_model: object) -> Iterator[tuple[TestClient, list[tuple[str, Shape]]]]:
    from app.main import create_app

    settings = Settings(model_path=tiny_model, max_upload_bytes=200_000, max_files=8)  # type: ignore[arg-type]
    app = create_app(settings)
    from fastapi.routing import iter_route_contexts

    uploads = []  # every route that reads a body, from the declared policies
    for route in iter_route_contexts(app.routes):
        policy = declared_policy(route)
        if policy is not None and policy.body is not Body.NONE and policy.key is not Key.ADMIN:
            uploads.append(((route.path_format or "").replace("{name}", "colors"), policy.shape))
    assert len(uploads) == 9  # predict x4, v2 infer x2, explain x2, feedback (JSON)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, uploads


def header_text(
    alphabet: st.SearchStrategy[str] | None = None, max_size: int = 300
) -> st.SearchStrategy[bytes]:
    """What can arrive in a header value: visible ASCII, space, tab and obs-text (bytes 0x80-0xff)."""
    chars = alphabet or st.characters(codec="latin-1", exclude_characters="\r\n\0")
    return st.text(chars, max_size=max_size).map(lambda s: s.encode("latin-1"))


MEDIA = st.just(b"multipart/form-data") | st.sampled_from([b"image/png", b"application/json", b"text/plain", b"", b"*/*",
                         b"application/x-www-form-urlencoded", b"multipart/mixed", b"image/*"])  # fmt: skip
BACKSLASHES = st.sampled_from([0, 1, 70, 255, 256, 257, 5000]) | st.integers(0, 6000)
PARAM = st.one_of(
    st.builds(lambda n: b'boundary="' + b"\\" * n, BACKSLASHES),
    st.builds(lambda v: b"boundary=" + v, header_text()),
    st.builds(lambda v: b'boundary="' + v + b'"', header_text()),
    st.builds(lambda v: b"charset=" + v, header_text(max_size=50)),
    header_text(max_size=80),
)
CONTENT_TYPE = st.builds(lambda m, ps: b"; ".join([m, *ps]), MEDIA, st.lists(PARAM, max_size=3))
DIGITS = st.text("0123456789", min_size=1, max_size=6000).map(str.encode)
HEADERS = st.fixed_dictionaries(
    {},
    optional={
        b"content-type": st.one_of(CONTENT_TYPE, header_text()),
        b"content-length": st.one_of(DIGITS, header_text(max_size=30), st.just(b"-1")),
        b"transfer-encoding": st.one_of(
            st.sampled_from([b"chunked", b"gzip, chunked", b"identity"]), header_text()
        ),
        b"authorization": st.one_of(st.builds(lambda t: b"Bearer " + t, header_text()), header_text()),
        b"x-request-id": header_text(max_size=400),
        b"accept": st.one_of(st.sampled_from([b"application/json", b"text/html", b"*/*;q=0"]), header_text()),
        b"x-api-key": header_text(),
    },
)


@hypothesis_settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(headers=HEADERS, which=st.integers(0, 5), body=st.sampled_from(["form", "raw", "json", "empty"]))
def test_hostile_headers_never_answer_5xx(
    upload_client: tuple[TestClient, list[tuple[str, Shape]]],
    headers: dict[bytes, bytes],
    which: int,
    body: str,
) -> None:
    client, uploads = upload_client
    path, shape = uploads[which]
    content = {"form": FORM, "raw": PNG, "json": INFER, "empty": b""}[body]
    r = client.post(path, content=content, headers=list(headers.items()))
    assert r.status_code < 500, (path, headers, r.status_code, r.text[:300])
    if r.status_code >= 400:
        expected = {"error"} if shape is Shape.V2 else {"detail", "code"}
        assert set(r.json()) == expected, (path, r.text[:300])


@pytest.mark.parametrize(
    "content_type",
    [
        b'multipart/form-data; boundary="' + b"\\" * 5000,  # python-multipart: boundary longer than 256
        b"multipart/form-data; boundary=" + b"b" * 257,
        b"multipart/form-data; boundary=" + b"b" * 200,
        b"multipart/form-data; boundary=",
        b'multipart/form-data; boundary=""',
    ],
)
def test_boundaries_a_parser_refuses_are_the_clients_mistake(
    upload_client: tuple[TestClient, list[tuple[str, Shape]]], content_type: bytes
) -> None:
    client, _ = upload_client
    for path in ("/predict", "/predict/batch"):
        r = client.post(path, content=FORM, headers={"content-type": content_type})
        assert 400 <= r.status_code < 500, (path, r.text)
        assert set(r.json()) == {"detail", "code"}


def test_a_nonsense_charset_is_ignored(upload_client: tuple[TestClient, list[tuple[str, Shape]]]) -> None:
    client, _ = upload_client
    content_type = b"multipart/form-data; charset=utf-\xff; boundary=" + BOUNDARY.encode()
    assert client.post("/predict", content=FORM, headers={"content-type": content_type}).status_code == 200


def test_a_server_fault_stays_5xx_logged_with_the_request_id_and_counted(
    upload_client: tuple[TestClient, list[tuple[str, Shape]]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, _ = upload_client
    unit = client.app_state["repository"].default()

    async def out_of_memory(items: object) -> object:
        raise MemoryError

    monkeypatch.setattr(unit, "classify", out_of_memory)
    caplog.handler.addFilter(RequestIdFilter())  # as the server's log handlers do: record.request_id
    with caplog.at_level(logging.ERROR, logger="learnserve"):
        for path in ("/predict", "/v2/models/colors/infer"):
            content = INFER if "v2" in path else PNG
            r = client.post(
                path, content=content, headers={"content-type": "image/png", "x-request-id": "fault-1"}
            )
            assert r.status_code == 500
            assert r.headers["x-request-id"] == "fault-1"
    assert set(client.post("/predict", content=PNG, headers={"content-type": "image/png"}).json()) == {
        "detail",
        "code",
    }
    faults = [rec for rec in caplog.records if rec.exc_info and rec.exc_info[0] is MemoryError]
    assert len(faults) == 3
    assert [getattr(rec, "request_id", None) for rec in faults[:2]] == ["fault-1", "fault-1"]
    metrics = client.get("/metrics").text
    assert 'learnserve_server_errors_total{route="/predict"} 2.0' in metrics
    assert 'learnserve_server_errors_total{route="/v2/models/{name}/infer"} 1.0' in metrics


@pytest.mark.parametrize("length", [b"9" * 5000, b"1" * 19, b"-1", b"1e3", b"\xd9\xa1", b"12, 12"])
def test_content_lengths_no_parser_would_pass_are_refused_or_ignored(
    upload_client: tuple[TestClient, list[tuple[str, Shape]]], length: bytes
) -> None:
    client, uploads = upload_client
    for path, _ in uploads:
        r = client.post(path, content=PNG, headers={"content-type": b"image/png", "content-length": length})
        assert r.status_code < 500, (path, r.text)


def test_a_bug_after_a_cut_off_body_is_not_swallowed_by_the_body_guard() -> None:
    """BodyGuard answers 413/408 in place of what a route says about a body it cut off (ClientDisconnect), but an
    application exception is a server fault: it propagates to the 500 handler."""
    from tests.test_body_guard import serve, status_and_code

    async def disconnected(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive())["type"] == "http.request":
            pass
        raise ClientDisconnect  # what request.body() raises on the disconnect

    sent, _ = asyncio.run(serve(disconnected, [(0, b"x" * 101, False)]))  # over the limit of 100
    assert status_and_code(sent) == (413, "request_too_large")

    async def buggy(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive())["type"] == "http.request":
            pass
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        asyncio.run(serve(buggy, [(0, b"x" * 101, False)]))
