"""What the benchmark needs, made on the spot: three models and, for each, real PNG/JPEG files and their uploads."""

from __future__ import annotations

import io
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

WORK = Path(__file__).parent / ".work"
BOUNDARY = "learnservebenchboundary"
N_IMAGES = 64


@dataclass(frozen=True)
class BenchModel:
    name: str
    arch: str
    size: int  # model input size
    image_size: int  # size of the uploaded files

    @property
    def path(self) -> Path:
        return WORK / "models" / f"{self.name}.pkl"

    @property
    def images(self) -> Path:
        return WORK / "images" / self.name

    @property
    def bodies(self) -> Path:
        return WORK / "bodies" / self.name


MODELS = {
    "digits-cnn-28": BenchModel("digits-cnn-28", "cnn", 28, 28),
    "resnet18-64": BenchModel("resnet18-64", "resnet18", 64, 64),
    "resnet34-224": BenchModel("resnet34-224", "resnet34", 224, 256),
}


def ensure_model(m: BenchModel, log: Path) -> Path:
    """Export the model untrained (zero epochs, no pretrained weights): the compute is what matters."""
    if m.path.is_file() and m.path.with_suffix(".onnx").is_file():
        return m.path
    m.path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "training", "train", "digits", "--arch", m.arch, "--size", str(m.size),
        "--untrained", "--no-pretrained", "--valid-pct", "0.05", "--bs", "32", "--out", str(m.path),
        "--reports", str(WORK / "reports"), "--onnx",
    ]  # fmt: skip
    with log.open("a") as out:
        subprocess.run(cmd, check=True, stdout=out, stderr=subprocess.STDOUT)
    m.path.chmod(0o644)
    return m.path


def ensure_images(m: BenchModel) -> list[Path]:
    """N_IMAGES different digits, tinted and upscaled to the upload size; alternating PNG and JPEG."""
    if m.images.is_dir() and len(list(m.images.iterdir())) == N_IMAGES:
        return sorted(m.images.iterdir())
    from sklearn.datasets import load_digits

    m.images.mkdir(parents=True, exist_ok=True)
    m.bodies.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    rng = np.random.default_rng(0)
    files = []
    for i in range(N_IMAGES):
        gray = (digits.images[i] * 255 / 16).astype(np.uint8)
        tint = rng.uniform(0.5, 1.0, 3)
        rgb = (np.stack([gray] * 3, axis=-1) * tint).astype(np.uint8)
        img = Image.fromarray(rgb).resize((m.image_size, m.image_size), Image.Resampling.BICUBIC)
        fmt, ext = ("PNG", "png") if i % 2 == 0 else ("JPEG", "jpg")
        buf = io.BytesIO()
        img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        path = m.images / f"img_{i:03d}.{ext}"
        path.write_bytes(buf.getvalue())
        body = (
            (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
                f"Content-Type: image/{ext}\r\n\r\n"
            ).encode()
            + buf.getvalue()
            + f"\r\n--{BOUNDARY}--\r\n".encode()
        )
        (m.bodies / f"body_{i:03d}.bin").write_bytes(body)
        files.append(path)
    return files
