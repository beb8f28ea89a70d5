"""LEARNSERVE_WORKERS: several whole server processes on one port, under one supervisor.

Why whole replicas (each with its model, its batcher, torch threads split between them) rather than front ends
feeding one model process: on CPU the wall is one Python process doing HTTP, decoding and the model under one GIL,
and two replicas of one thread each served the digits CNN 1.3-1.7x faster on two cores than one process of two
threads, while a compute-bound resnet gained nothing (README: Several processes). On a GPU the same wall (one
process's HTTP and decoding, not the card) is reasoned, not yet measured here: `auto` runs a replica per two cores
there, and a front-end / model-process split is the next design if replicas leave the card idle.

The supervisor is uvicorn's (it binds the socket once, spawns the processes, replaces one that dies, and stops
the whole server when one cannot start), with what makes N processes one server:
- one budget: each process gets 1/N of LEARNSERVE_MAX_INFLIGHT_BYTES, MAX_REQUESTS and MAX_EXPLAINS, so all
  together hold no more than the settings say; the overload rule (503 + Retry-After) is each process's own;
- no oversubscription: workers x torch threads never exceed the cores (refused at start when asked for);
- one readiness: the supervisor publishes whether every process is ready (a file in its run folder); a process
  answers ready only while that is so, so a dead or restarting process makes the server 503 until replaced;
- one reload: SIGHUP to the supervisor, or POST /admin/reload to any process, reloads the models in every process,
  in place (no process restarts, so no request fails);
- one set of metrics: prometheus-client's multiprocess mode (counters and histograms summed over the processes,
  gauges per their meaning), whichever process answers /metrics;
- SIGTERM drains every process (each stops accepting, finishes its requests, exits), then the supervisor exits 0.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from app.api.deps import READY_FILE, ServerState
from app.config import Settings
from app.core.process_plan import Plan, share

logger = logging.getLogger("learnserve")


class Worker(Process):
    """One server process: builds its app from the pickled settings once spawned (the app itself cannot be)."""

    def __init__(
        self, config: uvicorn.Config, sockets: list[socket.socket], settings: Settings, run_dir: Path
    ):
        self.settings = settings
        self.run_dir = run_dir
        self.parent = os.getpid()  # the supervisor's: /admin/reload signals it, and only it
        super().__init__(config, sockets)

    def target(self, sockets: list[socket.socket] | None = None) -> None:  # in the spawned process
        from app.api.server import build_server

        threading.Thread(target=self.always_pong, daemon=True).start()  # answers "starting" meanwhile
        try:
            self._server = build_server(
                self.settings, ServerState(supervisor=self.run_dir, supervisor_pid=self.parent)
            )
        except Exception:  # it would fail the same way in every replacement: stop the server instead
            logger.exception("a server process could not be built")
            sys.exit(STARTUP_FAILURE)
        self._server.run(sockets)

    def pong(self) -> None:
        """The supervisor's health check: alive, and started (the app's models loaded) or not yet."""
        self.child_conn.recv()
        self.child_conn.send(self._server is not None and self._server.started)


class Supervisor(Multiprocess):
    def __init__(
        self, config: uvicorn.Config, sockets: list[socket.socket], settings: Settings, run_dir: Path
    ):
        super().__init__(config, sockets)
        self.settings = settings
        self.run_dir = run_dir
        self.failed = False
        self._published: bool | None = None
        self._owed: set[int] = set()  # processes owed a SIGHUP once they are ready

    def spawn(self) -> Worker:
        worker = Worker(self.config, self.sockets, self.settings, self.run_dir)
        worker.start()
        return worker

    def init_processes(self) -> None:
        self.processes = [self.spawn() for _ in range(self.processes_num)]

    def run(self) -> None:
        logger.info("supervisor [%d]: %d worker processes", os.getpid(), self.processes_num)
        self.init_processes()
        try:
            while not self.should_exit.wait(0.25):
                self.handle_signals()
                self.keep_subprocess_alive()
                self.publish_readiness()
                self.pay_reloads()
        finally:  # also on an error of its own: never leave processes serving without a supervisor
            self.publish(False)  # every process answers 503 from here on, then drains
            self.terminate_all()
            self.join_all()
        logger.info("supervisor [%d]: every worker has exited", os.getpid())

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for idx, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # hung, or already gone
            process.join()
            mark_dead(process.pid)
            if process.exitcode == STARTUP_FAILURE:
                logger.error("worker [%s] could not start: stopping the server", process.pid)
                self.failed = True
                self.should_exit.set()
                return
            logger.warning("worker [%s] died (exit %s): starting another", process.pid, process.exitcode)
            self.publish(False)
            self.processes[idx] = self.spawn()

    def publish_readiness(self) -> None:
        ready = len(self.processes) == self.processes_num and all(
            p.is_ready(timeout=1) for p in self.processes
        )
        self.publish(ready)

    def publish(self, ready: bool) -> None:
        path = self.run_dir / READY_FILE
        if ready == self._published and path.exists() == ready:  # (re-made if a /tmp cleaner took it)
            return
        if ready:
            path.touch()
        else:
            path.unlink(missing_ok=True)
        self._published = ready

    def signal_workers(self, sig: int) -> None:
        """To every started process; one still starting gets it once it is ready (until its lifespan has
        installed the handler a SIGHUP would end it, and it may have read the files before they changed)."""
        for process in self.processes:
            if process.pid is None:
                continue
            if process.is_ready(timeout=1):
                os.kill(process.pid, sig)
            else:
                self._owed.add(process.pid)

    def pay_reloads(self) -> None:
        for process in self.processes:
            pid = process.pid
            if pid is not None and pid in self._owed and process.is_ready(timeout=1):
                self._owed.discard(pid)
                os.kill(pid, signal.SIGHUP)
        self._owed &= {p.pid for p in self.processes if p.pid is not None}

    def handle_hup(self) -> None:
        logger.info("SIGHUP: every worker reloads its models")
        self.signal_workers(signal.SIGHUP)

    def handle_usr1(self) -> None:  # a worker took POST /admin/reload: the others reload too
        self.signal_workers(signal.SIGHUP)

    def handle_ttin(self) -> None:
        logger.info("SIGTTIN ignored: the number of processes is LEARNSERVE_WORKERS")

    def handle_ttou(self) -> None:
        self.handle_ttin()


def mark_dead(pid: int | None) -> None:
    """Drop a dead process's live gauges from the metrics files (its counters stay: totals never go back)."""
    if pid is not None and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def serve_workers(settings: Settings, host: str, port: int, chosen: Plan, log_config: dict[str, Any]) -> int:
    """Bind once, spawn `chosen.workers` processes with their share, supervise until SIGTERM/SIGINT."""
    run_dir = Path(tempfile.mkdtemp(prefix="learnserve-"))
    metrics_dir = run_dir / "metrics"
    metrics_dir.mkdir()
    saved = {k: os.environ.get(k) for k in ("PROMETHEUS_MULTIPROC_DIR", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # read by prometheus-client in each process
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(
        chosen.threads
    )  # read before torch loads
    config = uvicorn.Config(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=chosen.workers,
        log_config=log_config,
    )
    try:
        sock = config.bind_socket()
    except SystemExit:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    supervisor = Supervisor(config, [sock], share(settings, chosen), run_dir)
    try:
        supervisor.run()
    finally:
        sock.close()
        shutil.rmtree(run_dir, ignore_errors=True)
        for key, value in saved.items():  # this process's environment as it was
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return STARTUP_FAILURE if supervisor.failed else 0
