"""The Open Inference Protocol (v2) through a real protocol client, tritonclient's HTTP client, against a real
`python -m app serve` process (with an API key and JSON logs, so those are checked end to end too)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.backends import classify_files, fastai_backend
from tests.images import encode, sample
from tests.live_server import LiveServer, live_server

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is a dev dependency")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.slow

KEY = "v2-test-key"


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}  # a fresh dict each time: tritonclient adds to the one it gets


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    log = tmp_path_factory.mktemp("v2") / "server.log"
    with live_server(
        tiny_model, log, API_KEY=KEY, LOG_FORMAT="json", MAX_FILES="4", MAX_UPLOAD_BYTES="100000"
    ) as s:
        yield s


@pytest.fixture(scope="module")
def triton(server: LiveServer) -> Iterator[object]:
    client = httpclient.InferenceServerClient(url=server.base.removeprefix("http://"), network_timeout=30)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def model_name(tiny_model: Path) -> str:
    return json.loads(tiny_model.with_suffix(".json").read_text())["name"]


def image_input(*files: bytes) -> object:
    tensor = httpclient.InferInput("image", [len(files)], "BYTES")
    tensor.set_data_from_numpy(
        np.array([base64.b64encode(f) for f in files], dtype=object), binary_data=False
    )
    return tensor


def test_health_and_metadata(triton, model_name: str) -> None:  # type: ignore[no-untyped-def]
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready(model_name)
    assert not triton.is_model_ready("other")
    server = triton.get_server_metadata()
    assert server["name"] == "learnserve"
    model = triton.get_model_metadata(model_name, headers=auth())
    assert model["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in model["outputs"]] == [
        ("probabilities", "FP32", [-1, 3]),
        ("label", "BYTES", [-1]),
    ]


def test_infer_matches_the_predictor(triton, model_name: str, tiny_model: Path) -> None:  # type: ignore[no-untyped-def]
    labels = ["red", "green", "blue"]
    files = [
        encode(sample(label, seed=40 + i), fmt)
        for i, (label, fmt) in enumerate(zip(labels, ["PNG", "JPEG", "WEBP"], strict=True))
    ]
    outputs = [
        httpclient.InferRequestedOutput(name, binary_data=False) for name in ("probabilities", "label")
    ]
    result = triton.infer(
        model_name, [image_input(*files)], outputs=outputs, request_id="batch-1", headers=auth()
    )
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32
    assert probabilities.shape == (3, 3)
    assert [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label")] == labels
    assert result.get_response()["id"] == "batch-1"
    expected = [p.probabilities for p in classify_files(fastai_backend(tiny_model), files)]
    np.testing.assert_allclose(probabilities, np.array(expected, dtype=np.float32), atol=1e-5)


def test_outputs_default_to_all_and_can_be_chosen(triton, model_name: str) -> None:  # type: ignore[no-untyped-def]
    everything = triton.infer(model_name, [image_input(encode(sample("blue"), "PNG"))], headers=auth())
    assert [o["name"] for o in everything.get_response()["outputs"]] == ["probabilities", "label"]
    only = triton.infer(
        model_name, [image_input(encode(sample("blue"), "PNG"))], headers=auth(),
        outputs=[httpclient.InferRequestedOutput("label", binary_data=False)],
    )  # fmt: skip
    assert [o["name"] for o in only.get_response()["outputs"]] == ["label"]


@pytest.mark.parametrize(
    ("files", "status", "message"),
    [
        ([b"plain text"], "415", "Image 0: The file is not a JPEG"),
        ([encode(sample(), "PNG"), b""], "422", "Image 1: The uploaded file is empty"),
        ([encode(sample(), "PNG")] * 5, "413", "5 images sent; the limit is 4"),
        ([b"\x89PNG" + b"\0" * 120_000], "413", "larger than the limit"),
    ],
)
def test_protocol_errors_reach_the_client(
    triton, model_name: str, files: list[bytes], status: str, message: str
) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InferenceServerException) as caught:
        triton.infer(model_name, [image_input(*files)], headers=auth())
    assert caught.value.status() == status
    assert message in caught.value.message()


def test_key_and_model_name_are_checked(triton, model_name: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InferenceServerException) as caught:
        triton.infer(model_name, [image_input(encode(sample(), "PNG"))])
    assert caught.value.status() == "401"
    with pytest.raises(InferenceServerException) as caught:
        triton.get_model_metadata("other", headers=auth())
    assert caught.value.status() == "404"


def test_binary_tensor_data_is_refused_with_a_clear_message(triton, model_name: str) -> None:  # type: ignore[no-untyped-def]
    tensor = httpclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([base64.b64encode(encode(sample(), "PNG"))], dtype=object))  # binary
    with pytest.raises(InferenceServerException) as caught:
        triton.infer(model_name, [tensor], headers=auth())
    assert caught.value.status() == "400"
    assert "binary_data=False" in caught.value.message()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"inputs": []}', "one input named 'image'"),
        (
            b'{"inputs": [{"name": "image", "shape": [1], "datatype": "FP32", "data": [1.0]}]}',
            "must be BYTES",
        ),
        (
            b'{"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": ["aGk="]}]}',
            "shape [N]",
        ),
        (
            b'{"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["%%%"]}]}',
            "not valid base64",
        ),
        (
            b'{"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["aGk="]}], "outputs": [{"name": "x"}]}',
            "Unknown output",
        ),
        (b'{"id": 1}', "inputs"),
    ],
)
def test_malformed_requests_answer_400_in_the_protocol_shape(
    server: LiveServer, model_name: str, body: bytes, message: str
) -> None:
    # curl-style: the Content-Type is whatever the client says; the body is read as JSON regardless
    r = httpx.post(
        f"{server.base}/v2/models/{model_name}/infer",
        content=body,
        headers={**auth(), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error"}
    assert message in r.json()["error"]


def test_json_access_log_lines_carry_the_request_id(server: LiveServer) -> None:
    r = httpx.get(f"{server.base}/v2/health/ready", headers={"X-Request-ID": "v2-log-check"})
    assert r.headers["x-request-id"] == "v2-log-check"
    r = httpx.get(f"{server.base}/metadata", headers={"X-Request-ID": "v2-log-401"})
    assert r.status_code == 401
    lines = [json.loads(line) for line in server.log_text().splitlines() if line.startswith("{")]
    access = {line["request_id"]: line for line in lines if line["logger"] == "uvicorn.access"}
    assert access["v2-log-check"]["path"] == "/v2/health/ready"
    assert access["v2-log-check"]["status"] == 200
    assert access["v2-log-401"]["status"] == 401
    assert any("ready: serving" in line["message"] and line["request_id"] == "-" for line in lines)
