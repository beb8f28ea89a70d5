"""docker-compose.yml publishes its ports on 127.0.0.1 unless told otherwise, forwards a key when one is set, and
the README says why (finding 7)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
PUBLISHED = re.compile(r"^\$\{LEARNSERVE_PUBLISH:-127\.0\.0\.1\}:\d+:8000$")


def resolve(spec: str, env: dict[str, str]) -> str:
    """Compose's ${NAME:-default}, the one form these ports use."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m[1]) or m[2], spec)


def test_every_port_is_on_loopback_unless_an_address_is_given() -> None:
    for name, service in COMPOSE["services"].items():
        for spec in service["ports"]:
            assert PUBLISHED.match(spec), f"{name}: {spec}"
            assert resolve(spec, {}).startswith("127.0.0.1:"), f"{name}: {spec}"
            assert resolve(spec, {"LEARNSERVE_PUBLISH": "0.0.0.0"}).startswith("0.0.0.0:")


def test_the_key_reaches_the_server() -> None:
    for name, service in COMPOSE["services"].items():
        assert service["environment"]["LEARNSERVE_API_KEY"] == "${LEARNSERVE_API_KEY:-}", name


def test_the_readme_says_why() -> None:
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "The ports are published on **127.0.0.1 only**. Without `LEARNSERVE_API_KEY`" in readme
    assert "LEARNSERVE_API_KEY=$(openssl rand -hex 32) LEARNSERVE_PUBLISH=0.0.0.0 docker compose up" in readme
