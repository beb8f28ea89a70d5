"""Decoding: content decides the format, limits apply before pixels are decoded, unusual images are normalised."""

from __future__ import annotations

import contextlib
import io
import zlib

import numpy as np
import pytest
from PIL import Image

from app.api.uploads import safe_filename
from app.core.errors import CorruptImage, EmptyFile, TooManyPixels, UnsupportedImage
from app.core.imaging import decode_image
from tests.images import (
    animated_gif,
    encode,
    exif_rotated_jpeg,
    gray16_png,
    many_formats,
    palette_with_transparency,
    rgba_with_transparent_corner,
    sample,
)

LIMIT = 10_000_000


@pytest.mark.parametrize(("name", "data"), many_formats().items())
def test_every_accepted_format_and_mode_decodes_to_rgb(name: str, data: bytes) -> None:
    img = decode_image(data, LIMIT)
    assert img.mode == "RGB", name
    assert img.width >= 1
    assert img.height >= 1


def test_plain_rgb_png_is_pixel_identical_to_fastai_decoding() -> None:
    from fastai.vision.core import PILImage

    data = encode(sample("red"), "PNG")
    ours = np.asarray(decode_image(data, LIMIT))
    fastai = np.asarray(PILImage.create(data))
    assert np.array_equal(ours, fastai)


def test_exif_orientation_is_applied() -> None:
    img = decode_image(exif_rotated_jpeg(), LIMIT)
    assert img.size == (24, 40)  # stored 40x24 sideways


def test_transparency_is_composited_on_white() -> None:
    img = decode_image(encode(rgba_with_transparent_corner(), "PNG"), LIMIT)
    assert img.getpixel((0, 0)) == (255, 255, 255)
    palette = decode_image(palette_with_transparency(), LIMIT)
    assert (255, 255, 255) in {palette.getpixel((x, y)) for x in range(32) for y in range(32)}


def test_16_bit_grayscale_is_scaled_not_clipped() -> None:
    img = decode_image(gray16_png(), LIMIT)
    expected = np.asarray(sample("red").convert("L"))
    assert np.abs(np.asarray(img)[..., 0].astype(int) - expected).max() <= 1


def test_animated_gif_gives_first_frame() -> None:
    img = decode_image(animated_gif("green"), LIMIT)
    r, g, b = np.asarray(img).reshape(-1, 3).mean(axis=0)
    assert g > r
    assert g > b


def test_cmyk_jpeg_keeps_its_colours() -> None:
    img = decode_image(encode(sample("blue").convert("CMYK"), "JPEG", quality=95), LIMIT)
    r, g, b = np.asarray(img).reshape(-1, 3).mean(axis=0)
    assert b > r + 50
    assert b > g + 50


def test_empty_file() -> None:
    with pytest.raises(EmptyFile):
        decode_image(b"", LIMIT)


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (b"%PDF-1.7\n1 0 obj\n", "PDF"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
        (b"<svg width='10' height='10'></svg>", "SVG"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIC"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00", "AVIF"),
        (encode(sample(), "TIFF"), "TIFF"),
        (b"hello, this is text and not an image", "not a"),
        (encode(sample(), "PPM"), "not a"),
    ],
)
def test_unsupported_content_is_415_whatever_the_name(data: bytes, named: str) -> None:
    with pytest.raises(UnsupportedImage, match=named):
        decode_image(data, LIMIT)


def test_truncated_image_is_corrupt() -> None:
    data = encode(sample(size=64), "JPEG")
    with pytest.raises(CorruptImage):
        decode_image(data[: len(data) // 2], LIMIT)
    png = encode(sample(size=64), "PNG")
    with pytest.raises(CorruptImage):
        decode_image(png[: len(png) - 40], LIMIT)


def test_too_many_pixels_is_refused_before_decoding() -> None:
    with pytest.raises(TooManyPixels, match="limit"):
        decode_image(encode(sample(size=64), "PNG"), max_pixels=1000)


def huge_declared_png(width: int, height: int) -> bytes:
    """A tiny file whose header claims a gigantic image (a decompression bomb's shape)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [20_000, 100_000])
def test_decompression_bomb_headers_are_refused(side: int) -> None:
    data = huge_declared_png(side, side)
    assert len(data) < 200
    with pytest.raises(TooManyPixels):
        decode_image(data, LIMIT)


def test_one_by_one_image() -> None:
    img = decode_image(encode(Image.new("L", (1, 1), 7), "BMP"), LIMIT)
    assert img.size == (1, 1)
    assert img.getpixel((0, 0)) == (7, 7, 7)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\photo.jpg", "photo.jpg"),
        ("evil\r\nSet-Cookie: x.png", "evilSet-Cookie_ x.png"),
        ("", "upload"),
        (None, "upload"),
        ("..", "upload"),
        ("a" * 300 + ".png", "a" * 100),
        ("<script>alert(1)</script>.jpg", "script_.jpg"),
        ("x<b>.png", "x_b_.png"),
    ],
)
def test_filenames_are_sanitised(raw: str | None, expected: str) -> None:
    assert safe_filename(raw) == expected


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
def test_decoder_never_lets_a_random_exception_out(fmt: str) -> None:
    rng = np.random.default_rng(0)
    good = encode(sample(size=48), fmt)
    for _ in range(200):  # flip bytes all over a valid file: every outcome is an image or a client error
        data = bytearray(good)
        for pos in rng.integers(8, len(data), 6):
            data[pos] = int(rng.integers(0, 256))
        with contextlib.suppress(CorruptImage, UnsupportedImage, TooManyPixels):
            assert decode_image(bytes(data), LIMIT).mode == "RGB"
    assert io  # keep the import used for readers who add stream-based cases


def test_a_server_fault_while_decoding_is_not_blamed_on_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """MemoryError (even raised inside Pillow) and a bug in our own conversion propagate: the HTTP edge answers
    them 500 internal_error and logs them, where a 422 corrupt_image would blame the client."""
    from PIL import ImageFile

    import app.core.imaging as imaging

    good = encode(sample(size=48), "PNG")

    def out_of_memory(self: object) -> None:
        raise MemoryError

    with monkeypatch.context() as m:
        m.setattr(ImageFile.ImageFile, "load", out_of_memory)
        with pytest.raises(MemoryError):
            decode_image(good, LIMIT)

    def a_bug(image: Image.Image) -> Image.Image:
        return image.nonexistent_method()  # type: ignore[attr-defined, no-any-return]

    with monkeypatch.context() as m:
        m.setattr(imaging, "to_rgb", a_bug)
        with pytest.raises(AttributeError):
            decode_image(good, LIMIT)

    def pillow_refuses(self: object) -> None:  # as Pillow's own decoders do on broken data
        raise OSError("broken data stream when reading image file")

    pillow_refuses.__code__ = pillow_refuses.__code__.replace(co_filename=ImageFile.__file__)
    with monkeypatch.context() as m:
        m.setattr(ImageFile.ImageFile, "load", pillow_refuses)
        with pytest.raises(CorruptImage, match="broken data stream"):
            decode_image(good, LIMIT)


PEAK_SCRIPT = r"""
import io, sys, gc
from PIL import Image
from app.core.imaging import load_rgb, open_image, working_bytes

def hwm():
    return next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM'))

data = sys.stdin.buffer.read()
image = open_image(data, 10**9)
estimate = working_bytes(image)
gc.collect()
before = hwm()
rgb = load_rgb(image)
print(estimate, hwm() - before)
"""


def big(mode: str, fmt: str, size: int = 3000, **kwargs: object) -> bytes:
    color = {"RGB": (40, 60, 200), "RGBA": (40, 60, 200, 90), "LA": (90, 120), "L": 90, "I;16": 30000,
             "CMYK": (10, 20, 30, 40), "P": 3}[mode]  # fmt: skip
    return encode(Image.new(mode, (size, size), color), fmt, **kwargs)


def rotated_jpeg(size: int = 3000) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(Image.new("RGB", (size, size), (40, 60, 200)), "JPEG", exif=exif.tobytes())


@pytest.mark.parametrize(
    "make",
    [
        lambda: big("RGB", "PNG"),
        lambda: big("RGB", "JPEG"),
        lambda: big("RGBA", "PNG"),
        lambda: big("LA", "PNG"),
        lambda: big("L", "PNG"),
        lambda: big("I;16", "PNG"),
        lambda: big("CMYK", "JPEG"),
        lambda: big("P", "PNG", transparency=3),
        lambda: big("P", "GIF"),
        rotated_jpeg,
    ],
    ids=[
        "rgb-png",
        "rgb-jpeg",
        "rgba",
        "la",
        "gray",
        "gray16",
        "cmyk",
        "palette-transparent",
        "gif",
        "exif-rotated",
    ],
)
def test_working_bytes_bounds_the_measured_peak(make) -> None:  # type: ignore[no-untyped-def]
    """The memory budget charges `working_bytes` for a decode: it must not undercount (measured in a fresh
    process, 9-megapixel images), nor be wildly above what decoding takes."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT], input=make(), capture_output=True, check=True
    ).stdout.split()
    estimate, peak = int(out[0]), int(out[1])
    assert peak <= estimate * 1.05, (peak, estimate)
    assert estimate <= max(peak, 9_000_000 * 4) * 2.5, (peak, estimate)
