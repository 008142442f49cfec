"""Run ``nexus-k serve`` (or another HTTP server command) as a subprocess on loopback and wait until it
answers ``GET /health``: how tests, benchmarks and scripts start live servers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

HOST = "127.0.0.1"


class ServerStartError(RuntimeError):
    """The server exited, or did not answer /health in time; the message ends with its log's tail."""


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def serve_command(*args: str) -> list[str]:
    """The ``nexus-k serve ARGS`` command line, run by this interpreter."""
    return [sys.executable, "-m", "nexus_k", "serve", *args]


def _log_tail(log: Path | None, chars: int = 4000) -> str:
    return f":\n{log.read_text(errors='replace')[-chars:]}" if log is not None and log.is_file() else ""


def wait_healthy(base_url: str, timeout: float, alive: Callable[[], bool] = lambda: True, log: Path | None = None,
                 poll: float = 0.5) -> None:
    """Return once ``base_url/health`` answers 200; ServerStartError if ``alive()`` turns false or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise ServerStartError(f"the server at {base_url} exited before answering /health{_log_tail(log)}")
        try:
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(poll)
    raise ServerStartError(f"the server at {base_url} did not answer /health in {timeout:.0f} s{_log_tail(log)}")


@dataclass
class ServerProcess:
    """A server subprocess, its address and its log."""

    base_url: str
    process: subprocess.Popen
    log: Path

    @property
    def api(self) -> str:
        """The OpenAI-compatible base URL (``.../v1``)."""
        return f"{self.base_url}/v1"

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (the server drains), SIGKILL if it lingers; returns the exit status."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def launch(command: Sequence[str], log: Path, port: int, env: dict[str, str] | None = None,
           cwd: Path | None = None) -> ServerProcess:
    """Start ``command`` (which listens on ``port``) in its own session, output into ``log``; do not wait."""
    with log.open("w") as handle:
        process = subprocess.Popen(list(command), stdout=handle, stderr=subprocess.STDOUT,
                                   env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)
    return ServerProcess(f"http://{HOST}:{port}", process, log)


def start_process(command: Sequence[str], log: Path, port: int, env: dict[str, str] | None = None,
                  timeout: float = 600, cwd: Path | None = None) -> ServerProcess:
    """:func:`launch` and wait until healthy; on failure the process is killed and ServerStartError raised."""
    server = launch(command, log, port, env, cwd)
    try:
        wait_healthy(server.base_url, timeout, lambda: server.process.poll() is None, log)
    except BaseException:
        server.stop(timeout=5)
        raise
    return server


def start_serve(args: Sequence[str], log: Path, env: dict[str, str] | None = None, timeout: float = 600,
                port: int | None = None) -> ServerProcess:
    """``nexus-k serve ARGS --port P`` on a free loopback port (``env`` added to this process's), once healthy."""
    port = port or free_port()
    return start_process(serve_command(*args, "--port", str(port)), log, port, env, timeout)
