"""Memory attacks of issue 20 (findings 2-5), each against a fresh real server, measured from /proc.

`python -m bench.security_rss` trains a tiny learner resized with `pad` (3 colours, 32 px, one epoch) into
bench/.work/security, then, for each attack, starts `python -m app serve` with default settings, reads the
server's peak RSS (VmHWM) once it is ready, sends the attack, and reads it again:

- zTXt: one /predict/batch of 16 PNGs, each carrying 62 zTXt chunks that inflate to 1,000,000 bytes each;
- v2 {}: a 48 MiB Open Inference body whose input's `data` is `{}` items, to /v2/models/NAME/infer, while a
  thread polls /health/live (the longest answer time is the event loop's stall). (`{}` items as the inputs
  themselves are worse on today's code: pydantic's four errors per item grew the server past 22 GB, OOM-killed.)
- pad: a 12000x2 PNG to /predict on the pad learner;
- announcers: 8 connections announcing 64 MiB to /predict/batch and sending nothing, then a normal /predict.

Prints one markdown row per attack (bench/RESULTS.md keeps them).
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

WORK = Path(__file__).parent / ".work" / "security"
MB = 2**20
MODEL = "colors"


def train_model() -> Path:
    model = WORK / f"{MODEL}.pkl"
    if model.exists():
        return model
    rng = np.random.default_rng(0)
    for label, color in {"red": (210, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 210)}.items():
        folder = WORK / "data" / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(16):
            pixels = np.clip(rng.normal(color, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    cmd = [sys.executable, "-m", "training", "train", str(WORK / "data"), "--out", str(model), "--arch", "cnn",
           "--size", "32", "--epochs", "1", "--bs", "16", "--resize-method", "pad", "--no-verify",
           "--reports", str(WORK / "reports")]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return model


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_text(chunks: int, inflated: int) -> bytes:
    """A 4x4 PNG with `chunks` zTXt chunks before its pixels, each inflating to `inflated` bytes."""
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 40, 40)).save(buf, "PNG")
    png = buf.getvalue()
    text = zlib.compress(b"a" * inflated, 9)
    extra = b"".join(_chunk(b"zTXt", f"k{i}".encode() + b"\0\0" + text) for i in range(chunks))
    ihdr_end = 8 + 25  # signature, then IHDR (length, type, 13 bytes, crc)
    return png[:ihdr_end] + extra + png[ihdr_end:]


def thin_png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (40, 60, 210)).save(buf, "PNG", optimize=True)
    return buf.getvalue()


@dataclass
class Server:
    base: str
    port: int
    proc: subprocess.Popen[bytes]

    def peak(self) -> float:
        return _status(self.proc.pid, "VmHWM") / MB


def _status(pid: int, key: str) -> int:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith(key))
    return int(line.split()[1]) * 1024


@contextmanager
def serve(model: Path, **env: str) -> Iterator[Server]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LEARNSERVE_")}
    environ |= {"LEARNSERVE_MODEL_PATH": str(model), "LEARNSERVE_LOG_LEVEL": "warning"}
    environ |= {f"LEARNSERVE_{k}": v for k, v in env.items()}
    log = (WORK / "server.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--port", str(port)], env=environ,
                            stdout=log, stderr=log)  # fmt: skip
    server = Server(f"http://127.0.0.1:{port}", port, proc)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start: {(WORK / 'server.log').read_text()}")
            try:
                if httpx.get(f"{server.base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def attack_ztxt(server: Server) -> tuple[int, str]:
    image = png_with_text(62, 1_000_000)
    files = [("files", (f"{i}.png", image, "image/png")) for i in range(16)]
    r = httpx.post(f"{server.base}/predict/batch", files=files, timeout=300)
    codes = sorted({x.get("error", {}).get("code", "ok") for x in r.json().get("results", [])})
    return 16 * len(image), f"{r.status_code} {'/'.join(codes) or r.json().get('code')}"


def attack_v2(server: Server) -> tuple[int, str]:
    head = b'{"inputs":[{"name":"image","datatype":"BYTES","shape":[1],"data":['
    body = head + b",".join([b"{}"] * ((48 * MB - len(head)) // 3)) + b"]}]}"
    worst = [0.0]
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            started = time.perf_counter()
            httpx.get(f"{server.base}/health/live", timeout=60)
            worst[0] = max(worst[0], time.perf_counter() - started)
            done.wait(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        r = httpx.post(f"{server.base}/v2/models/{MODEL}/infer", content=body, timeout=300,
                       headers={"Content-Type": "application/json"})  # fmt: skip
    finally:
        done.set()
        poller.join()
    return len(body), f"{r.status_code}; /health/live worst {worst[0]:.2f} s"


def attack_pad(server: Server) -> tuple[int, str]:
    image = thin_png(12000, 2)
    r = httpx.post(f"{server.base}/predict", files={"file": ("thin.png", image, "image/png")}, timeout=300)
    return len(image), f"{r.status_code} {r.json().get('code', r.json().get('label'))}"


def attack_announcers(server: Server) -> tuple[int, str]:
    head = (f"POST /predict/batch HTTP/1.1\r\nHost: x\r\nContent-Length: {64 * MB}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n\r\n").encode()  # fmt: skip
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(8)]
    try:
        for sock in socks:
            sock.sendall(head)
        time.sleep(1.0)  # a benchmark, not a test: let the server take the headers in
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), (200, 40, 40)).save(buf, "PNG")
        started = time.perf_counter()
        r = httpx.post(f"{server.base}/predict", files={"file": ("ok.png", buf.getvalue(), "image/png")},
                       timeout=120)  # fmt: skip
        took = time.perf_counter() - started
    finally:
        for sock in socks:
            sock.close()
    return 8 * len(head), f"normal /predict: {r.status_code} {r.json().get('code', 'ok')} in {took:.2f} s"


ATTACKS: dict[str, tuple[str, Callable[[Server], tuple[int, str]]]] = {
    "ztxt": ("(2) /predict/batch, 16 PNGs x 62 zTXt chunks of 1 MB", attack_ztxt),
    "v2": ("(3) 48 MiB v2 body, `data` of `{}` items", attack_v2),
    "pad": ("(4) 12000x2 PNG, pad learner", attack_pad),
    "announcers": ("(5) 8 connections announcing 64 MiB, then /predict", attack_announcers),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("attacks", nargs="*", help=f"some of: {', '.join(ATTACKS)} (default: all)")
    args = parser.parse_args(argv)
    if unknown := set(args.attacks) - set(ATTACKS):
        parser.error(f"unknown attack: {', '.join(sorted(unknown))}")
    WORK.mkdir(parents=True, exist_ok=True)
    model = train_model()
    print("| attack | bytes sent | peak RSS MB before -> after | seconds | answer |")
    print("|---|---:|---:|---:|---|")
    for name in args.attacks or ATTACKS:
        title, attack = ATTACKS[name]
        with serve(model) as server:
            before = server.peak()
            started = time.perf_counter()
            sent, answer = attack(server)
            seconds = time.perf_counter() - started
            after = server.peak()
        print(f"| {title} | {sent:,} | {before:,.0f} -> {after:,.0f} (+{after - before:,.0f}) | {seconds:.1f} "
              f"| {answer} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
