"""A load generator in Python, for machines without wrk (the lent GPU machine): the same uploads, checks and stats.

Several processes (the GIL), each with one thread per connection; every connection is a keep-alive HTTP/1.1
socket that posts the multipart bodies wrk posts (BENCH_BODIES/body_*.bin, rotating from a random start) and
counts an answer that is not 200 or holds no `"label"` as bad. The request bytes are built once per body and the
answer is read with a minimal parser (status line, Content-Length or chunked): http.client parses every header
with the email package, which on a few cores makes the client, not the server, the wall.

Returns what bench/wrk_multipart.lua prints: requests, duration_us, p50_us, p99_us, mean_us, errors, bad.
Run alone: python -m bench.pyload --port 8002 --bodies bench/.work/bodies/digits-cnn-28 -c 16 -d 5
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import socket
import sys
import threading
import time
from array import array
from pathlib import Path
from typing import Any

BOUNDARY = "learnservebenchboundary"  # bench/assets.py BOUNDARY, not imported: this module needs no numpy
TIMEOUT = 30.0  # as wrk's --timeout 30s


class BadAnswer(Exception):
    """The server broke the HTTP framing (counted as a transport error, the connection is made again)."""


def request_bytes(body: bytes, host: str, port: int, path: str, boundary: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


class Connection:
    """One keep-alive connection; `exchange` sends a request and returns (status, body)."""

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.sock: socket.socket | None = None
        self.buf = b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buf = None, b""

    def _recv(self) -> bytes:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise BadAnswer("the server closed the connection")
        return chunk

    def _until(self, marker: bytes) -> bytes:
        while (i := self.buf.find(marker)) < 0:
            self.buf += self._recv()
        out, self.buf = self.buf[:i], self.buf[i + len(marker) :]
        return out

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.buf += self._recv()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def exchange(self, request: bytes) -> tuple[int, bytes]:
        if self.sock is None:
            self.sock = socket.create_connection(self.address, timeout=TIMEOUT)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(request)
        head = self._until(b"\r\n\r\n").split(b"\r\n")
        parts = head[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise BadAnswer(f"not an HTTP/1.x status line: {head[0]!r}")
        status = int(parts[1])
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        if headers.get(b"transfer-encoding") == b"chunked":
            body = b""
            while size := int(self._until(b"\r\n").split(b";")[0], 16):
                body += self._take(size)
                self._take(2)
            self._until(b"\r\n")  # no trailers expected: the empty line after the last chunk
        else:
            body = self._take(int(headers.get(b"content-length", b"0")))
        if headers.get(b"connection") == b"close" or head[0].startswith(b"HTTP/1.0"):
            self.close()
        return status, body


def _client(
    requests: list[bytes], host: str, port: int, start: float, seconds: float, out: dict[str, Any]
) -> None:
    """One connection until start + seconds; `out` gets its latencies (ns), counts and the end of its last answer."""
    latencies = array("q")
    errors = bad = 0
    i = random.randrange(len(requests))
    conn = Connection(host, port)
    deadline = start + seconds
    while (now := time.perf_counter()) < start:
        time.sleep(min(0.005, start - now))
    try:
        while time.perf_counter() < deadline:
            i = (i + 1) % len(requests)
            t0 = time.perf_counter_ns()
            try:
                status, body = conn.exchange(requests[i])
            except (OSError, BadAnswer, ValueError):
                errors += 1
                conn.close()
                continue
            latencies.append(time.perf_counter_ns() - t0)
            if status != 200 or b'"label"' not in body:
                bad += 1
    finally:
        conn.close()
        out.update(latencies=latencies, errors=errors, bad=bad, end=time.perf_counter())


def _process(
    bodies: list[bytes],
    host: str,
    port: int,
    path: str,
    boundary: str,
    threads: int,
    start: float,
    seconds: float,
) -> dict[str, Any]:
    """One worker process: `threads` connections; their latencies merged, as bytes (cheap to send back)."""
    requests = [request_bytes(b, host, port, path, boundary) for b in bodies]
    outs: list[dict[str, Any]] = [{} for _ in range(threads)]
    pool = [
        threading.Thread(target=_client, args=(requests, host, port, start, seconds, o), daemon=True)
        for o in outs
    ]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    merged = array("q")
    for o in outs:
        merged.extend(o["latencies"])
    return {
        "latencies": merged.tobytes(),
        "errors": sum(o["errors"] for o in outs),
        "bad": sum(o["bad"] for o in outs),
        "end": max(o["end"] for o in outs),
    }


def _percentile(ordered: array[int], q: float) -> float:
    if not ordered:
        return 0.0
    return float(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))])


def load_bodies(folder: Path) -> list[bytes]:
    files = sorted(folder.glob("body_*.bin"))
    if not files:
        raise FileNotFoundError(f"no body_*.bin in {folder}")
    return [f.read_bytes() for f in files]


def default_processes(connections: int) -> int:
    return max(1, min(connections, (os.cpu_count() or 2) // 4))  # wrk's rule: the server keeps the rest


def run(
    port: int,
    bodies: Path,
    connections: int,
    seconds: float,
    *,
    path: str = "/predict",
    host: str = "127.0.0.1",
    boundary: str = BOUNDARY,
    processes: int | None = None,
) -> dict[str, float]:
    """`connections` keep-alive clients for `seconds` against http://host:port/path: wrk_multipart.lua's stats."""
    payloads = load_bodies(bodies)
    n = min(connections, processes or default_processes(connections))
    threads = [connections // n + (1 if k < connections % n else 0) for k in range(n)]
    # every process starts its clients at the same perf_counter instant (CLOCK_MONOTONIC, shared on Linux),
    # far enough ahead for forked processes to be up; the duration is from there to the last answer
    start = time.perf_counter() + 0.2 + 0.02 * n
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    if ctx.get_start_method() != "fork":
        start += 2.0  # spawned processes import this module first
    with ctx.Pool(n) as pool:
        parts = pool.starmap(
            _process, [(payloads, host, port, path, boundary, t, start, seconds) for t in threads]
        )
    latencies = array("q")
    for p in parts:
        latencies.frombytes(p["latencies"])
    ordered = array("q", sorted(latencies))
    duration = max(p["end"] for p in parts) - start
    us = 1000.0
    return {
        "requests": len(latencies),
        "duration_us": duration * 1e6,
        "p50_us": _percentile(ordered, 50) / us,
        "p99_us": _percentile(ordered, 99) / us,
        "mean_us": (sum(latencies) / len(latencies) / us) if latencies else 0.0,
        "errors": sum(p["errors"] for p in parts),
        "bad": sum(p["bad"] for p in parts),
    }


_announced: set[str] = set()


def announce(generator: str) -> None:
    """One line on stderr the first time a load generator runs in this process (bench/load.py wrk())."""
    if generator not in _announced:
        _announced.add(generator)
        print(f"bench: load generator: {generator}", file=sys.stderr, flush=True)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.pyload", description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument(
        "--bodies", type=Path, required=True, help="a folder of body_*.bin (bench/.work/bodies/MODEL)"
    )
    p.add_argument("-c", "--connections", type=int, default=16)
    p.add_argument("-d", "--seconds", type=float, default=5)
    p.add_argument("--path", default="/predict")
    p.add_argument("--processes", type=int, default=None, help="default: min(connections, cores // 2)")
    a = p.parse_args()
    stats = run(a.port, a.bodies, a.connections, a.seconds, path=a.path, processes=a.processes)
    stats["rps"] = stats["requests"] / (stats["duration_us"] / 1e6)
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
