"""What the budget charges for an image beyond its pixels: PNG text (`header_bytes`) and the learner's crop or pad
(`resize_working_bytes`), each checked against what Pillow and numpy really allocate, in a fresh process."""

from __future__ import annotations

import subprocess
import sys

import pytest
from PIL import Image, PngImagePlugin

from app.core.imaging import open_image
from app.core.metadata import MAX_CHUNKS_WALKED, header_bytes
from app.core.preprocess import crop_pad_box, resize_working_bytes
from bench.security_rss import png_with_text, thin_png
from tests.images import encode, sample

HEADER_SCRIPT = r"""
import gc, sys, tracemalloc
from app.core.imaging import load_rgb, open_image
from app.core.metadata import MAX_CHUNKS_WALKED, header_bytes

data = sys.stdin.buffer.read()
gc.collect()
tracemalloc.start()
image = open_image(data, 10**9)
load_rgb(image)
print(header_bytes(data), tracemalloc.get_traced_memory()[1])
"""


@pytest.mark.parametrize(
    ("chunks", "inflated"), [(1, 200_000), (3, 250_000), (60, 16_000), (4, 260_000)], ids=str
)
def test_header_bytes_bounds_what_reading_png_text_allocates(chunks: int, inflated: int) -> None:
    """tracemalloc sees every bytes and str Pillow makes of a PNG's text while it opens and decodes it."""
    out = subprocess.run(
        [sys.executable, "-c", HEADER_SCRIPT],
        input=png_with_text(chunks, inflated),
        capture_output=True,
    )
    if chunks * inflated > PngImagePlugin.MAX_TEXT_MEMORY or inflated > PngImagePlugin.MAX_TEXT_CHUNK:
        assert b"CorruptImage" in out.stderr  # past Pillow's lowered limits: refused as corrupt
        return
    estimate, peak = map(int, out.stdout.split())
    assert peak <= estimate, (peak, estimate)
    assert estimate <= 4 * peak, (peak, estimate)


def test_other_files_cost_no_header_charge() -> None:
    assert header_bytes(encode(sample(), "PNG")) == 0
    assert header_bytes(encode(sample(), "JPEG")) == 0
    assert header_bytes(b"\x89PNG\r\n\x1a\n" + b"\xff" * 20) == 0  # a chunk length past the end: nothing read


def test_a_png_of_many_tiny_chunks_is_charged_the_worst_case_without_walking_them_all() -> None:
    png = png_with_text(1, 1000)
    ihdr_end = 8 + 25
    padding = (b"\x00\x00\x00\x00prVt" + b"\x00" * 4) * (MAX_CHUNKS_WALKED + 1)  # private, empty chunks
    assert header_bytes(png[:ihdr_end] + padding + png[ihdr_end:]) == (
        PngImagePlugin.MAX_TEXT_MEMORY + 3 * PngImagePlugin.MAX_TEXT_CHUNK
    )
    assert header_bytes(png) < 100_000  # 21 compressed bytes could inflate to 21 KB, three times over


def test_an_opened_image_keeps_no_text_but_keeps_transparency() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * 100_000, zip=True)
    image = Image.new("P", (8, 8), 3)
    opened = open_image(encode(image, "PNG", pnginfo=info, transparency=3), 10**6)
    assert "comment" not in opened.info
    assert "transparency" in opened.info
    assert not opened.text  # nor in Pillow's own text table (read after decoding, from the pixels' side)


RESIZE_SCRIPT = r"""
import gc, sys
from PIL import Image
from app.core.preprocess import Preprocessor, resize_working_bytes
from training.manifest import Preprocessing

method, width, height = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
spec = Preprocessing(resize_method=method, size=32, normalize=None, augment=False)
image = Image.new("RGB", (width, height), (40, 60, 200))
gc.collect()
before = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
Preprocessor(spec).item(image)
after = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(resize_working_bytes(method, 32, width, height), after - before)
"""


@pytest.mark.parametrize(
    ("method", "width", "height"),
    [("pad", 6000, 2), ("pad", 2, 6000), ("pad", 5000, 3000), ("crop", 6000, 3000), ("squish", 6000, 3000)],
    ids=str,
)
def test_resize_working_bytes_bounds_the_measured_peak(method: str, width: int, height: int) -> None:
    out = subprocess.run(
        [sys.executable, "-c", RESIZE_SCRIPT, method, str(width), str(height)],
        capture_output=True,
        check=True,
    ).stdout.split()
    estimate, peak = int(out[0]), int(out[1])
    assert peak <= estimate * 1.05 + 2**20, (peak, estimate)


def test_a_thin_image_pads_to_the_square_of_its_long_side() -> None:
    assert crop_pad_box("pad", 32, 12000, 2) == (12000, 12000)
    assert crop_pad_box("crop", 32, 12000, 2) == (2, 2)
    assert resize_working_bytes("pad", 32, 12000, 2) == 3 * 24000 + 7 * 12000 * 12000
    assert thin_png(12000, 2)[:8] == b"\x89PNG\r\n\x1a\n"
