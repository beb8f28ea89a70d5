"""deploy/kserve/inferenceservice.yaml: learnserve as a KServe custom container (issue 23's scale-out).

Checked against KServe's own CRD schema (the v1beta1 openAPIV3Schema of `inferenceservices.serving.kserve.io`,
vendored from kserve/kserve config/crd/full at aaac4e294 (2026-08-21) in tests/fixtures/kserve/, 22 KB gzipped):
its types, its required fields, and strictly, every field of ours must exist there (the API server prunes unknown
fields of a CRD silently, so a misspelt `scaleTarget` would be dropped without a word). Then what KServe's
custom-container docs ask for (the container's name, its port, a readiness probe on the v2 ready route), and the
container's own command run for real: its probes answer on the port KServe routes to.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from tests.live_server import free_port, wait_until_ready

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "deploy" / "kserve" / "inferenceservice.yaml"
SCHEMA = ROOT / "tests" / "fixtures" / "kserve" / "inferenceservice-v1beta1.schema.json.gz"
DEPLOYMENT = ROOT / "deploy" / "kubernetes" / "deployment.yaml"


@pytest.fixture(scope="module")
def isvc() -> dict[str, Any]:
    doc = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def container(isvc: dict[str, Any]) -> dict[str, Any]:
    [one] = isvc["spec"]["predictor"]["containers"]
    return dict(one)


def unknown_fields(doc: Any, schema: dict[str, Any], at: str = "") -> list[str]:
    """Every key of `doc` that the schema does not define (kubectl's strict field validation, for a CRD)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found: list[str] = []
    if isinstance(doc, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in doc.items():
            if properties is not None and key in properties:
                found += unknown_fields(value, properties[key], f"{at}.{key}")
            elif isinstance(extra, dict):
                found += unknown_fields(value, extra, f"{at}.{key}")
            elif properties is not None:
                found.append(f"{at}.{key}")
    elif isinstance(doc, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(doc):
            found += unknown_fields(item, schema["items"], f"{at}[{i}]")
    return found


def test_the_manifest_matches_kserves_crd_schema(isvc: dict[str, Any]) -> None:
    schema = json.loads(gzip.decompress(SCHEMA.read_bytes()))
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(isvc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
    assert unknown_fields(isvc, schema) == []


def test_the_strict_check_would_catch_a_misspelt_field(isvc: dict[str, Any]) -> None:
    schema = json.loads(gzip.decompress(SCHEMA.read_bytes()))
    typo = json.loads(json.dumps(isvc))
    typo["spec"]["predictor"]["scaleTarge"] = 70
    typo["spec"]["predictor"]["containers"][0]["readinesProbe"] = {}
    assert sorted(unknown_fields(typo, schema)) == [
        ".spec.predictor.containers[0].readinesProbe",
        ".spec.predictor.scaleTarge",
    ]


def test_the_custom_container_is_what_kserve_expects(container: dict[str, Any]) -> None:
    assert container["name"] == "kserve-container"  # how KServe finds the serving container
    assert container["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]  # KServe's default port
    command = container["command"]
    assert command[command.index("--port") + 1] == "8080"
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}


def test_it_runs_like_the_plain_deployment(isvc: dict[str, Any], container: dict[str, Any]) -> None:
    """The same settings and the same locked-down pod as deploy/kubernetes/deployment.yaml, so the two cannot drift
    apart silently; every variable a setting of the app."""
    from app.config import Settings

    deployment = yaml.safe_load(DEPLOYMENT.read_text(encoding="utf-8"))
    pod = deployment["spec"]["template"]["spec"]
    [plain] = pod["containers"]
    assert container["env"] == plain["env"]
    for key in ("resources", "securityContext", "lifecycle", "volumeMounts"):
        assert container[key] == plain[key], key
    predictor = isvc["spec"]["predictor"]
    for key in (
        "securityContext",
        "terminationGracePeriodSeconds",
        "volumes",
        "automountServiceAccountToken",
    ):
        assert predictor[key] == pod[key], key
    names = {e["name"].removeprefix("LEARNSERVE_").lower() for e in container["env"]}
    assert names <= Settings.model_fields.keys()


@pytest.mark.slow
def test_the_containers_command_answers_its_probes(
    container: dict[str, Any], tiny_model: Path, tmp_path: Path
) -> None:
    port = free_port()
    argv = [sys.executable if part == "python" else part for part in container["command"]]
    argv[argv.index("--port") + 1] = str(port)
    argv[argv.index("--host") + 1] = "127.0.0.1"
    env = {"LEARNSERVE_MODEL_PATH": str(tiny_model), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(base, proc, lambda: log.read_text(errors="replace"))
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            path = container[probe]["httpGet"]["path"]
            assert httpx.get(base + path, timeout=5).status_code == 200, path
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
