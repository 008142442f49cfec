"""How much CPU a client on the same machine gets while our vLLM server streams, by engine-core priority.

vLLM's engine core busy-waits for its worker; at normal priority that spin takes the core vLLM leaves to the
front end (docs/serving.md). This runs our server on the tiny test model with the engine core at each
``NEXUS_K_ENGINE_CORE_PRIORITY`` (normal, low = niceness 10, idle = SCHED_IDLE), alternated. Per round it
streams one whole-context reply (read to the end) and then, 0.5 s later (within vLLM's one-second spin),
one that the client hangs up on at its first line. It reports how long the client waited for CPU (its own
``/proc/self/schedstat``) and whether each hang-up reached the engine before the reply was finished.
Writes bench/results/engine_core_priority.json.

    python -m bench.engine_core_priority [--rounds 6] [--repeats 2] [--priorities normal low idle]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from serving.launcher import start_serve
from training.tiny_model import build_tiny_model

REPO = Path(__file__).resolve().parent.parent

MESSAGES = [{"role": "user", "content": "한국의 사계절에 대해 길게 이야기해 주세요."}]


def cpu_wait() -> float:
    """Seconds this process has spent runnable but waiting for a CPU."""
    return int(Path("/proc/self/schedstat").read_text().split()[1]) / 1e9


def metric(base: str, name: str) -> float:
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise KeyError(name)


def stream(base: str, hang_up: bool) -> dict:
    """One whole-context streamed reply; with ``hang_up`` the client leaves at its first line."""
    body = {"model": "tiny-ko", "messages": MESSAGES, "ignore_eos": True, "stream": True}
    aborted = metric(base, "nexus_k_engine_aborted_requests_total")
    waited, start = cpu_wait(), time.perf_counter()
    first, lines = None, 0
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=120) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                lines += 1
                first = first if first is not None else time.perf_counter() - start
                if hang_up:
                    break
    result = {"first_line_s": first, "total_s": time.perf_counter() - start, "client_cpu_wait_s": cpu_wait() - waited,
              "lines": lines}
    if hang_up:
        deadline = time.monotonic() + 30
        while metric(base, "nexus_k_engine_unfinished_requests") and time.monotonic() < deadline:
            time.sleep(0.05)
        result["aborted"] = metric(base, "nexus_k_engine_aborted_requests_total") > aborted
    return result


def measure(model: Path, priority: str, rounds: int, log: Path) -> dict:
    args = ["--engine", "vllm", "--model", str(model), "--served-model-name", "tiny-ko", "--max-model-len", "2048",
            "--enforce-eager", "--kv-cache-gib", "1"]
    env = {"NEXUS_K_CACHE_DIR": str(log.parent / "cache"), "NEXUS_K_ENGINE_CORE_PRIORITY": priority}
    server = start_serve(args, log, env)
    base = server.base_url
    try:
        stream(base, hang_up=False)  # warm-up
        full, cut = [], []
        for _ in range(rounds):
            time.sleep(0.5)
            full.append(stream(base, hang_up=False))
            time.sleep(0.5)
            cut.append(stream(base, hang_up=True))
        return {"full": full, "hang_up": cut}
    finally:
        server.stop()


def summarize(priority: str, runs: list[dict]) -> dict:
    full = [r for run in runs for r in run["full"]]
    cut = [r for run in runs for r in run["hang_up"]]
    waits = [r["client_cpu_wait_s"] for r in full]
    firsts = [r["first_line_s"] for r in cut]
    return {
        "engine_core_priority": priority,
        "full_stream_s_median": statistics.median(r["total_s"] for r in full),
        "client_cpu_wait_per_full_stream_s_median": statistics.median(waits),
        "client_cpu_wait_per_full_stream_s_max": max(waits),
        "hang_up_first_line_s_median": statistics.median(firsts),
        "hang_up_first_line_s_max": max(firsts),
        "hang_ups_aborted": f"{sum(r['aborted'] for r in cut)}/{len(cut)}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6, help="full + hang-up pairs per server start")
    parser.add_argument("--repeats", type=int, default=2, help="server starts per setting, alternated")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "engine_core_priority.json")
    parser.add_argument("--priorities", nargs="+", default=["normal", "low", "idle"],
                        choices=["normal", "low", "idle"])
    args = parser.parse_args()
    settings = args.priorities
    with tempfile.TemporaryDirectory(prefix="nexus-k-bench-nice-") as tmp:
        model = build_tiny_model(Path(tmp) / "model", preset="tiny")
        runs: dict[str, list[dict]] = {p: [] for p in settings}
        for repeat in range(args.repeats):
            for priority in settings:
                print(f"engine core {priority}, start {repeat + 1}/{args.repeats}", flush=True)
                runs[priority].append(measure(model, priority, args.rounds, Path(tmp) / f"{priority}-{repeat}.log"))
    summary = [summarize(n, runs[n]) for n in settings]
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.processor() or
              platform.machine(), "cores": os.cpu_count(), "rounds": args.rounds, "repeats": args.repeats,
              "summary": summary, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print("| engine core | full stream (s) | client CPU wait per stream p50 / max (s) "
          "| hang-up: first line p50 / max (s) | hang-ups aborted |")
    print("|---|---|---|---|---|")
    for s in summary:
        wait = f"{s['client_cpu_wait_per_full_stream_s_median']:.2f} / {s['client_cpu_wait_per_full_stream_s_max']:.2f}"
        first = f"{s['hang_up_first_line_s_median']:.3f} / {s['hang_up_first_line_s_max']:.3f}"
        priority, full, aborted = s["engine_core_priority"], s["full_stream_s_median"], s["hang_ups_aborted"]
        print(f"| {priority} | {full:.2f} | {wait} | {first} | {aborted} |")


if __name__ == "__main__":
    main()
