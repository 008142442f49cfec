"""CPU serving against llama.cpp: our server on vLLM (CPU) against llama.cpp's ``llama-server`` on the same
Gemma 3 270M, each server alone on the machine.

llama.cpp serves the demo package's Q4_K_M GGUF (``-t THREADS -np N -c N x CTX_PER_SLOT``, restarted for each
concurrency since ``-np`` is fixed at start); ours is ``nexus-k serve --model FOLDER`` on vLLM with its CPU
defaults, once on the demo folder ``make serve`` serves (vocabulary-trimmed, bf16) and once on the untrimmed
one. Contenders take turns
(A B C, then C B A, ...), ``--rounds`` times; the clients are bench/serve.py's (64-token streamed chat
completions, ``ignore_eos``), here on varied Korean prompts. Reported per concurrency: output tokens/s, TTFT
p50/p99, inter-token latency p50, the server tree's peak RSS and PSS, and start-up time (launch to /health).

    python -m bench.cpu_peer --concurrency 1 16 --rounds 2          # under the shared lock: <= 15 min
    python -m bench.cpu_peer --concurrency 4 64 --rounds 2 --merge  # adds to bench/results/cpu_peer.json

``--ours-env KEY=VALUE`` / ``--ours-arg`` vary our server (CPU defaults were chosen with them, docs/serving.md);
``--variant NAME:KEY=VALUE[,KEY=VALUE]`` adds the demo once more under that environment, as its own contender
taking turns with the others in the same run (A B A B: a setting against the default, side by side).
``--int8 [DIR]`` adds the demo's int8 copy (``nexus-k serve --demo-precision int8``) or another int8 folder
(``nexus-k model int8``). ``--with-vllm`` adds vLLM's own OpenAI server on the demo folder (as vLLM ships it),
to tell what vLLM's architecture costs from what our server adds (TTFT at 1 especially).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import serve
from bench.cpu_peer_llama import llama_server, server_dir, server_version
from bench.embeddings_speed import peak_rss_mib
from serving.launcher import HOST, ServerProcess, free_port, serve_command, start_process

REPO = Path(__file__).resolve().parent.parent
API = "cpu_peer"

# Everyday Korean requests of different lengths (the same list for every server, in the same order).
PROMPTS = [
    "한국의 전통 음식에 대해 자세히 설명해 주세요.",
    "서울에서 부산까지 기차로 가는 방법을 알려 주세요.",
    "건강한 아침 식사 메뉴를 몇 가지 추천해 줄래요?",
    "김치를 담그는 순서를 단계별로 설명해 주세요.",
    "주민센터에서 전입신고를 하려면 무엇이 필요한가요?",
    "봄에 가 볼 만한 국내 여행지를 소개해 주세요.",
    "회의록을 잘 쓰는 요령을 알려 주세요.",
    "세종대왕이 한글을 만든 이유는 무엇인가요?",
    "비 오는 날 집에서 할 수 있는 일을 추천해 주세요.",
    "고객에게 배송 지연을 사과하는 이메일을 써 주세요.",
    "인공지능이 행정 업무에 어떻게 쓰일 수 있는지 설명해 주세요.",
    "초등학생에게 광합성을 쉽게 설명해 주세요.",
    "전세와 월세의 차이를 간단히 정리해 주세요.",
    "면접에서 자기소개를 할 때 주의할 점은 무엇인가요?",
    "겨울철 난방비를 아끼는 방법을 알려 주세요.",
    "한국의 사계절이 가진 특징을 각각 설명해 주세요.",
]
_prompt_index = itertools.count()


def _chat_body() -> dict:
    """bench/serve.py's chat request (64 tokens, streamed, ignore_eos) on the next Korean prompt."""
    prompt = PROMPTS[next(_prompt_index) % len(PROMPTS)]
    return {"model": "bench", "messages": [{"role": "user", "content": prompt}], "max_tokens": serve.OUTPUT_TOKENS,
            "temperature": 0.8, "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True}


serve.APIS[API] = ("/v1/chat/completions", serve._chat_event, _chat_body)


@dataclass
class Contender:
    """One server set-up: how it starts and what it serves."""

    name: str
    kind: str
    """``llama.cpp`` or ``nexus-k``."""
    model: Path
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)


def _key_values(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def start(contender: Contender, concurrency: int, args: argparse.Namespace, log: Path) -> tuple[ServerProcess, float]:
    """Start one contender (llama.cpp sized for ``concurrency``); returns it and seconds from launch to /health."""
    port = free_port()
    if contender.kind == "vllm-openai":
        command = serve.server_command("vllm-openai", contender.model, port)
        env = {**serve.VLLM_ENV, **contender.env}
    elif contender.kind == "llama.cpp":
        command = [str(args.llama_server), "-m", str(contender.model), "-t", str(args.threads), "-np",
                   str(concurrency), "-c", str(concurrency * args.ctx_per_slot), "--host", HOST, "--port", str(port),
                   "--alias", "bench", *contender.args]
        env = contender.env
    else:
        command = [*serve_command("--model", str(contender.model), "--served-model-name", "bench", *contender.args),
                   "--port", str(port)]
        env = {"HF_HUB_OFFLINE": "1", "NEXUS_K_DATABASE_URL": f"sqlite:///{log.parent / 'bench.db'}",
               "NEXUS_K_DATA_DIR": str(log.parent / "data"), **contender.env}
    started = time.perf_counter()
    server = start_process(command, log, port, env, timeout=900)
    return server, time.perf_counter() - started


def tree_memory_mib(pid: int) -> dict[str, float]:
    """The server's process tree: the sum of each process's peak RSS (VmHWM; shared pages counted in each)
    and its proportional set size now (PSS: shared pages split between the processes)."""
    import psutil

    peak = pss = 0.0
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            peak += peak_rss_mib(proc.pid)["peak_rss_mib"]
            pss += proc.memory_full_info().pss / 2**20
        except (psutil.Error, OSError):
            continue
    return {"peak_rss_mib": round(peak, 1), "pss_mib": round(pss, 1)}


def requests_per_client(concurrency: int) -> int:
    """Enough requests for a stable rate (16 at concurrency 1, 8 at 4, 2 at 16, 1 at 64)."""
    return max(1, min(16, 32 // concurrency))


def measure(server: ServerProcess, concurrency: int) -> dict:
    """bench/serve.py's load (a warm-up request and round, then ``concurrency`` clients) plus memory."""
    row = asyncio.run(serve.load(server.base_url, concurrency, requests_per_client(concurrency), warm_round=True,
                                 api=API))
    return {**row, **tree_memory_mib(server.process.pid)}


def run_contender(contender: Contender, args: argparse.Namespace, round_index: int, work: Path) -> list[dict]:
    """One turn of a contender at every concurrency: llama.cpp restarted per concurrency, ours started once."""
    rows = []
    server = None
    try:
        for c in args.concurrency:
            if server is None or contender.kind == "llama.cpp":
                if server is not None:
                    server.stop(timeout=120)
                server, startup = start(contender, c, args, work / f"{contender.name}-r{round_index}-c{c}.log")
            row = measure(server, c)
            rows.append({"contender": contender.name, "round": round_index, "startup_s": round(startup, 2), **row})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        if server is not None:
            server.stop(timeout=120)
    return rows


def median_rows(runs: list[dict]) -> dict[str, dict[int, dict]]:
    """Each metric's median over the runs of one contender at one concurrency."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["contender"], run["concurrency"]), []).append(run)
    out: dict[str, dict[int, dict]] = {}
    for (name, c), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        row = {k: statistics.median(r[k] for r in rows) for k, v in rows[0].items()
               if isinstance(v, (int, float)) and k not in ("round", "concurrency")}
        # Start-up: the fastest (vLLM's first start of a model also compiles it, once per machine).
        row["startup_s"] = min(r["startup_s"] for r in rows)
        out.setdefault(name, {})[c] = {**row, "concurrency": c, "runs": len(rows)}
    return out


def ratios(results: dict[str, dict[int, dict]]) -> dict[str, dict]:
    """Ours over llama.cpp at each concurrency (tokens/s, TTFT p50), with the issue's targets."""
    peer = results.get("llama.cpp", {})
    out = {}
    for name, rows in results.items():
        if name == "llama.cpp":
            continue
        for c, row in rows.items():
            if c not in peer:
                continue
            tput = row["output_tokens_per_s"] / peer[c]["output_tokens_per_s"]
            ttft = row["ttft_p50_s"] / peer[c]["ttft_p50_s"]
            out[f"{name}/c{c}"] = {"throughput": round(tput, 3), "ttft_p50": round(ttft, 3),
                                   "throughput_target_met": tput >= 1.0,
                                   "ttft_target_met": ttft <= 1.1 if c in (1, 16) else None}
    return out


def weights_mib(model: Path) -> float:
    """Size of the weights on disk (the GGUF file, or a folder's safetensors)."""
    files = [model] if model.is_file() else list(model.glob("*.safetensors"))
    return round(sum(f.stat().st_size for f in files) / 2**20, 1)


def contenders(args: argparse.Namespace) -> list[Contender]:
    """llama.cpp on the GGUF; ours on the demo folder (vocabulary-trimmed), the untrimmed one and, when given,
    another trimmed folder and an int8 one (those not skipped)."""
    ours_env, ours_args = _key_values(args.ours_env), list(args.ours_arg)
    # The GGUF carries no chat template (ours comes from the demo conversion): llama.cpp's built-in Gemma one.
    out = [Contender("llama.cpp", "llama.cpp", args.gguf, args=["--chat-template", "gemma", *args.llama_arg]),
           Contender("nexus-k-demo", "nexus-k", args.demo, ours_env, ours_args),
           Contender("nexus-k-untrimmed", "nexus-k", args.untrimmed, ours_env, ours_args),
           Contender("nexus-k-trimmed", "nexus-k", args.trimmed, ours_env, ours_args),
           Contender("nexus-k-demo-int8", "nexus-k", args.int8, ours_env, ours_args)]
    if args.with_vllm:
        out.append(Contender("vllm-openai-demo", "vllm-openai", args.demo))
    for variant in args.variant:
        name, _, pairs = variant.partition(":")
        out.append(Contender(f"nexus-k-demo-{name}", "nexus-k", args.demo,
                             {**ours_env, **_key_values([p for p in pairs.split(",") if p])}, ours_args))
    return [c for c in out if c.name not in args.skip and c.model is not None]


def markdown(results: dict[str, dict[int, dict]], rates: dict[str, dict]) -> str:
    """The table docs/serving.md shows."""
    lines = ["| concurrency | server | tok/s | TTFT p50 (s) | TTFT p99 (s) | ITL p50 (ms) | peak RSS (MiB) | "
             "start-up (s) | tok/s vs llama.cpp | TTFT p50 vs llama.cpp |", "|---|---|---|---|---|---|---|---|---|---|"]
    for c in sorted({c for rows in results.values() for c in rows}):
        for name, rows in results.items():
            if c not in rows:
                continue
            r, rate = rows[c], rates.get(f"{name}/c{c}", {})
            vs = (f"{rate['throughput']:.2f}x | {rate['ttft_p50']:.2f}x" if rate else "- | -")
            lines.append(f"| {c} | {name} | {r['output_tokens_per_s']:.0f} | {r['ttft_p50_s']:.3f} | "
                         f"{r['ttft_p99_s']:.3f} | {1000 * r['itl_p50_s']:.1f} | {r['peak_rss_mib']:.0f} | "
                         f"{r['startup_s']:.1f} | {vs} |")
    return "\n".join(lines)


def main() -> None:
    from serving.demo_model import demo_full_model_dir, demo_model_dir, gguf_path, prepare_demo_int8

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--rounds", type=int, default=1, help="turns of every contender (order reversed each turn)")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp's -t")
    parser.add_argument("--ctx-per-slot", type=int, default=256, help="llama.cpp context per parallel slot")
    parser.add_argument("--gguf", type=Path, default=None, help="default: the demo package's Q4_K_M")
    parser.add_argument("--demo", type=Path, default=None, help="default: the demo folder `make serve` serves")
    parser.add_argument("--untrimmed", type=Path, default=None, help="default: the untrimmed demo conversion")
    parser.add_argument("--trimmed", type=Path, default=None, help="another vocabulary-trimmed folder (optional)")
    parser.add_argument("--int8", nargs="?", const="demo", default=None,
                        help="add the demo's int8 copy, or the int8 folder given (`nexus-k model int8`)")
    parser.add_argument("--llama-server", type=Path, default=None, help="default: built once into the cache")
    parser.add_argument("--skip", nargs="*", default=[], help="contenders to leave out")
    parser.add_argument("--ours-env", action="append", default=[], help="KEY=VALUE for our server's environment")
    parser.add_argument("--ours-arg", action="append", default=[],
                        help="one extra `nexus-k serve` argument (repeat: --ours-arg=--max-num-seqs --ours-arg=64)")
    parser.add_argument("--llama-arg", action="append", default=[], help="one extra llama-server argument")
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME:KEY=VALUE[,KEY=VALUE]: the demo again under that environment, as its own contender")
    parser.add_argument("--with-vllm", action="store_true", help="add vLLM's own OpenAI server on the demo folder")
    parser.add_argument("--merge", action="store_true", help="keep the runs already in --out and add these")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cpu_peer.json")
    args = parser.parse_args()
    args.gguf = args.gguf or gguf_path()
    args.demo = args.demo or demo_model_dir()
    args.int8 = prepare_demo_int8(progress=False) if args.int8 == "demo" else args.int8 and Path(args.int8)
    args.untrimmed = args.untrimmed or demo_full_model_dir()
    args.llama_server = args.llama_server or llama_server()

    previous = json.loads(args.out.read_text()) if args.merge and args.out.is_file() else {}
    runs: list[dict] = list(previous.get("runs", []))
    work = Path(tempfile.mkdtemp(prefix="nexus-k-bench-cpu-peer-"))
    field_set = contenders(args)
    done = len(previous.get("invocations", []))  # with --merge the order goes on alternating across invocations
    for r in range(args.rounds):
        for contender in field_set if (done + r) % 2 == 0 else list(reversed(field_set)):
            runs += run_contender(contender, args, done * 100 + r, work)
    results = median_rows(runs)
    rates = ratios(results)
    build = server_dir() / "build.json"
    report = {
        "invocations": [*previous.get("invocations", []), {"argv": sys.argv[1:], "ours_env": args.ours_env,
                                                            "variants": args.variant,
                                                            "llama_arg": args.llama_arg,
                                                            "ours_arg": args.ours_arg,
                                                            "load_avg_end": [round(x, 2) for x in os.getloadavg()]}],
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
        "llama_server": {"version": server_version(args.llama_server),
                         "build": json.loads(build.read_text()) if build.is_file() else None},
        "models": {**previous.get("models", {}),
                   **{c.name: {"path": str(c.model), "weights_mib": weights_mib(c.model)} for c in field_set}},
        "output_tokens": serve.OUTPUT_TOKENS, "prompts": len(PROMPTS), "llama_threads": args.threads,
        "llama_ctx_per_slot": args.ctx_per_slot, "results": results, "ratios": rates, "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(markdown(results, rates))


if __name__ == "__main__":
    main()
