"""Serving benchmark: our server on vLLM vs vLLM's own OpenAI server vs our server on transformers.

Same ~100M-parameter model, same client, same load (N concurrent streaming requests, 64 output tokens
each), side by side in one run. Writes bench/results/serve.json and prints a Markdown table.

    python -m bench.serve [--concurrency 16 64] [--requests-per-client 4] [--repeats 2] [--skip nexus-k-hf]

``--apis chat responses`` puts the Responses API beside chat completions: on each server both APIs take the
same load, alternated within each start (chat first on odd repeats, Responses first on even ones), and the
report adds Responses / chat ratios per server and ours / vLLM's ``/v1/responses``:

    python -m bench.serve --apis chat responses --skip nexus-k-hf --out bench/results/serve_responses.json
    python -m bench.serve --apis chat responses --skip nexus-k-hf vllm-openai --repeats 2 --rounds 3 \
        --out bench/results/serve_responses_ours.json   # more turns of our two APIs, less noise

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


#: What vLLM's own server needs on a CPU machine without network (ours sets these itself).
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_HOST_IP": "127.0.0.1", "HF_HUB_OFFLINE": "1"}


def start(kind: str, model: Path, log: Path) -> ServerProcess:
    """Start a contender and wait for its /health."""
    port = free_port()
    return start_process(server_command(kind, model, port), log, port, dict(VLLM_ENV), timeout=900)


async def one_request(client: httpx.AsyncClient, base: str, api: str = "chat") -> dict:
    """One streamed request; a connection dropped before any byte (keep-alive race) is retried once."""
    try:
        return await _one_request(client, base, api)
    except (httpx.ReadError, httpx.RemoteProtocolError):
        result = await _one_request(client, base, api)
        result["retried"] = 1
        return result


def _chat_event(chunk: dict) -> tuple[bool, int | None]:
    """(carries text, completion tokens if this chunk reports usage) of one chat completion chunk."""
    text = bool(chunk.get("choices") and chunk["choices"][0]["delta"].get("content"))
    return text, (chunk["usage"]["completion_tokens"] if chunk.get("usage") else None)


def _responses_event(event: dict) -> tuple[bool, int | None]:
    """(carries text, output tokens if this event ends the response) of one Responses API stream event."""
    if event.get("type") == "response.output_text.delta":
        return bool(event.get("delta")), None
    if event.get("type") in ("response.completed", "response.incomplete"):
        return False, (event["response"].get("usage") or {}).get("output_tokens")
    return False, None


# What each API is sent (the same prompt, sampling and length) and how its stream is read. Responses has
# no ``ignore_eos`` (neither OpenAI's nor vLLM's): in a random model an end-of-sequence token among 64
# sampled ones is rare, and throughput counts the tokens each stream reports, so both APIs are sent
# without it when they are compared.
APIS = {
    "chat": ("/v1/chat/completions", _chat_event,
             lambda: {"model": "bench", "messages": PROMPT, "max_tokens": OUTPUT_TOKENS, "temperature": 0.8,
                      "stream": True, "stream_options": {"include_usage": True}}),
    "responses": ("/v1/responses", _responses_event,
                  lambda: {"model": "bench", "input": PROMPT, "max_output_tokens": OUTPUT_TOKENS,
                           "temperature": 0.8, "stream": True}),
}


async def sse_lines(response: httpx.Response):
    """The stream's lines, split on line feeds only, as the SSE format says (``aiter_lines`` follows
    ``str.splitlines``, which also breaks at U+2028 and the like inside a JSON string)."""
    buffer = b""
    async for data in response.aiter_bytes():
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r").decode()
    if buffer:
        yield buffer.decode()


COMPARING_APIS = False
"""Set by ``--apis`` with more than one API: every API is then sent the same body options (no ``ignore_eos``)."""


async def _one_request(client: httpx.AsyncClient, base: str, api: str) -> dict:
    """One streamed request: TTFT, inter-token latency, tokens."""
    path, read_event, make_body = APIS[api]
    body = make_body()
    if api == "chat" and not COMPARING_APIS:
        body["ignore_eos"] = True
    start = time.perf_counter()
    first = None
    tokens = 0
    async with client.stream("POST", f"{base}{path}", json=body) as response:
        response.raise_for_status()
        async for line in sse_lines(response):
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            has_text, reported = read_event(json.loads(line[6:]))
            if reported is not None:
                tokens = reported
            if first is None and has_text:
                first = time.perf_counter()
    end = time.perf_counter()
    first = first or end
    return {"ttft": first - start, "itl": (end - first) / max(1, tokens - 1), "tokens": tokens, "latency": end - start}


async def load(base: str, concurrency: int, per_client: int, warm_round: bool, api: str = "chat") -> dict:
    """``concurrency`` clients, each sending ``per_client`` requests back to back (after a warm-up: one
    request, and with ``warm_round`` an untimed round of ``concurrency`` requests at once)."""
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        await one_request(client, base, api)
        if warm_round:
            await asyncio.gather(*[one_request(client, base, api) for _ in range(concurrency)])

        async def worker() -> list[dict]:
            return [await one_request(client, base, api) for _ in range(per_client)]

        start = time.perf_counter()
        results = [r for batch in await asyncio.gather(*[worker() for _ in range(concurrency)]) for r in batch]
        wall = time.perf_counter() - start
    ttft = sorted(r["ttft"] for r in results)
    return {
        "api": api,
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
        "itl_p50_s": statistics.median(r["itl"] for r in results),
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


def contender_rows(kind: str, base: str, args: argparse.Namespace, repeat: int) -> list[dict[str, list[dict]]]:
    """One server's measurements, a dict per round: for each API, a row per concurrency. At each
    concurrency the APIs take turns, in an order that flips every round and every other repeat (A B, B A)."""
    per_client = args.hf_requests_per_client if kind == "nexus-k-hf" else args.requests_per_client
    rounds: list[dict[str, list[dict]]] = [{api: [] for api in args.apis} for _ in range(args.rounds)]
    for c in args.concurrency:
        for r, rows in enumerate(rounds):
            apis = args.apis if (repeat + r) % 2 == 0 else list(reversed(args.apis))
            for api in apis:
                rows[api].append(asyncio.run(load(base, c, per_client, warm_round=kind != "nexus-k-hf", api=api)))
    return rounds


def ratio_table(results: dict[str, list[dict]], concurrency: list[int]) -> dict[str, float]:
    """The side-by-side ratios (throughput and TTFT p50) that the docs quote."""
    def at(name: str, i: int) -> dict | None:
        rows = results.get(name)
        return rows[i] if rows else None

    pairs = [("ours_vllm_over_vllm_openai", "nexus-k-vllm", "vllm-openai"),
             ("ours_vllm_over_ours_hf", "nexus-k-vllm", "nexus-k-hf"),
             ("ours_responses_over_ours_chat", "nexus-k-vllm/responses", "nexus-k-vllm/chat"),
             ("ours_hf_responses_over_ours_hf_chat", "nexus-k-hf/responses", "nexus-k-hf/chat"),
             ("vllm_responses_over_vllm_chat", "vllm-openai/responses", "vllm-openai/chat"),
             ("ours_responses_over_vllm_responses", "nexus-k-vllm/responses", "vllm-openai/responses"),
             ("ours_chat_over_vllm_chat", "nexus-k-vllm/chat", "vllm-openai/chat")]
    ratios = {}
    for i, c in enumerate(concurrency):
        for label, a_name, b_name in pairs:
            a, b = at(a_name, i), at(b_name, i)
            if a and b:
                ratios[f"{label}_throughput_c{c}"] = a["output_tokens_per_s"] / b["output_tokens_per_s"]
                ratios[f"{label}_ttft_p50_c{c}"] = a["ttft_p50_s"] / b["ttft_p50_s"]
    return ratios


def main() -> None:
    global COMPARING_APIS
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--hf-requests-per-client", type=int, default=1,
                        help="The transformers contender is ~15x slower: one request per client keeps it to minutes.")
    parser.add_argument("--repeats", type=int, default=2,
                        help="Start/measure/stop cycles of the two vLLM contenders, alternated (A B A B); the "
                             "median of each metric is reported.")
    parser.add_argument("--apis", nargs="+", choices=sorted(APIS), default=["chat"],
                        help="APIs to load each server with (alternated on the same server)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="Measurements of every API at each concurrency per server start (with --apis: "
                             "turns taken A B, B A, ...); each counts as a repeat in the medians.")
    parser.add_argument("--skip", nargs="*", default=[], help="contenders to leave out")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "serve.json")
    args = parser.parse_args()
    COMPARING_APIS = len(args.apis) > 1

    work = Path(tempfile.mkdtemp(prefix="nexus-k-bench-serve-"))
    model = build_tiny_model(work / "model-100m", preset="100m")
    runs: dict[str, list[list[dict]]] = {}
    # One server at a time (two vLLM CPU engines pin their workers to the same core), the vLLM pair
    # alternated so that a slow spell of a shared machine does not land on one contender only.
    order = [(k, r) for r in range(args.repeats) for k in ("nexus-k-vllm", "vllm-openai")] + [("nexus-k-hf", 0)]
    for kind, repeat in order:
        if kind in args.skip:
            continue
        server = start(kind, model, work / f"{kind}.log")
        try:
            rounds = contender_rows(kind, server.base_url, args, repeat)
        finally:
            server.stop(timeout=120)
        for rows in rounds:
            for api, api_rows in rows.items():
                name = f"{kind}/{api}" if COMPARING_APIS else kind
                runs.setdefault(name, []).append(api_rows)
        print(kind, json.dumps(rounds, indent=1), flush=True)
    results = {name: [median_row([rep[i] for rep in reps]) for i in range(len(args.concurrency))]
               for name, reps in runs.items()}

    import torch

    params = sum(p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_pretrained(model).parameters())
    report = {"model_parameters": params, "output_tokens": OUTPUT_TOKENS, "machine": platform.processor() or
              platform.machine(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "load_avg_end": [round(x, 2) for x in os.getloadavg()], "apis": args.apis,
              "requests_per_client": args.requests_per_client, "hf_requests_per_client": args.hf_requests_per_client,
              "repeats": args.repeats, "rounds": args.rounds, "results": results, "runs": runs}
    report["ratios"] = ratios = ratio_table(results, args.concurrency)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print("\n| server | concurrency | output tok/s | TTFT p50 (s) | TTFT p99 (s) | mean ITL (ms) |")
    print("|---|---|---|---|---|---|")
    for name, rows in results.items():
        for r in rows:
            print(f"| {name} | {r['concurrency']} | {r['output_tokens_per_s']:.0f} | {r['ttft_p50_s']:.2f} | "
                  f"{r['ttft_p99_s']:.2f} | {1000 * r['itl_mean_s']:.1f} |")
    print(json.dumps(ratios, indent=1))


if __name__ == "__main__":
    main()
