"""deploy/ray/rayjob.yaml: the Ray scoring job for Kubernetes, checked without a cluster.

No RayJob schema is available offline, so the job's own fields are checked structurally (what the KubeRay
operator reads); the head and worker pod templates are validated against Kubernetes' PodTemplateSpec schema
(bundled in kubernetes-validate), and the entrypoint is parsed by our own CLI parser, so it cannot drift from it.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app.__main__ import build_parser

JOB = Path(__file__).resolve().parent.parent / "deploy" / "ray" / "rayjob.yaml"


@pytest.fixture(scope="module")
def job() -> dict[str, Any]:
    [doc] = list(yaml.safe_load_all(JOB.read_text(encoding="utf-8")))
    return doc  # type: ignore[no-any-return]


def templates(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    cluster = job["spec"]["rayClusterSpec"]
    found = {"head": cluster["headGroupSpec"]["template"]}
    found |= {group["groupName"]: group["template"] for group in cluster["workerGroupSpecs"]}
    return found


def test_is_a_rayjob_that_cleans_up_after_itself(job: dict[str, Any]) -> None:
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["activeDeadlineSeconds"] > 0
    assert spec["rayClusterSpec"]["rayVersion"]
    workers = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert workers
    assert all(w["replicas"] >= 1 for w in workers)


def test_entrypoint_is_our_score_command_on_the_cluster(job: dict[str, Any]) -> None:
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:3] == ["python", "-m", "app"]
    args = build_parser().parse_args(words[3:])
    assert args.command == "score"
    assert args.engine == "ray"
    assert args.ray_address == "auto"
    assert args.source.startswith("s3://")
    assert args.out.suffix == ".parquet"


@pytest.mark.parametrize("role", ["head", "scorers"])
def test_pod_templates_match_the_kubernetes_schema(job: dict[str, Any], role: str) -> None:
    template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": role},
                "template": templates(job)[role]}  # fmt: skip
    for version in ("1.30", kubernetes_validate.latest_version()):
        try:
            kubernetes_validate.validate(template, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{role} pod template against Kubernetes {version}: {e.message} at {list(e.path)}")
    security = templates(job)[role]["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
