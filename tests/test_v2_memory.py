"""The charge for a v2 JSON body (`parsed_bytes`) bounds what parsing and validating it allocates, measured with
tracemalloc (which sees every Python object and numpy buffer) on bodies shaped to expand as much as JSON can."""

from __future__ import annotations

import base64
import json
import tracemalloc
from collections.abc import Callable

import pytest
from pydantic import ValidationError

from app.api import open_inference as oip
from app.core.errors import CoreError

N = 200_000


def data_body(items: bytes) -> bytes:
    n = items.count(b",") + 1
    return b'{"inputs":[{"name":"image","datatype":"BYTES","shape":[%d],"data":[' % n + items + b"]}]}"


BODIES: dict[str, Callable[[], bytes]] = {
    "empty objects": lambda: data_body(b",".join([b"{}"] * N)),
    "empty lists": lambda: data_body(b",".join([b"[]"] * N)),
    "large numbers": lambda: data_body(b",".join([b"1234567890123"] * N)),
    "floats": lambda: data_body(b",".join([b"1.5"] * N)),
    "short strings": lambda: data_body(b",".join([b'"a"'] * N)),
    "objects with keys": lambda: data_body(b",".join([b'{"a":1,"b":2}'] * N)),
    "nested lists": lambda: data_body(b"[" * 5000 + b"]" * 5000),
    "inputs of empty objects": lambda: b'{"inputs":[' + b",".join([b"{}"] * N) + b"]}",
    "base64 files": lambda: data_body(
        b",".join([json.dumps(base64.b64encode(bytes(30_000)).decode()).encode()] * 64)
    ),
}


@pytest.mark.parametrize("make", BODIES.values(), ids=BODIES.keys())
def test_the_charge_bounds_what_parsing_and_validating_allocate(make: Callable[[], bytes]) -> None:
    body = make()
    errors = 0
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        try:
            parsed = oip.parse_json(body)
            request = oip.InferenceRequest.model_validate(parsed)
            elements = oip.image_elements(request, max_files=10**6)
            assert [oip.decode_element(i, e, 10**8) for i, e in enumerate(elements)]
        except ValidationError as e:
            errors = e.error_count()
        except (
            ValueError,
            CoreError,
        ):  # not JSON (nested too deeply), not an image tensor, not base64: refused
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert errors <= 4  # fail_fast: the first bad input only, not one error per item
    charge = oip.parsed_bytes(body)
    assert peak <= charge, f"allocated {peak:,} bytes for a {len(body):,}-byte body; charged {charge:,}"


def test_a_body_of_image_files_is_charged_about_twice_its_size() -> None:
    """What legal requests carry, base64 files, is not overcharged: the text once decoded, then the files."""
    body = BODIES["base64 files"]()
    assert oip.parsed_bytes(body) <= 2.01 * len(body)


def test_json_nested_past_the_recursion_limit_is_a_400_not_a_500(client) -> None:  # type: ignore[no-untyped-def]
    body = data_body(b"[" * 100_000 + b"]" * 100_000)
    r = client.post("/v2/models/colors/infer", content=body)
    assert r.status_code == 400, r.text
    assert "nested too deeply" in r.json()["error"]
