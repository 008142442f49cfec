"""Serving benchmark: our server on vLLM vs vLLM's own OpenAI server vs our server on transformers.

Same ~100M-parameter model, same client, same load (N concurrent streaming chat requests, 64 output tokens
each), side by side in one run. Writes bench/results/serve.json and prints a Markdown table.

    python -m bench.serve [--concurrency 16 64] [--requests-per-client 4] [--repeats 2] [--skip nexus-k-hf]

Each contender gets a one-request warm-up, and the vLLM ones an untimed round at each concurrency (one-off
costs of a first batch of that size stay out of the timing); then ``concurrency`` clients each send
``requests-per-client`` requests back to back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from serving.launcher import ServerProcess, free_port, start_process
from training.tiny_model import build_tiny_model

REPO = Path(__file__).resolve().parent.parent

PROMPT = [{"role": "user", "content": "한국의 전통 음식에 대해 자세히 설명해 주세요."}]
OUTPUT_TOKENS = 64


def server_command(kind: str, model: Path, port: int) -> list[str]:
    """The command line of one contender."""
    if kind == "vllm-openai":
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
                "--port", str(port), "--host", "127.0.0.1", "--served-model-name", "bench",
                "--max-model-len", "1024"]
    engine = "vllm" if kind == "nexus-k-vllm" else "hf"
    return [sys.executable, "-m", "nexus_k", "serve", "--engine", engine, "--model", str(model), "--port", str(port),
            "--served-model-name", "bench", "--max-model-len", "1024"]


def start(kind: str, model: Path, log: Path) -> ServerProcess:
    """Start a contender and wait for its /health."""
    port = free_port()
    env = {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_HOST_IP": "127.0.0.1", "HF_HUB_OFFLINE": "1"}
    return start_process(server_command(kind, model, port), log, port, env, timeout=900)


async def one_request(client: httpx.AsyncClient, base: str) -> dict:
    """One streamed chat request; a connection dropped before any byte (keep-alive race) is retried once."""
    try:
        return await _one_request(client, base)
    except (httpx.ReadError, httpx.RemoteProtocolError):
        result = await _one_request(client, base)
        result["retried"] = 1
        return result


async def _one_request(client: httpx.AsyncClient, base: str) -> dict:
    """One streamed chat request: TTFT, inter-token latency, tokens."""
    body = {"model": "bench", "messages": PROMPT, "max_tokens": OUTPUT_TOKENS, "ignore_eos": True,
            "temperature": 0.8, "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first = None
    tokens = 0
    async with client.stream("POST", f"{base}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if first is None and chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter()
    end = time.perf_counter()
    first = first or end
    return {"ttft": first - start, "itl": (end - first) / max(1, tokens - 1), "tokens": tokens, "latency": end - start}


async def load(base: str, concurrency: int, per_client: int, warm_round: bool) -> dict:
    """``concurrency`` clients, each sending ``per_client`` requests back to back (after a warm-up: one
    request, and with ``warm_round`` an untimed round of ``concurrency`` requests at once)."""
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        await one_request(client, base)
        if warm_round:
            await asyncio.gather(*[one_request(client, base) for _ in range(concurrency)])

        async def worker() -> list[dict]:
            return [await one_request(client, base) for _ in range(per_client)]

        start = time.perf_counter()
        results = [r for batch in await asyncio.gather(*[worker() for _ in range(concurrency)]) for r in batch]
        wall = time.perf_counter() - start
    ttft = sorted(r["ttft"] for r in results)
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "output_tokens": sum(r["tokens"] for r in results),
        "wall_s": wall,
        "output_tokens_per_s": sum(r["tokens"] for r in results) / wall,
        "ttft_mean_s": statistics.mean(ttft),
        "ttft_p50_s": statistics.median(ttft),
        "ttft_p90_s": ttft[min(len(ttft) - 1, int(0.9 * len(ttft)))],
        "ttft_p99_s": ttft[min(len(ttft) - 1, int(0.99 * len(ttft)))],
        "itl_mean_s": statistics.mean(r["itl"] for r in results),
        "retried_requests": sum(r.get("retried", 0) for r in results),
    }


def median_row(rows: list[dict]) -> dict:
    """Each metric's median over repeated runs of one contender at one concurrency."""
    out = dict(rows[0])
    for key, value in rows[0].items():
        if isinstance(value, float):
            out[key] = statistics.median(r[key] for r in rows)
    out["repeats"] = len(rows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--hf-requests-per-client", type=int, default=1,
                        help="The transformers contender is ~15x slower: one request per client keeps it to minutes.")
    parser.add_argument("--repeats", type=int, default=2,
                        help="Start/measure/stop cycles of the two vLLM contenders, alternated (A B A B); the "
                             "median of each metric is reported.")
    parser.add_argument("--skip", nargs="*", default=[], help="contenders to leave out")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "serve.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nexus-k-bench-serve-"))
    model = build_tiny_model(work / "model-100m", preset="100m")
    runs: dict[str, list[list[dict]]] = {}
    # One server at a time (two vLLM CPU engines pin their workers to the same core), the vLLM pair
    # alternated so that a slow spell of a shared machine does not land on one contender only.
    order = [k for _ in range(args.repeats) for k in ("nexus-k-vllm", "vllm-openai")] + ["nexus-k-hf"]
    for kind in order:
        if kind in args.skip:
            continue
        server = start(kind, model, work / f"{kind}.log")
        base = server.base_url
        try:
            per_client = args.hf_requests_per_client if kind == "nexus-k-hf" else args.requests_per_client
            rows = [asyncio.run(load(base, c, per_client, warm_round=kind != "nexus-k-hf")) for c in args.concurrency]
        finally:
            server.stop(timeout=120)
        runs.setdefault(kind, []).append(rows)
        print(kind, json.dumps(rows, indent=1), flush=True)
    results = {kind: [median_row([rep[i] for rep in reps]) for i in range(len(args.concurrency))]
               for kind, reps in runs.items()}

    import torch

    params = sum(p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_pretrained(model).parameters())
    report = {"model_parameters": params, "output_tokens": OUTPUT_TOKENS, "machine": platform.processor() or
              platform.machine(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "requests_per_client": args.requests_per_client, "hf_requests_per_client": args.hf_requests_per_client,
              "repeats": args.repeats, "results": results,
              "runs": runs}
    ratios = {}
    for i, c in enumerate(args.concurrency):
        a = results.get("nexus-k-vllm", [None] * (i + 1))[i]
        b = results.get("vllm-openai", [None] * (i + 1))[i]
        h = results.get("nexus-k-hf", [None] * (i + 1))[i]
        if a and b:
            ratios[f"ours_vllm_over_vllm_openai_throughput_c{c}"] = a["output_tokens_per_s"] / b["output_tokens_per_s"]
            ratios[f"ours_vllm_over_vllm_openai_ttft_p50_c{c}"] = a["ttft_p50_s"] / b["ttft_p50_s"]
        if a and h:
            ratios[f"ours_vllm_over_ours_hf_throughput_c{c}"] = a["output_tokens_per_s"] / h["output_tokens_per_s"]
    report["ratios"] = ratios
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print("\n| server | concurrency | output tok/s | TTFT p50 (s) | TTFT p99 (s) | mean ITL (ms) |")
    print("|---|---|---|---|---|---|")
    for kind, rows in results.items():
        for r in rows:
            print(f"| {kind} | {r['concurrency']} | {r['output_tokens_per_s']:.0f} | {r['ttft_p50_s']:.2f} | "
                  f"{r['ttft_p99_s']:.2f} | {1000 * r['itl_mean_s']:.1f} |")
    print(json.dumps(ratios, indent=1))


if __name__ == "__main__":
    main()
