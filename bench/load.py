"""Load test of the real server behind the security layer, on 127.0.0.1.

``python bench/load.py`` builds the tiny model (offline), starts ``nexus-k serve --engine hf`` with a
fresh security database and one API key (rate limit and credits on, so every request pays for the
checks), then runs 64 concurrent clients for 60 s: plain requests, streams read to the end, and streams
the client hangs up on after the first chunk. It checks that no request failed, that the engine holds
no request afterwards (``nexus_k_engine_unfinished_requests`` on /metrics), that every request left an
audit row, and how the server's memory moved. It also measures the middleware's own cost side by side:
the same app in-process with and without ``install_security``. Results: ``bench/results/load.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


@dataclass
class LoadConfig:
    """What the load run does."""

    clients: int = 64
    """Concurrent clients, each sending one request after another."""
    duration_s: float = 60.0
    """How long the clients keep sending."""
    disconnect_share: float = 0.2
    """Share of requests that are streams the client abandons after the first chunk."""
    stream_share: float = 0.4
    """Share of requests that are streams read to the end (the rest are plain JSON requests)."""
    max_tokens: int = 16
    """Completion length asked for by every request."""
    max_model_len: int = 256
    """Context length the server runs with."""
    overhead_requests: int = 400
    """Requests per arm of the in-process middleware-overhead comparison."""
    seed: int = 0


@dataclass
class Tally:
    """What the clients saw."""

    latencies_s: list[float] = field(default_factory=list)
    ok: int = 0
    abandoned: int = 0
    failures: list[str] = field(default_factory=list)


def _pct(values: list[float], q: float) -> float:
    return round(statistics.quantiles(values, n=100)[q - 1], 4) if len(values) > 2 else float("nan")


async def _one_request(client: httpx.AsyncClient, cfg: LoadConfig, rng: random.Random, tally: Tally) -> None:
    roll = rng.random()
    body = {"model": "tiny-ko", "max_tokens": cfg.max_tokens,
            "messages": [{"role": "user", "content": f"서울시 민원 안내 {rng.randrange(10**6)}"}]}
    start = time.perf_counter()
    try:
        if roll < cfg.disconnect_share:
            async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
                if r.status_code != 200:
                    tally.failures.append(f"abandon {r.status_code}")
                    return
                async for line in r.aiter_lines():
                    if line.startswith("data:"):
                        break  # hang up mid-stream
            tally.abandoned += 1
            return
        if roll < cfg.disconnect_share + cfg.stream_share:
            async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
                lines = [line async for line in r.aiter_lines() if line]
            good = r.status_code == 200 and lines and lines[-1] == "data: [DONE]" and '"error"' not in lines[-2]
        else:
            r = await client.post("/v1/chat/completions", json=body)
            good = r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant"
        if good:
            tally.ok += 1
            tally.latencies_s.append(time.perf_counter() - start)
        else:
            tally.failures.append(f"status {r.status_code}")
    except (httpx.HTTPError, ValueError, KeyError) as err:
        tally.failures.append(f"{type(err).__name__}: {err}")


async def _client_loop(base: str, key: str, cfg: LoadConfig, seed: int, stop_at: float, tally: Tally) -> None:
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as client:
        while time.monotonic() < stop_at:
            await _one_request(client, cfg, rng, tally)


async def _sample_rss(pid: int, stop: asyncio.Event, samples: list[float]) -> None:
    import psutil

    proc = psutil.Process(pid)
    while not stop.is_set():
        samples.append(proc.memory_info().rss / 2**20)
        await asyncio.sleep(1.0)


def _gauge(base: str, key: str, name: str) -> float:
    text = httpx.get(base + "/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=30).text
    return float(next(ln for ln in text.splitlines() if ln.startswith(name + " ") or ln.startswith(name + "{"))
                 .split()[-1])


async def run_load(base: str, key: str, pid: int, cfg: LoadConfig) -> dict:
    """Drive the server for ``cfg.duration_s`` and return what happened."""
    tally, rss = Tally(), []
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_rss(pid, stop, rss))
    started = time.monotonic()
    stop_at = started + cfg.duration_s
    await asyncio.gather(*(_client_loop(base, key, cfg, cfg.seed + i, stop_at, tally) for i in range(cfg.clients)))
    elapsed = time.monotonic() - started
    deadline = time.monotonic() + 60
    while (unfinished := _gauge(base, key, "nexus_k_engine_unfinished_requests")) > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    stop.set()
    await sampler
    return {
        "requests": tally.ok + tally.abandoned + len(tally.failures),
        "completed": tally.ok,
        "abandoned_mid_stream": tally.abandoned,
        "failed": len(tally.failures),
        "failure_examples": tally.failures[:5],
        "elapsed_s": round(elapsed, 1),
        "completed_per_s": round(tally.ok / elapsed, 2),
        "latency_s": {"p50": _pct(tally.latencies_s, 50), "p95": _pct(tally.latencies_s, 95),
                      "p99": _pct(tally.latencies_s, 99)},
        "engine_unfinished_after": unfinished,
        "rss_mib": {"first": round(rss[0], 1), "peak": round(max(rss), 1), "last": round(rss[-1], 1),
                    "samples": len(rss)},
    }


def middleware_overhead(cfg: LoadConfig, tmp: Path) -> dict:
    """Requests/s of a trivial route in-process, with and without the security middleware (one key)."""
    from fastapi import FastAPI

    from serving.auth import KeyStore
    from serving.config import ServerSettings
    from serving.security import install_security

    def make(secure: bool) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat() -> dict:
            return {"choices": []}

        if secure:
            install_security(app, ServerSettings(database_url=f"sqlite:///{tmp / 'overhead.db'}"))
        return app

    key = KeyStore(f"sqlite:///{tmp / 'overhead.db'}").create("bench", rpm=10**9, token_quota=10**15)

    async def arm(app: FastAPI) -> float:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench",
                                     headers={"Authorization": f"Bearer {key}"}) as client:
            body = {"messages": [{"role": "user", "content": "안녕"}], "max_tokens": 8}
            await client.post("/v1/chat/completions", json=body)
            start = time.perf_counter()
            for _ in range(cfg.overhead_requests):
                assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
            return cfg.overhead_requests / (time.perf_counter() - start)

    bare, secure = asyncio.run(arm(make(False))), asyncio.run(arm(make(True)))
    return {"requests_per_arm": cfg.overhead_requests, "bare_per_s": round(bare, 1),
            "secured_per_s": round(secure, 1), "ms_added_per_request": round(1000 / secure - 1000 / bare, 2)}


@dataclass
class BenchServer:
    """A ``nexus-k serve`` subprocess on loopback with its own security database."""

    base: str
    database_url: str
    process: subprocess.Popen

    def stop(self) -> int:
        """SIGTERM (the server drains), then wait; returns the exit status."""
        self.process.terminate()
        try:
            return self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def start_server(tmp: Path, max_model_len: int, env_extra: dict[str, str] | None = None) -> BenchServer:
    """Build the tiny model (offline) and start ``nexus-k serve --engine hf`` on a free loopback port."""
    import socket

    from nexus_k.tiny_model import build_tiny_model

    model = build_tiny_model(tmp / "tiny-model", preset="tiny")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"sqlite:///{tmp / 'security.db'}"
    env = {**os.environ, "NEXUS_K_DATABASE_URL": url, "NEXUS_K_CACHE_DIR": str(tmp / "cache"), **(env_extra or {})}
    log = (tmp / "server.log").open("w")
    cmd = [sys.executable, "-m", "nexus_k", "serve", "--engine", "hf", "--model", str(model), "--port", str(port),
           "--served-model-name", "tiny-ko", "--max-model-len", str(max_model_len)]
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {(tmp / 'server.log').read_text()[-3000:]}")
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return BenchServer(base, url, process)
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError("server did not start in 15 minutes")


def main() -> None:
    """Run the load test and write ``bench/results/load.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=LoadConfig.clients)
    parser.add_argument("--duration", type=float, default=LoadConfig.duration_s)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "load.json")
    args = parser.parse_args()
    cfg = LoadConfig(clients=args.clients, duration_s=args.duration)

    from serving.audit import AuditStore
    from serving.auth import KeyStore

    with tempfile.TemporaryDirectory(prefix="nexus-k-load-") as tmp_name:
        tmp = Path(tmp_name)
        server = start_server(tmp, cfg.max_model_len)
        try:
            key = KeyStore(server.database_url).create("부하시험", rpm=10**6, token_quota=10**12)
            result = asyncio.run(run_load(server.base, key, server.process.pid, cfg))
            result["audit_rows"] = len(AuditStore(server.database_url).recent(10**7))
        finally:
            server.stop()
        result["middleware_overhead"] = middleware_overhead(cfg, tmp)
    report = {"config": asdict(cfg), "machine": {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]},
              "result": result}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2, ensure_ascii=False))
    ok = result["failed"] == 0 and result["engine_unfinished_after"] == 0 and result["audit_rows"] >= result["requests"]
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
