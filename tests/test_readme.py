"""The README's promises: the two commands first, and every setting documented."""

from __future__ import annotations

from pathlib import Path

from app.config import Settings

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def test_readme_opens_with_the_two_commands() -> None:
    first_block = README.split("```")[1]
    assert "make serve" in first_block
    assert "make test" in first_block


def test_every_setting_is_documented() -> None:
    missing = [name for name in Settings.model_fields if f"LEARNSERVE_{name.upper()}" not in README]
    assert not missing, f"README lacks settings: {missing}"
