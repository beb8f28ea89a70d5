"""Every endpoint and every client mistake, through the real app and its lifespan."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.images import encode, many_formats, sample


def png(label: str = "red", seed: int = 0) -> bytes:
    return encode(sample(label, seed=seed), "PNG")


def assert_error(response, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["detail"], str)
    assert len(body["detail"]) > 10
    assert set(body) == {"detail", "code"}


def test_predict_answers_label_probability_and_top(client: TestClient) -> None:
    r = client.post("/predict", files={"file": ("x.png", png("blue"), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label"] == "blue"
    assert 0 < body["probability"] <= 1
    assert next(t["label"] for t in body["top"]) == "blue"
    assert len(body["top"]) == 3  # TOP_K=3, also the number of classes


def test_top_k_query(client: TestClient) -> None:
    r = client.post("/predict?top_k=1", files={"file": ("x.png", png(), "image/png")})
    assert len(r.json()["top"]) == 1
    r = client.post("/predict?top_k=50", files={"file": ("x.png", png(), "image/png")})
    assert len(r.json()["top"]) == 3
    assert_error(
        client.post("/predict?top_k=0", files={"file": ("x.png", png(), "image/png")}),
        422,
        "validation_error",
    )


@pytest.mark.parametrize(("name", "data"), list(many_formats().items())[::3])
def test_predict_accepts_formats_and_modes(client: TestClient, name: str, data: bytes) -> None:
    r = client.post("/predict", files={"file": (name, data, "application/octet-stream")})
    assert r.status_code == 200, (name, r.text)


def test_content_type_and_filename_do_not_decide(client: TestClient) -> None:
    r = client.post("/predict", files={"file": ("photo.jpg", png("green"), "image/jpeg")})
    assert r.status_code == 200
    pdf = b"%PDF-1.4\n%\xe2\xe3\n1 0 obj<<>>endobj\n"
    assert_error(
        client.post("/predict", files={"file": ("cat.png", pdf, "image/png")}), 415, "unsupported_media_type"
    )


def test_empty_file(client: TestClient) -> None:
    assert_error(client.post("/predict", files={"file": ("e.png", b"", "image/png")}), 422, "empty_file")


@pytest.mark.parametrize(
    "data",
    [b"just some text", encode(sample(), "TIFF"), b"<svg xmlns='http://www.w3.org/2000/svg'></svg>"],
)
def test_not_an_allowed_image(client: TestClient, data: bytes) -> None:
    assert_error(
        client.post("/predict", files={"file": ("f", data, "image/png")}), 415, "unsupported_media_type"
    )


def test_truncated_image(client: TestClient) -> None:
    data = encode(sample(size=64), "JPEG")[:300]
    assert_error(client.post("/predict", files={"file": ("t.jpg", data, "image/jpeg")}), 422, "corrupt_image")


def test_file_over_upload_limit(client: TestClient) -> None:
    big = b"\xff\xd8" + b"\x00" * 250_000  # over the 200 kB test limit
    r = client.post("/predict", files={"file": ("big.jpg", big, "image/jpeg")})
    assert r.status_code == 413
    assert r.json()["code"] in ("file_too_large", "request_too_large")


def test_upload_limit_holds_without_content_length(client: TestClient) -> None:
    boundary = "xyz"

    def chunks():  # type: ignore[no-untyped-def]
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'.encode()
        for _ in range(40):
            yield b"\x00" * 10_000
        yield f"\r\n--{boundary}--\r\n".encode()

    r = client.post(
        "/predict", content=chunks(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert "content-length" not in r.request.headers
    assert_error(r, 413, "request_too_large")


def test_too_many_pixels(client: TestClient) -> None:
    data = encode(Image.new("RGB", (1200, 1200), (200, 30, 30)), "JPEG")  # 1.44 Mpx > 1 Mpx limit, small file
    assert len(data) < 50_000
    assert_error(
        client.post("/predict", files={"file": ("p.jpg", data, "image/jpeg")}), 413, "too_many_pixels"
    )


def test_missing_or_misnamed_field(client: TestClient) -> None:
    r = client.post("/predict", files={"image": ("x.png", png(), "image/png")})
    assert_error(r, 422, "validation_error")
    assert "'file'" in r.json()["detail"]
    assert_error(client.post("/predict"), 422, "validation_error")
    assert_error(client.post("/predict", data={"file": "not a file"}), 422, "validation_error")


def test_batch_keeps_order_and_isolates_bad_files(client: TestClient) -> None:
    files = [
        ("files", ("a.png", png("red"), "image/png")),
        ("files", ("../../etc/evil\r\n.txt", b"not an image", "text/plain")),
        ("files", ("c.webp", encode(sample("green"), "WEBP"), "image/webp")),
        ("files", ("d.png", b"", "image/png")),
        ("files", ("e.jpg", encode(sample("blue"), "JPEG", quality=95), "image/jpeg")),
    ]
    r = client.post("/predict/batch", files=files)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    names = [x["filename"] for x in results]
    assert names[0] == "a.png"
    assert names[2:] == ["c.webp", "d.png", "e.jpg"]
    assert names[1].startswith("evil")
    assert names[1].endswith(".txt")
    assert not set("\r\n/\\%") & set(names[1])
    assert [x.get("label") for x in results] == ["red", None, "green", None, "blue"]
    assert results[1]["error"]["code"] == "unsupported_media_type"
    assert results[3]["error"]["code"] == "empty_file"


def test_batch_answers_equal_single_answers(client: TestClient) -> None:
    images = [png(label, seed=i) for i, label in enumerate(["red", "green", "blue", "red"])]
    batch = client.post(
        "/predict/batch", files=[("files", (f"{i}.png", d, "image/png")) for i, d in enumerate(images)]
    )
    for single_data, item in zip(images, batch.json()["results"], strict=True):
        single = client.post("/predict", files={"file": ("x.png", single_data, "image/png")}).json()
        assert single["label"] == item["label"]
        assert single["probability"] == pytest.approx(item["probability"], abs=1e-6)


def test_too_many_files(client: TestClient) -> None:
    files = [("files", (f"{i}.png", png(), "image/png")) for i in range(9)]
    assert_error(client.post("/predict/batch", files=files), 413, "too_many_files")


def test_batch_oversize_file_is_a_per_file_error(client: TestClient) -> None:
    files = [
        ("files", ("ok.png", png(), "image/png")),
        ("files", ("big.jpg", b"\xff" * 210_000, "image/jpeg")),
    ]
    results = client.post("/predict/batch", files=files).json()["results"]
    assert results[0]["label"] == "red"
    assert results[1]["error"]["code"] == "file_too_large"


def test_health(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "alive"}
    assert client.get("/health/ready").json() == {"status": "ready"}


def test_metadata(client: TestClient, settings) -> None:  # type: ignore[no-untyped-def]
    body = client.get("/metadata").json()
    model, runtime = body["model"], body["runtime"]
    assert model["classes"] == ["blue", "green", "red"]
    assert model["arch"] == "cnn"
    assert model["input_size"] == 32
    assert len(model["sha256"]) == 64
    assert "accuracy" in model["metrics"]
    assert runtime["device"] == "cpu"
    assert runtime["max_batch_size"] == settings.max_batch_size
    assert runtime["max_upload_bytes"] == 200_000
    assert runtime["versions"]["fastai"]


def test_unknown_route_and_method_use_the_error_shape(client: TestClient) -> None:
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/predict"), 405, "method_not_allowed")


def test_openapi_documents_routes_and_errors(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/predict"]["post"]
    assert {"200", "413", "415", "422", "503"} <= set(predict["responses"])
    assert "/predict/batch" in spec["paths"]
    assert "/metadata" in spec["paths"]
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("content_type", ["image/png", "image/jpeg", "application/octet-stream"])
def test_raw_image_body_answers_like_multipart(client: TestClient, content_type: str) -> None:
    data = png("green", seed=5)
    raw = client.post(
        "/predict", content=data, headers={"Content-Type": content_type}
    )  # the type is a hint only
    form = client.post("/predict", files={"file": ("x.png", data, "image/png")})
    assert raw.status_code == 200, raw.text
    assert raw.json() == form.json()
    assert raw.headers["x-model-name"] == "colors"


def test_raw_body_errors(client: TestClient) -> None:
    assert_error(client.post("/predict", content=b"hello", headers={"Content-Type": "text/plain"}), 415,
                 "unsupported_media_type")  # fmt: skip
    assert_error(client.post("/predict", content=b"not an image", headers={"Content-Type": "image/png"}), 415,
                 "unsupported_media_type")  # fmt: skip
    assert_error(
        client.post("/predict", content=b"", headers={"Content-Type": "image/png"}), 422, "empty_file"
    )
    big = b"\x89PNG" + b"\0" * 210_000  # over MAX_UPLOAD_BYTES=200 kB, under the route's body limit
    assert_error(
        client.post("/predict", content=big, headers={"Content-Type": "image/png"}), 413, "file_too_large"
    )
    batch = client.post("/predict/batch", content=png(), headers={"Content-Type": "image/png"})
    assert_error(batch, 415, "unsupported_media_type")  # a batch is a multipart form
    assert "files" in batch.json()["detail"]


def test_malformed_multipart_is_a_clear_400(client: TestClient) -> None:
    no_boundary = client.post("/predict", content=b"x", headers={"Content-Type": "multipart/form-data"})
    assert_error(no_boundary, 400, "bad_request")
    assert "boundary" in no_boundary.json()["detail"]
    broken = b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc\r\n--bXX'
    r = client.post("/predict", content=broken, headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code in (400, 422), r.text
    assert r.json()["code"] in ("bad_request", "validation_error")


def test_upload_errors_that_teach(client: TestClient) -> None:
    """Issue 26: say which fields arrived, what a raw body needs, and where several files go."""
    wrong = client.post("/predict", files={"image": ("x.png", png(), "image/png"), "note": (None, "hi")})
    assert_error(wrong, 422, "validation_error")
    assert "the form carries 'image', 'note'" in wrong.json()["detail"]
    curl_default = client.post(
        "/predict", content=png(), headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert_error(curl_default, 422, "validation_error")
    assert "`Content-Type: image/*`" in curl_default.json()["detail"]
    untyped = client.post("/predict", content=png(), headers={"Content-Type": ""})
    assert_error(untyped, 415, "unsupported_media_type")
    assert "`Content-Type: image/*`" in untyped.json()["detail"]
    two = [("file", ("a.png", png(), "image/png")), ("file", ("b.png", png(), "image/png"))]
    several = client.post("/predict", files=two)
    assert_error(several, 400, "bad_request")
    assert "/predict/batch" in several.json()["detail"]
    named = client.post("/models/colors/predict", files=two)
    assert_error(named, 400, "bad_request")
    assert "/models/colors/predict/batch" in named.json()["detail"]
    assert client.post("/predict/batch", files=[("files", f) for _, f in two]).status_code == 200
