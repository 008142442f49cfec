"""Load test of the real server on 127.0.0.1, with the security layer on and off, side by side.

``python -m bench.load`` builds the tiny model (offline) and runs two arms one after the other, each a
fresh server process driven by 64 concurrent clients for 60 s (plain requests, streams read to the end,
and streams the client hangs up on after the first chunk):

* ``off``: the same app and uvicorn drain as ``nexus-k serve``, with the security middleware taken out
  (no keys, rate limits, credits or audit);
* ``on``: ``nexus-k serve`` itself with one API key that has a rate limit, credits and the PII guard in
  ``mask`` mode, so every request pays for the key lookup, the rate-window update, the credit reservation and
  settlement, the guard's scan of its prompt and answer (streams included) and the hash-chained audit row.

Per arm: completed requests/s, latency p50/p95/p99, HTTP statuses (no 5xx allowed), engine requests left
over (``nexus_k_engine_unfinished_requests``), server memory, and how it stops on SIGTERM. For ``on`` also:
one audit row per request sent (none lost) and credits that add up (used = sum of the audit rows, nothing
left reserved). Plus the middleware's own cost in-process on a trivial route. Results:
``bench/results/load.json``; it exits 1 when any check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from fastapi import Request  # module level: the in-process route's annotation is resolved from these globals

from serving.launcher import free_port, serve_command, start_process

REPO = Path(__file__).resolve().parent.parent


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
    overhead_requests: int = 1000
    """Requests per arm and round of the in-process middleware-overhead comparison."""
    overhead_rounds: int = 3
    """Rounds of the in-process comparison, the arms alternating (medians reported: a busy machine is noisy)."""
    seed: int = 0


@dataclass
class Tally:
    """What the clients saw."""

    latencies_s: list[float] = field(default_factory=list)
    ok: int = 0
    abandoned: int = 0
    failures: list[str] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    """HTTP status of every answer the clients got (a hang-up counts the status it had seen)."""


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
                tally.statuses[r.status_code] += 1
                if r.status_code != 200:
                    tally.failures.append(f"abandon {r.status_code}: {(await r.aread()).decode()[:300]}")
                    return
                async for line in r.aiter_lines():
                    if line.startswith("data:"):
                        break  # hang up mid-stream
            tally.abandoned += 1
            return
        if roll < cfg.disconnect_share + cfg.stream_share:
            async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
                tally.statuses[r.status_code] += 1
                lines = [line async for line in r.aiter_lines() if line]
            text = " ".join(lines)
            good = r.status_code == 200 and lines and lines[-1] == "data: [DONE]" and '"error"' not in lines[-2]
        else:
            r = await client.post("/v1/chat/completions", json=body)
            tally.statuses[r.status_code] += 1
            text = r.text
            good = r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant"
        if good:
            tally.ok += 1
            tally.latencies_s.append(time.perf_counter() - start)
        else:
            tally.failures.append(f"status {r.status_code}: {text[:300]}")
    except (httpx.HTTPError, ValueError, KeyError) as err:
        tally.failures.append(f"{type(err).__name__}: {err}")


def _auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


async def _client_loop(base: str, key: str | None, cfg: LoadConfig, seed: int, stop_at: float,
                       tally: Tally) -> None:
    rng = random.Random(seed)
    headers = _auth(key)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as client:
        while time.monotonic() < stop_at:
            await _one_request(client, cfg, rng, tally)


async def _sample_rss(pid: int, stop: asyncio.Event, samples: list[float]) -> None:
    import psutil

    proc = psutil.Process(pid)
    while not stop.is_set():
        samples.append(proc.memory_info().rss / 2**20)
        await asyncio.sleep(1.0)


def _gauge(base: str, key: str | None, name: str) -> float:
    text = httpx.get(base + "/metrics", headers=_auth(key), timeout=30).text
    return float(next(ln for ln in text.splitlines() if ln.startswith(name + " ") or ln.startswith(name + "{"))
                 .split()[-1])


async def run_load(base: str, key: str | None, pid: int, cfg: LoadConfig) -> dict:
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
        "statuses": {str(code): n for code, n in sorted(tally.statuses.items())},
        "server_errors_5xx": sum(n for code, n in tally.statuses.items() if code >= 500),
        "elapsed_s": round(elapsed, 1),
        "completed_per_s": round(tally.ok / elapsed, 2),
        "latency_s": {"p50": _pct(tally.latencies_s, 50), "p95": _pct(tally.latencies_s, 95),
                      "p99": _pct(tally.latencies_s, 99)},
        "engine_unfinished_after": unfinished,
        "rss_mib": {"first": round(rss[0], 1), "peak": round(max(rss), 1), "last": round(rss[-1], 1),
                    "samples": len(rss)},
    }


def middleware_overhead(cfg: LoadConfig, tmp: Path) -> dict:
    """Requests/s of a trivial route in-process, with and without the security middleware: one key with a rate
    limit, credits (the route reserves and uses tokens through the usage record) and the PII guard in ``mask``
    mode (the route passes the prompt and its answer through the guard, as the real handlers do; without the
    layer the guard is off and passes them through); the hash-chained audit row of every request committed
    before its answer goes out."""
    from fastapi import FastAPI

    from serving.config import ServerSettings
    from serving.security.auth import KeyStore
    from serving.security.install import install_security
    from serving.security.pii_guard import guard_prompt_texts, guard_reply
    from serving.usage import usage_of

    def make(secure: bool) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> dict:
            usage = usage_of(request.state)
            body = await request.json()
            usage.start("chat.completions", "bench", None)
            guard_prompt_texts([m["content"] for m in body["messages"]], usage, "messages")
            await usage.reserve(12)  # a no-op without the security layer
            usage.prompt_tokens, usage.completion_tokens = 4, 8
            answer = guard_reply("안녕하세요. 무엇을 도와드릴까요?", usage)
            return {"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}]}

        if secure:
            install_security(app, ServerSettings(database_url=f"sqlite:///{tmp / 'overhead.db'}"))
        return app

    key = KeyStore(f"sqlite:///{tmp / 'overhead.db'}").create("bench", rpm=10**9, token_quota=10**15,
                                                              pii_guard="mask")

    async def arm(app: FastAPI) -> tuple[float, float]:
        """Requests/s over the arm, and the median time of one request in ms."""
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench",
                                     headers={"Authorization": f"Bearer {key}"}) as client:
            body = {"messages": [{"role": "user", "content": "안녕"}], "max_tokens": 8}
            await client.post("/v1/chat/completions", json=body)
            times = []
            start = time.perf_counter()
            for _ in range(cfg.overhead_requests):
                sent = time.perf_counter()
                answer = await client.post("/v1/chat/completions", json=body)
                times.append(time.perf_counter() - sent)
                assert answer.status_code == 200, answer.text
            return cfg.overhead_requests / (time.perf_counter() - start), statistics.median(times) * 1000

    apps = make(False), make(True)
    rounds = [(asyncio.run(arm(apps[0])), asyncio.run(arm(apps[1]))) for _ in range(cfg.overhead_rounds)]
    bare, secure = statistics.median(r[0][0] for r in rounds), statistics.median(r[1][0] for r in rounds)
    bare_ms, secure_ms = statistics.median(r[0][1] for r in rounds), statistics.median(r[1][1] for r in rounds)
    return {"requests_per_arm": cfg.overhead_requests, "rounds": [[round(b[0], 1), round(s[0], 1)] for b, s in rounds],
            "bare_per_s": round(bare, 1), "secured_per_s": round(secure, 1),
            "secured_over_bare": round(secure / bare, 3),
            "ms_added_per_request": round(1000 / secure - 1000 / bare, 3),
            "median_request_ms": {"bare": round(bare_ms, 4), "secured": round(secure_ms, 4)},
            "median_ms_added_per_request": round(secure_ms - bare_ms, 4)}


@dataclass
class BenchServer:
    """A server subprocess on loopback with its own security database."""

    base: str
    database_url: str
    process: subprocess.Popen
    log: Path

    def stop(self) -> dict:
        """SIGTERM (the server drains), then wait; the exit status and how long the stop took."""
        started = time.monotonic()
        self.process.terminate()
        try:
            status = self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait()
        return {"exit_status": status, "stopped_by_sigterm": status in (0, -signal.SIGTERM),
                "stop_s": round(time.monotonic() - started, 2)}


def serve_without_security(model: str, port: int, max_model_len: int) -> None:
    """What ``nexus-k serve --engine hf`` runs, minus the security middleware (the load test's "off" arm)."""
    from serving.app import build_app
    from serving.config import ServerSettings
    from serving.drain import run_server
    from serving.security.middleware import SecurityMiddleware

    settings = ServerSettings(model=model, engine="hf", port=port, served_model_name="tiny-ko",
                              max_model_len=max_model_len)
    app = build_app(settings)
    app.user_middleware = [m for m in app.user_middleware if m.cls is not SecurityMiddleware]
    run_server(app, app.state.drain, host="127.0.0.1", port=port, graceful_timeout_s=30)


def start_server(tmp: Path, max_model_len: int, env_extra: dict[str, str] | None = None,
                 secured: bool = True) -> BenchServer:
    """Build the tiny model (offline) and start ``nexus-k serve --engine hf`` on a free loopback port
    (``secured=False``: the same server without the security middleware)."""
    from training.tiny_model import build_tiny_model

    model = tmp / "tiny-model"
    if not (model / "config.json").is_file():
        build_tiny_model(model, preset="tiny")
    port = free_port()
    name = "secured" if secured else "open"
    url = f"sqlite:///{tmp / f'security-{name}.db'}"
    env = {"NEXUS_K_DATABASE_URL": url, "NEXUS_K_CACHE_DIR": str(tmp / "cache"), **(env_extra or {})}
    if secured:
        cmd = serve_command("--engine", "hf", "--model", str(model), "--port", str(port),
                            "--served-model-name", "tiny-ko", "--max-model-len", str(max_model_len))
    else:
        cmd = [sys.executable, "-m", "bench.load", "--serve-open", str(model), "--port", str(port),
               "--max-model-len", str(max_model_len)]
    server = start_process(cmd, tmp / f"server-{name}.log", port, env, timeout=900, cwd=REPO)
    return BenchServer(server.base_url, url, server.process, server.log)


def audit_and_credits(database_url: str, org: str, sent: int) -> dict:
    """Whether every chat request sent left one audit row and the credits add up exactly."""
    from sqlalchemy import func, select

    from serving.security.auth import KeyStore
    from serving.storage.db import AuditRecord, get_sessionmaker

    with get_sessionmaker(database_url)() as s:
        chat = AuditRecord.path == "/v1/chat/completions"
        rows = s.scalar(select(func.count()).where(chat)) or 0
        grouped = select(AuditRecord.status, func.count()).where(chat).group_by(AuditRecord.status)
        by_status = {status: n for status, n in s.execute(grouped).all()}
        tokens = s.scalar(select(func.sum(AuditRecord.prompt_tokens + AuditRecord.completion_tokens))
                          .where(AuditRecord.org_name == org)) or 0
    info = next(k for k in KeyStore(database_url).list() if k.org == org)
    return {"chat_requests_sent": sent, "chat_audit_rows": rows, "audit_rows_lost": sent - rows,
            "audit_statuses": {str(k): v for k, v in sorted(by_status.items())},
            "tokens_used": info.tokens_used, "tokens_in_audit_rows": tokens,
            "credits_consistent": info.tokens_used == tokens and info.tokens_remaining == info.token_quota - tokens}


def run_arm(tmp: Path, cfg: LoadConfig, secured: bool) -> dict:
    """One arm: a fresh server, the clients, the checks, a SIGTERM."""
    from serving.security.auth import KeyStore

    load_start = os.getloadavg()[0]
    server = start_server(tmp, cfg.max_model_len, secured=secured)
    org = "부하시험"
    try:
        key = (KeyStore(server.database_url).create(org, rpm=10**6, token_quota=10**12, pii_guard="mask")
               if secured else None)
        result = asyncio.run(run_load(server.base, key, server.process.pid, cfg))
    finally:
        result_stop = server.stop()
    result["stop"] = result_stop
    if secured:
        result["audit"] = audit_and_credits(server.database_url, org, result["requests"])
    result["load_avg_1m"] = {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)}
    return result


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def checks_pass(arms: dict) -> bool:
    """Zero failures and 5xx, no leaked engine requests, a clean stop; for "on" no lost audit rows."""
    for arm in arms.values():
        if arm["failed"] or arm["server_errors_5xx"] or arm["engine_unfinished_after"]:
            return False
        if not arm["stop"]["stopped_by_sigterm"]:
            return False
    audit = arms["on"]["audit"]
    return audit["audit_rows_lost"] == 0 and audit["credits_consistent"]


def main() -> None:
    """Run both arms and write ``bench/results/load.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=LoadConfig.clients)
    parser.add_argument("--duration", type=float, default=LoadConfig.duration_s)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "load.json")
    parser.add_argument("--order", choices=["off,on", "on,off"], default="off,on", help="Which arm runs first.")
    parser.add_argument("--overhead-only", action="store_true",
                        help="Only the in-process middleware comparison: its result replaces that part of --out.")
    parser.add_argument("--serve-open", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--max-model-len", type=int, default=LoadConfig.max_model_len, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_open:
        serve_without_security(args.serve_open, args.port, args.max_model_len)
        return
    cfg = LoadConfig(clients=args.clients, duration_s=args.duration)
    if args.overhead_only:
        with tempfile.TemporaryDirectory(prefix="nexus-k-load-") as tmp_name:
            load = [round(x, 2) for x in os.getloadavg()]
            overhead = {**middleware_overhead(cfg, Path(tmp_name)), "cpus": os.cpu_count(), "load_avg_start": load,
                        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        report = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {}
        report["middleware_overhead_in_process"] = overhead
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(json.dumps(overhead, indent=2))
        return
    machine = {"cpus": os.cpu_count(), "load_avg_start": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="nexus-k-load-") as tmp_name:
        tmp = Path(tmp_name)
        arms = {arm: run_arm(tmp, cfg, secured=arm == "on") for arm in args.order.split(",")}
        overhead = middleware_overhead(cfg, tmp)
    machine["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    on, off = arms["on"], arms["off"]
    comparison = {
        "throughput_on_over_off": _ratio(on["completed_per_s"], off["completed_per_s"]),
        "p50_on_over_off": _ratio(on["latency_s"]["p50"], off["latency_s"]["p50"]),
        "p99_on_over_off": _ratio(on["latency_s"]["p99"], off["latency_s"]["p99"]),
    }
    report = {"config": asdict(cfg), "order": args.order, "machine": machine, "arms": arms, "comparison": comparison,
              "middleware_overhead_in_process": overhead, "checks_pass": checks_pass(arms)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2, ensure_ascii=False))
    sys.exit(0 if report["checks_pass"] else 1)


if __name__ == "__main__":
    main()
