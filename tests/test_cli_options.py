"""Options shared by the command lines and the settings: one bound for top-k everywhere, one set of model flags."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.config import Settings


@pytest.mark.parametrize("value", [0, 1001])
def test_top_k_is_bounded_in_settings_as_in_the_api(value: int) -> None:
    with pytest.raises(ValidationError, match="top_k"):
        Settings(top_k=value)


def test_top_k_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEARNSERVE_TOP_K", "1000")
    assert Settings().top_k == 1000
    monkeypatch.setenv("LEARNSERVE_TOP_K", "5000")
    with pytest.raises(ValidationError, match="less than or equal to 1000"):
        Settings()
