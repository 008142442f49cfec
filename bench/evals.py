"""KoBEST wall time and per-item agreement: Nexus-K's transformers backend vs lm-evaluation-harness's HF backend.

Both run in this process on the same ~100M-parameter random-weight Llama (``build_tiny_model(preset="100m")``),
float32 on CPU, over the same documents (KoBEST test TSVs from the shared data folder, converted to
skt/kobest_v1's schema). lm-evaluation-harness uses its own KoBEST task files (prompts, choices, metrics);
only the data source is swapped for local JSON files. Tasks alternate between the harnesses so that load
on a shared machine hits both alike.

    python -m bench.evals                      # the first 5% of each test set (what docs/evals.md reports)
    python -m bench.evals --limit 8            # the first 8 documents of each task
    python -m bench.evals --fraction 1         # the full test sets (many hours for lm-eval on a 2-core CPU)

Needs ``pip install -e .[bench]`` (lm-eval); writes bench/results/evals.json and evals.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

KOBEST_TASKS = ["kobest_copa", "kobest_sentineg", "kobest_wic", "kobest_hellaswag", "kobest_boolq"]
"""Shortest first, so a run cut short (results are written after every task) has covered the most tasks."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("NEXUS_K_SHARED_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--model-dir", type=Path, default=None, help="Model folder (built when missing).")
    parser.add_argument("--fraction", type=float, default=0.05,
                        help="Share of each test set, its first documents (rounded up); 1 = the full test sets.")
    parser.add_argument("--limit", type=int, default=None, help="Documents per task instead of --fraction.")
    parser.add_argument("--batch-size", type=int, default=16, help="Our backend's contexts per forward pass.")
    parser.add_argument("--lm-eval-batch-size", type=int, default=1, help="lm-eval's batch size (its default 1).")
    parser.add_argument("--threads", type=int, default=1,
                        help="Torch threads for both harnesses (1: on a shared, busy 2-core machine two threads "
                             "wait on each other at every operation and run ~3x slower).")
    parser.add_argument("--tasks", default=",".join(KOBEST_TASKS))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "evals.json")
    return parser.parse_args()


def model_dir(path: Path | None) -> Path:
    """The ~100M-parameter benchmark model, built once into the Nexus-K cache."""
    from nexus_k.core.paths import cache_dir
    from training.tiny_model import build_tiny_model

    path = path or cache_dir("bench", "evals-100m")
    if not (path / "config.json").is_file():
        build_tiny_model(path, preset="100m")
    return path


def write_lm_eval_tasks(tasks: list[str], data_dir: Path, limit: int | None, fraction: float,
                        work: Path) -> dict[str, tuple[str, int, int]]:
    """Local copies of KoBEST in the hub's schema, and lm-eval task files that include its own KoBEST files.

    Returns per task the lm-eval task name, the documents used and the full test set's size.
    """
    import lm_eval

    from evals.registry import resolve_tasks
    from evals.sources import read_local_rows, utils_function

    upstream = Path(lm_eval.__file__).parent / "tasks" / "kobest"
    names = {}
    for task in resolve_tasks(tasks):
        folder = (data_dir / task.source.local).parent
        normalize = utils_function(task.source.local_normalize)
        rows = [normalize(row) for row in read_local_rows(folder / "test.tsv", "tsv")]
        full = len(rows)
        rows = rows[:limit] if limit else rows[:math.ceil(fraction * full)]
        test_file = work / f"{task.task}_test.jsonl"
        with test_file.open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        name = f"local_{task.task}"
        config = {
            "include": str(upstream / f"{task.task}.yaml"),
            "task": name,
            "tag": [],
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {"test": str(test_file)}},
            # zero-shot: lm-eval need not load (or map) the train and validation splits
            "training_split": None,
            "validation_split": None,
        }
        (work / f"{name}.yaml").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
        names[task.task] = (name, len(rows), full)
    return names


def run_ours(backend, task_name: str, data_dir: Path, limit: int | None) -> dict:
    """Our runner on one task: seconds, predictions and log-likelihoods per document, metrics."""
    from evals.config import RunConfig
    from evals.registry import resolve_tasks
    from evals.runner import evaluate_task

    config = RunConfig(model=backend.model_name, tasks=[task_name], out_dir=Path(tempfile.gettempdir()),
                       data_dir=data_dir, limit=limit)
    timer = backend.loglikelihood
    scoring_before = timer.seconds
    start = time.perf_counter()
    summary, items = evaluate_task(resolve_tasks([task_name])[0], backend, config)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "scoring_seconds": timer.seconds - scoring_before, "metrics": summary["metrics"],
            "preds": [item["pred"] for item in items], "lls": [item["lls"] for item in items]}


class TimedLoglikelihood:
    """Wrap an LM's ``loglikelihood`` to add up the seconds spent scoring (model work only)."""

    def __init__(self, lm) -> None:
        self.seconds = 0.0
        self._inner = lm.loglikelihood
        lm.loglikelihood = self

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self._inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def run_lm_eval(lm, lm_task: str, task_manager, batch_size: int) -> dict:
    """lm-evaluation-harness on one task with an already loaded HFLM."""
    import lm_eval

    timer = lm.loglikelihood
    scoring_before = timer.seconds
    start = time.perf_counter()
    out = lm_eval.simple_evaluate(model=lm, tasks=[lm_task], task_manager=task_manager, batch_size=batch_size,
                                  log_samples=True, num_fewshot=0, bootstrap_iters=0)
    seconds = time.perf_counter() - start
    samples = sorted(out["samples"][lm_task], key=lambda s: s["doc_id"])
    lls = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    metrics = {k.split(",")[0]: v for k, v in out["results"][lm_task].items()
               if k.endswith(",none") and "stderr" not in k}
    return {"seconds": seconds, "scoring_seconds": timer.seconds - scoring_before, "metrics": metrics, "lls": lls,
            "preds": [max(range(len(x)), key=lambda i: (x[i], -i)) for x in lls]}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(result["tasks"])
    ours = [result["tasks"][t]["ours_scoring_s"] for t in tasks]
    theirs = [result["tasks"][t]["lm_eval_scoring_s"] for t in tasks]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    xs = range(len(tasks))
    ax.bar([x - 0.2 for x in xs], ours, 0.4, label="nexus-k eval (hf backend)")
    ax.bar([x + 0.2 for x in xs], theirs, 0.4, label="lm-evaluation-harness 0.4.13 (hf)")
    ax.set_xticks(list(xs), [t.replace("kobest_", "") for t in tasks])
    ax.set_ylabel("seconds in loglikelihood()")
    ax.set_title(f"KoBEST, {result['limit_label']}, {result['model_parameters'] / 1e6:.0f}M params, CPU")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_result(result: dict, out: Path, complete: bool) -> None:
    """Totals over the tasks done so far, then the JSON file and the plot."""
    tasks = result["tasks"].values()
    total_ours = sum(t["ours_s"] for t in tasks)
    total_theirs = sum(t["lm_eval_s"] for t in tasks)
    docs = sum(t["docs"] for t in tasks)
    agree = sum(t["item_agreement"] * t["docs"] for t in tasks)
    scoring_ours = sum(t["ours_scoring_s"] for t in tasks)
    scoring_theirs = sum(t["lm_eval_scoring_s"] for t in tasks)
    result["complete"] = complete
    result["total"] = {"docs": docs, "ours_s": round(total_ours, 2), "lm_eval_s": round(total_theirs, 2),
                       "speedup": round(total_theirs / total_ours, 2),
                       "ours_scoring_s": round(scoring_ours, 2), "lm_eval_scoring_s": round(scoring_theirs, 2),
                       "scoring_speedup": round(scoring_theirs / scoring_ours, 2), "item_agreement": agree / docs,
                       "same_metrics": all(
                           abs(t["ours_metrics"]["acc"] - t["lm_eval_metrics"]["acc"]) < 1e-9
                           and abs(t["ours_metrics"]["macro_f1"] - t["lm_eval_metrics"]["f1"]) < 1e-9
                           for t in tasks)}
    # Not measured: each task's seconds scaled to its full test set (lengths vary little across a task's docs).
    result["extrapolated_full_test_sets_s"] = {
        side: round(sum(t[f"{side}_s"] * t["test_set_docs"] / t["docs"] for t in tasks))
        for side in ("ours", "lm_eval")}
    result["load_average_end"] = os.getloadavg()[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    plot(result, out.with_suffix(".png"))


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        sys.exit("lm-eval is not installed: pip install -e '.[bench]'")
    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from evals.backends.hf import HFBackend

    torch.set_num_threads(args.threads)
    tasks = [t for t in args.tasks.split(",") if t]
    path = model_dir(args.model_dir)
    work = Path(tempfile.mkdtemp(prefix="nexus-k-bench-evals-"))
    lm_names = write_lm_eval_tasks(tasks, args.data_dir, args.limit, args.fraction, work)
    docs_used = {task: used for task, (_, used, _) in lm_names.items()}
    if args.limit:
        label = f"first {args.limit} test docs per task"
    elif args.fraction >= 1:
        label = "full test sets"
    else:
        label = f"first {args.fraction:.0%} of each test set"
    task_manager = TaskManager(include_path=str(work))

    start = time.perf_counter()
    ours_backend = HFBackend(str(path), dtype="float32", batch_size=args.batch_size)
    ours_load = time.perf_counter() - start
    start = time.perf_counter()
    lm = HFLM(pretrained=str(path), dtype="float32", device="cpu", batch_size=args.lm_eval_batch_size)
    lm_load = time.perf_counter() - start
    # One untimed forward pass each, so one-off start-up costs (thread pools, kernels) hit neither harness's tasks.
    with torch.inference_mode():
        for model in (ours_backend.model, lm.model):
            model(input_ids=torch.arange(1, 65).view(2, 32))
    TimedLoglikelihood(ours_backend)
    TimedLoglikelihood(lm)

    result = {
        "benchmark": "KoBEST log-likelihood scoring: nexus-k eval (hf backend) vs lm-evaluation-harness (hf)",
        "limit_label": label,
        "limit": args.limit, "fraction": None if args.limit else args.fraction,
        "model_parameters": sum(p.numel() for p in ours_backend.model.parameters()),
        "dtype": "float32", "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "load_average_start": os.getloadavg()[0],
        "ours_batch_size": args.batch_size, "lm_eval_batch_size": args.lm_eval_batch_size,
        "lm_eval_version": __import__("lm_eval").__version__,
        "load_seconds": {"ours": round(ours_load, 2), "lm_eval": round(lm_load, 2)},
        "tasks": {},
    }
    for i, task in enumerate(tasks):
        # Alternate which harness goes first, so a load spike does not always land on the same one.
        if i % 2 == 0:
            ours = run_ours(ours_backend, task, args.data_dir, docs_used[task])
            theirs = run_lm_eval(lm, lm_names[task][0], task_manager, args.lm_eval_batch_size)
        else:
            theirs = run_lm_eval(lm, lm_names[task][0], task_manager, args.lm_eval_batch_size)
            ours = run_ours(ours_backend, task, args.data_dir, docs_used[task])
        agree = sum(a == b for a, b in zip(ours["preds"], theirs["preds"], strict=True))
        max_diff = max(abs(a - b) for xs, ys in zip(ours["lls"], theirs["lls"], strict=True)
                       for a, b in zip(xs, ys, strict=True))
        result["tasks"][task] = {
            "docs": len(ours["preds"]), "test_set_docs": lm_names[task][2],
            "ours_s": round(ours["seconds"], 2), "lm_eval_s": round(theirs["seconds"], 2),
            "speedup": round(theirs["seconds"] / ours["seconds"], 2),
            "ours_scoring_s": round(ours["scoring_seconds"], 2),
            "lm_eval_scoring_s": round(theirs["scoring_seconds"], 2),
            "scoring_speedup": round(theirs["scoring_seconds"] / ours["scoring_seconds"], 2),
            "item_agreement": agree / len(ours["preds"]),
            "max_abs_loglikelihood_diff": max_diff,
            "ours_metrics": ours["metrics"],
            "lm_eval_metrics": {k: v for k, v in theirs["metrics"].items() if k in ("acc", "acc_norm", "f1")},
        }
        print(task, json.dumps(result["tasks"][task], ensure_ascii=False), flush=True)
        # Written after every task, so a run cut short still leaves what it measured.
        write_result(result, args.out, complete=i == len(tasks) - 1)
    print(json.dumps(result["total"]), flush=True)


if __name__ == "__main__":
    main()
