"""KoBEST and KoBBQ of the demo model, base vs Korean-chat-tuned, through the product's own eval CLI.

    python -m bench.demo_evals [--limit 50] [--kobbq-limit 10] [--tasks kobest_boolq,...] [--via hf|server]

``--via hf`` (the default) runs ``nexus-k eval run --backend hf`` in process on the bundled Gemma 3 270M
(transformers, float32), once plain and once with ``--adapter`` set to the committed LoRA (merged into the
weights by PEFT: the same weights the server serves as ``nexus-k-ko-chat``). ``--via server`` starts
``nexus-k serve`` with no ``--model`` (the base as ``gemma-3-270m`` and the adapter as ``nexus-k-ko-chat``) and
runs ``--backend openai`` against it; on a 2-core CPU vLLM's LoRA path makes that many times slower.
Both models see the same documents. Writes bench/results/demo_evals.json and prints a Markdown table for
docs/demo.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from serving.demo_model import DEMO_BASE_NAME, DEMO_MODEL_NAME, demo_adapter_dir, prepare_demo_model
from serving.launcher import start_serve

REPO = Path(__file__).resolve().parent.parent

TASKS = "kobest_boolq,kobest_copa,kobest_hellaswag,kobest_sentineg,kobest_wic"


def run_eval(target: list[str], tasks: str, limit: int, out: Path, data_dir: str) -> dict:
    """One ``nexus-k eval run`` (``target``: the backend and model flags); returns its results.json."""
    command = [sys.executable, "-m", "nexus_k", "eval", "run", *target, "--tasks", tasks, "--limit", str(limit),
               "--out", str(out), "--data-dir", data_dir, "--batch-size", "8"]
    started = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "NEXUS_K_EVAL_API_KEY": "unused"})
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    return results


def headline(task: str, metrics: dict) -> dict:
    """The numbers a reader compares: accuracy for KoBEST, Acc/diff-bias for KoBBQ."""
    if task.startswith("kobest"):
        return {k: metrics[k] for k in ("acc", "acc_norm", "macro_f1") if k in metrics}
    return {k: v for k, v in metrics.items() if isinstance(v, int | float)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=TASKS)
    parser.add_argument("--limit", type=int, default=50, help="documents per KoBEST task (same for both models)")
    parser.add_argument("--kobbq-limit", type=int, default=10,
                        help="KoBBQ samples per prompt template (x5 templates; 0 leaves KoBBQ out)")
    parser.add_argument(
        "--data-dir", default=os.environ.get("NEXUS_K_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    )
    parser.add_argument("--via", choices=["hf", "server"], default="hf",
                        help="hf: transformers in process, adapter merged (default); server: nexus-k serve + openai")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "demo_evals.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nexus-k-demo-evals-"))
    load = [round(x, 2) for x in os.getloadavg()]
    server = None
    if args.via == "server":
        server = start_serve(["--max-model-len", "2048"], work / "server.log", timeout=1800)
        targets = {name: ["--backend", "openai", "--base-url", server.api, "--model", name]
                   for name in (DEMO_BASE_NAME, DEMO_MODEL_NAME)}
    else:
        model, adapter = str(prepare_demo_model()), demo_adapter_dir()
        if adapter is None:
            raise SystemExit("no committed adapter under serving/adapters/ko_chat (make demo-adapter)")
        hf = ["--backend", "hf", "--dtype", "float32", "--model", model]
        targets = {DEMO_BASE_NAME: hf, DEMO_MODEL_NAME: [*hf, "--adapter", str(adapter)]}
    try:
        runs = {}
        for name, target in targets.items():
            runs[name] = run_eval(target, args.tasks, args.limit, work / name, args.data_dir)
            if args.kobbq_limit:
                bias = run_eval(target, "kobbq", args.kobbq_limit, work / f"{name}-kobbq", args.data_dir)
                runs[name]["tasks"].update(bias["tasks"])
                runs[name]["wall_seconds"] += bias["wall_seconds"]
    finally:
        if server is not None:
            server.stop(timeout=120)
    table = {}
    for name, result in runs.items():
        for task, entry in result["tasks"].items():
            table.setdefault(task, {})[name] = headline(task, entry["metrics"])
    report = {"via": args.via, "limit_per_task": args.limit, "kobbq_limit_per_template": args.kobbq_limit,
              "tasks": args.tasks.split(",") + (["kobbq"] if args.kobbq_limit else []), "results": table,
              "wall_seconds": {name: r["wall_seconds"] for name, r in runs.items()},
              "loadavg_start": load, "loadavg_end": [round(x, 2) for x in os.getloadavg()]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\n| task | metric | {DEMO_BASE_NAME} (base) | {DEMO_MODEL_NAME} (tuned) |\n|---|---|---|---|")
    for task, by_model in table.items():
        for metric in by_model.get(DEMO_BASE_NAME, {}):
            row = [by_model.get(n, {}).get(metric) for n in (DEMO_BASE_NAME, DEMO_MODEL_NAME)]
            print(f"| {task} | {metric} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in row) + " |")


if __name__ == "__main__":
    main()
