"""The Batch API against the same requests sent online, on one live server (``nexus-k serve --engine hf`` on the
tiny model unless ``--model``/``--engine`` say otherwise), in one run:

1. online: ``--lines`` chat requests from ``--clients`` concurrent clients -> requests/s;
2. idle: a light interactive load (``--probe-clients`` streaming clients) -> TTFT p50/p95;
3. batch: the same ``--lines`` requests as a batch, with the same light interactive load running beside it ->
   batch requests/s (create to completed, validation and output file included) and the interactive TTFT;
4. memory: a ``--big-mb`` MB input file uploaded, validated, started and cancelled -> the server's peak RSS
   (VmHWM) before and after.

Results: ``bench/results/batch.json`` (``--out``). Targets of issue 16: batch >= 0.9x online requests/s;
interactive TTFT p50 during the batch <= 1.5x idle.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import openai

from serving.launcher import ServerProcess, start_serve

REPO = Path(__file__).resolve().parent.parent
CHAT = "/v1/chat/completions"
MODEL = "tiny-ko"


def body(i: int, max_tokens: int) -> dict:
    """One chat request (a fixed number of tokens: ``ignore_eos``)."""
    return {"model": MODEL, "messages": [{"role": "user", "content": f"민원 {i}번을 한 문장으로 요약해 주세요."}],
            "max_tokens": max_tokens, "ignore_eos": True}


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def pct(values: list[float], q: int) -> float | None:
    return round(statistics.quantiles(values, n=100)[q - 1], 4) if len(values) > 2 else None


async def online(base: str, lines: int, clients: int, max_tokens: int) -> dict:
    """``lines`` requests from ``clients`` concurrent clients."""
    queue = iter(range(lines))
    failures = 0
    async with httpx.AsyncClient(base_url=base, timeout=600) as http:

        async def client() -> None:
            nonlocal failures
            for i in queue:
                answer = await http.post(CHAT, json=body(i, max_tokens))
                failures += answer.status_code != 200

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        wall = time.perf_counter() - start
    return {"requests": lines, "clients": clients, "wall_s": round(wall, 2), "requests_per_s": round(lines / wall, 2),
            "failures": failures}


async def interactive(base: str, clients: int, stop: asyncio.Event, max_tokens: int) -> list[float]:
    """Streaming chat requests, one after another per client, until ``stop``; their times to first token."""
    ttfts: list[float] = []
    async with httpx.AsyncClient(base_url=base, timeout=600) as http:

        async def client(c: int) -> None:
            i = 0
            while not stop.is_set():
                start, first = time.perf_counter(), None
                async with http.stream("POST", CHAT, json={**body(10_000 + i, max_tokens), "stream": True}) as r:
                    async for line in r.aiter_lines():
                        if first is None and line.startswith("data: {") and '"content"' in line:
                            first = time.perf_counter() - start
                if first is not None:
                    ttfts.append(first)
                i += clients
                await asyncio.sleep(0.2)

        await asyncio.gather(*(client(c) for c in range(clients)))
    return ttfts


def upload(client: openai.OpenAI, data: bytes) -> str:
    return client.files.create(file=("input.jsonl", io.BytesIO(data)), purpose="batch").id


def batch_input(lines: int, max_tokens: int, pad: int = 0) -> bytes:
    items = []
    for i in range(lines):
        item = {"custom_id": f"req-{i}", "method": "POST", "url": CHAT, "body": body(i, max_tokens)}
        if pad:
            item["body"]["messages"][0]["content"] += " 참고" * pad
        items.append(json.dumps(item, ensure_ascii=False))
    return ("\n".join(items) + "\n").encode()


async def run_batch(client: openai.OpenAI, base: str, lines: int, max_tokens: int, probes: int) -> dict:
    """The batch with the light interactive load beside it."""
    file_id = await asyncio.to_thread(upload, client, batch_input(lines, max_tokens))
    stop = asyncio.Event()
    probe = asyncio.create_task(interactive(base, probes, stop, max_tokens))
    start = time.perf_counter()
    batch = await asyncio.to_thread(client.batches.create, input_file_id=file_id, endpoint=CHAT,
                                    completion_window="24h")
    while batch.status not in ("completed", "failed", "cancelled", "expired"):
        await asyncio.sleep(0.5)
        batch = await asyncio.to_thread(client.batches.retrieve, batch.id)
    wall = time.perf_counter() - start
    stop.set()
    ttfts = await probe
    return {"status": batch.status, "wall_s": round(wall, 2), "requests_per_s": round(lines / wall, 2),
            "completed": batch.request_counts.completed, "failed": batch.request_counts.failed,
            "interactive_ttft_p50_s": pct(ttfts, 50), "interactive_ttft_p95_s": pct(ttfts, 95),
            "interactive_requests": len(ttfts)}


def big_file(client: openai.OpenAI, server: ServerProcess, megabytes: int, max_tokens: int) -> dict:
    """Upload, validate and start a large batch, then cancel it; the server's peak RSS around it."""
    before = peak_rss_mib(server.process.pid)
    per_line = len(batch_input(1, max_tokens, pad=300))
    lines = max(1, megabytes * 1_000_000 // per_line)
    data = batch_input(lines, max_tokens, pad=300)
    start = time.perf_counter()
    file_id = upload(client, data)
    upload_s = time.perf_counter() - start
    del data
    batch = client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
    while (batch := client.batches.retrieve(batch.id)).status == "validating":
        time.sleep(0.5)
    validated_s = time.perf_counter() - start - upload_s
    client.batches.cancel(batch.id)
    while (batch := client.batches.retrieve(batch.id)).status not in ("cancelled", "failed", "completed"):
        time.sleep(0.5)
    return {"input_mb": round(lines * per_line / 1e6, 1), "lines": lines, "upload_s": round(upload_s, 1),
            "validation_s": round(validated_s, 1), "status": batch.status,
            "peak_rss_before_mib": before, "peak_rss_after_mib": peak_rss_mib(server.process.pid)}


def main() -> None:
    """Run the four phases and write the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--probe-clients", type=int, default=2)
    parser.add_argument("--probe-seconds", type=float, default=20)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--batch-concurrency", type=int, default=4)
    parser.add_argument("--big-mb", type=int, default=100)
    parser.add_argument("--model", default=None, help="model folder (default: the tiny test model, built here)")
    parser.add_argument("--engine", default="hf")
    parser.add_argument("--serve-arg", action="append", default=[],
                        help="extra `nexus-k serve` argument, repeatable (--serve-arg=--scheduling-policy=priority)")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/batch.json")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nexus-k-bench-batch-"))
    model = args.model
    if model is None:
        from training.tiny_model import build_tiny_model

        model = str(build_tiny_model(tmp / "tiny-model", preset="tiny"))
    env = {"NEXUS_K_CACHE_DIR": str(tmp / "cache")}
    server = start_serve(["--engine", args.engine, "--model", model, "--served-model-name", MODEL,
                          "--max-model-len", "256", "--batch-concurrency", str(args.batch_concurrency),
                          *args.serve_arg],
                         tmp / "server.log", env, timeout=900)
    results: dict = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    try:
        client = openai.OpenAI(base_url=server.api, api_key="unused", max_retries=0, timeout=600)
        asyncio.run(online(server.base_url, min(64, args.lines), args.clients, args.max_tokens))  # warm-up
        results["online"] = asyncio.run(online(server.base_url, args.lines, args.clients, args.max_tokens))

        async def idle() -> list[float]:
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(args.probe_seconds, stop.set)
            return await interactive(server.base_url, args.probe_clients, stop, args.max_tokens)

        ttfts = asyncio.run(idle())
        results["idle_interactive"] = {"ttft_p50_s": pct(ttfts, 50), "ttft_p95_s": pct(ttfts, 95),
                                       "requests": len(ttfts)}
        results["batch"] = asyncio.run(run_batch(client, server.base_url, args.lines, args.max_tokens,
                                                 args.probe_clients))
        results["batch_vs_online_throughput"] = round(
            results["batch"]["requests_per_s"] / results["online"]["requests_per_s"], 3)
        idle_p50, busy_p50 = results["idle_interactive"]["ttft_p50_s"], results["batch"]["interactive_ttft_p50_s"]
        results["ttft_p50_during_batch_vs_idle"] = round(busy_p50 / idle_p50, 3) if idle_p50 and busy_p50 else None
        if args.big_mb:
            results["big_file"] = big_file(client, server, args.big_mb, args.max_tokens)
    finally:
        server.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n")
    print(json.dumps(results, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
