"""deploy/kubeflow/pytorchjob.yaml: the multi-node training example, checked without a cluster.

No PyTorchJob schema is available offline, so the job's own fields are checked structurally (what the Kubeflow
training operator reads); each pod template is validated against Kubernetes' PodTemplateSpec schema (bundled in
kubernetes-validate), and the training command is parsed by our own CLI parser, so it cannot drift from it.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from training.__main__ import build_parser

JOB = Path(__file__).resolve().parent.parent / "deploy" / "kubeflow" / "pytorchjob.yaml"


@pytest.fixture(scope="module")
def job() -> dict[str, Any]:
    docs = list(yaml.safe_load_all(JOB.read_text(encoding="utf-8")))
    assert len(docs) == 1
    return docs[0]  # type: ignore[no-any-return]


def replicas(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return job["spec"]["pytorchReplicaSpecs"]  # type: ignore[no-any-return]


def container(spec: dict[str, Any]) -> dict[str, Any]:
    (only,) = spec["template"]["spec"]["containers"]
    return only  # type: ignore[no-any-return]


def test_is_a_pytorchjob_with_one_master_and_workers(job: dict[str, Any]) -> None:
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    specs = replicas(job)
    assert set(specs) == {"Master", "Worker"}
    assert specs["Master"]["replicas"] == 1
    assert specs["Worker"]["replicas"] >= 1
    for spec in specs.values():
        assert spec["restartPolicy"] in ("Never", "OnFailure", "Always", "ExitCode")
        assert container(spec)["name"] == "pytorch"  # the operator finds the container by this name
        assert {"name": "pytorchjob-port", "containerPort": 23456} in container(spec)["ports"]
    assert container(specs["Master"]) == container(specs["Worker"])  # every pod runs the same program


@pytest.mark.parametrize("role", ["Master", "Worker"])
def test_pod_templates_match_the_kubernetes_schema(job: dict[str, Any], role: str) -> None:
    template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": role.lower()},
                "template": replicas(job)[role]["template"]}  # fmt: skip
    for version in ("1.30", kubernetes_validate.latest_version()):
        try:
            kubernetes_validate.validate(template, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{role} pod template against Kubernetes {version}: {e.message} at {list(e.path)}")


def test_command_starts_one_torchrun_per_pod_with_the_operators_rendezvous(job: dict[str, Any]) -> None:
    spec = replicas(job)["Master"]
    c = container(spec)
    assert c["command"] == ["sh", "-c"]
    words = shlex.split(c["args"][0])
    launcher, program = words[: words.index("-m", 4)], words[words.index("-m", 4) :]
    assert launcher[:4] == ["exec", "python", "-m", "torch.distributed.run"]
    flags = dict(zip(launcher[4::2], launcher[5::2], strict=True))
    assert flags == {"--nnodes": "$WORLD_SIZE", "--node_rank": "$RANK", "--nproc_per_node": "1",
                     "--master_addr": "$MASTER_ADDR", "--master_port": "$MASTER_PORT"}  # fmt: skip
    gpus = c["resources"]["limits"]["nvidia.com/gpu"]
    assert int(flags["--nproc_per_node"]) == gpus == c["resources"]["requests"]["nvidia.com/gpu"]

    assert program[:3] == ["-m", "training", "train"]
    args = build_parser().parse_args(program[2:])  # exits on an option the CLI does not have
    total = sum(s["replicas"] for s in replicas(job).values()) * gpus
    assert args.bs % total == 0  # train refuses a batch that does not split evenly
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    for path in (args.data, args.out, args.reports):
        assert any(str(path).startswith(m + "/") for m in mounts if m not in ("/tmp", "/dev/shm")), path
    assert "/tmp" in mounts  # training's working folder, on a read-only root filesystem
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    assert "persistentVolumeClaim" in volumes["work"]  # one shared volume: every pod reads, rank 0 writes
