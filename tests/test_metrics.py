"""GET /metrics: scrape, make requests, scrape again, and check that each number moved by what was done."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.api.metrics import powers_of_two
from tests.images import encode, sample

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient) -> Samples:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def png(label: str, seed: int = 0) -> bytes:
    return encode(sample(label, seed=seed), "PNG")


def test_requests_predictions_and_batches_are_counted(client: TestClient) -> None:
    before = scrape(client)
    for label in ("red", "red", "blue"):
        assert client.post("/predict", files={"file": ("x.png", png(label), "image/png")}).status_code == 200
    files = [("files", (f"{i}.png", png("green", seed=i), "image/png")) for i in range(3)]
    assert client.post("/predict/batch", files=files).status_code == 200
    assert (
        client.post("/predict", files={"file": ("x.txt", b"not an image", "text/plain")}).status_code == 415
    )
    assert client.get("/health/live").status_code == 200
    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    m = "colors"  # the model that answered: its name labels the request and model series
    assert moved("learnserve_requests_total", method="POST", route="/predict", status="200", model=m) == 3
    assert moved("learnserve_requests_total", method="POST", route="/predict", status="415", model=m) == 1
    assert (
        moved("learnserve_requests_total", method="POST", route="/predict/batch", status="200", model=m) == 1
    )
    assert moved("learnserve_requests_total", method="GET", route="/health/live", status="200", model="") == 1
    latency = "learnserve_request_duration_seconds_count"
    assert moved(latency, method="POST", route="/predict", status="200", model=m) == 3
    assert (
        moved(
            "learnserve_request_duration_seconds_sum", method="POST", route="/predict", status="200", model=m
        )
        > 0
    )
    assert moved("learnserve_predictions_total", model=m, label="red") == 2
    assert moved("learnserve_predictions_total", model=m, label="blue") == 1
    assert moved("learnserve_predictions_total", model=m, label="green") == 3
    # three single requests in a row are three batches of one; the batch request is one batch of three
    assert moved("learnserve_batch_size_count", model=m) == 4
    assert moved("learnserve_batch_size_sum", model=m) == 6
    assert moved("learnserve_batch_size_bucket", model=m, le="2.0") == 3
    assert moved("learnserve_inference_seconds_count", model=m) == 4
    assert moved("learnserve_inference_seconds_sum", model=m) > 0
    assert value(after, "learnserve_queue_depth", model=m) == 0


def test_route_label_is_the_template_and_unknown_paths_share_one(client: TestClient) -> None:
    for path in ("/nope", "/nope/2", "/v2/models/a/ready", "/v2/models/b/ready"):
        client.get(path)
    samples = scrape(client)
    routes = {dict(labels)["route"] for name, labels in samples if name == "learnserve_requests_total"}
    assert "unmatched" in routes
    assert "/v2/models/{name}/ready" in routes
    assert not {"/nope", "/nope/2", "/v2/models/a/ready"} & routes
    assert (
        value(samples, "learnserve_requests_total", method="GET", route="unmatched", status="404", model="")
        == 2
    )
    ready = "/v2/models/{name}/ready"
    assert value(samples, "learnserve_requests_total", method="GET", route=ready, status="404", model="") == 2


def test_rejections_before_routing_are_counted_under_their_route(client: TestClient) -> None:
    big = b"\x00" * 300_000  # over the 200 kB + 64 kB body limit of /predict: BodyGuard answers, not a route
    r = client.post("/predict", content=big, headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413
    samples = scrape(client)
    assert (
        value(samples, "learnserve_requests_total", method="POST", route="/predict", status="413", model="")
        == 1
    )


def test_model_identity_load_time_and_process_metrics(client: TestClient, settings) -> None:  # type: ignore[no-untyped-def]
    samples = scrape(client)
    metadata = client.get("/metadata").json()
    info = [dict(labels) for name, labels in samples if name == "learnserve_model_info"]
    assert info == [
        {
            "model": metadata["model"]["name"],
            "version": metadata["model"]["sha256"][:12],
            "sha256": metadata["model"]["sha256"],
            "arch": "cnn",
            "backend": "fastai",
            "device": "cpu",
            "classes": "3",
            "kind": "single-label classifier",
        }
    ]
    assert metadata["runtime"]["version"] == metadata["model"]["sha256"][:12]
    assert value(samples, "learnserve_model_load_seconds", model="colors") > 0
    assert value(samples, "process_resident_memory_bytes") > 0
    assert not any(name.endswith("_created") for name, _ in samples)


def test_each_app_has_its_own_registry(client: TestClient, settings) -> None:  # type: ignore[no-untyped-def]
    from app.main import create_app

    client.post("/predict", files={"file": ("x.png", png("red"), "image/png")})
    with TestClient(create_app(settings)) as fresh:
        assert value(scrape(fresh), "learnserve_predictions_total", model="colors", label="red") == 0


def test_batch_size_buckets_reach_the_largest_batch() -> None:
    assert powers_of_two(1) == [1.0]
    assert powers_of_two(32) == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    assert powers_of_two(48)[-1] == 64.0
