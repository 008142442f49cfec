"""Structural head pruning: what a user gains in size and speed, and loses in perplexity, per solver.

    python -m bench.pruning                 # default run (about 15 minutes on the shared 2-core machine)
    python -m bench.pruning --full          # every mask recovered, more repeats, more text, deeper QAOA

Models: Gemma 3 270M (the demo base, 4 query heads / 1 key-value head per layer; prepared by
``nexus-k model demo``) and the project's ~100M Llama preset (``nexus-k model tiny --preset 100m``: random
weights, so its perplexities only show the mechanics). At two budgets (query heads kept per layer), for
the unpruned model and the masks of QAOA (windows of whole layers <= 24 qubits), swap-move annealing,
QUBO-greedy, importance top-k, the gradient-importance QUBO (annealed) and top-k, and random feasible
masks (mean of 5): full-QUBO energy, held-out Korean
perplexity (NSMC raw reviews, CC0: calibration and held-out lines are disjoint), and before/after a short
recovery fine-tune. Parameters, prefill time of a 1,024-token prompt and decode tokens/s (transformers on
CPU, float32, batch 1 and 16) are measured on the smaller checkpoints; every mask of one budget has the
same architecture, so speed is per budget. QAOA windows report exact P(optimum) against uniform feasible
sampling. Writes bench/results/pruning.json.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import logging
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from quantum_kernels.greedy import uniform_feasible_samples
from quantum_kernels.head_pruning import PruneConfig, load_model, split_text
from quantum_kernels.head_scores import (
    ablation_importance,
    attention_layers,
    perplexity,
    score_heads,
    tokenize_chunks,
)
from quantum_kernels.layer_qubo import build_layer_qubo, importance_top_k, solve_layer_qubo
from quantum_kernels.recovery import RecoveryConfig, recover
from quantum_kernels.structural import attention_shape, budget_groups, count_parameters, prune_attention_heads

RESULTS = Path(__file__).parent / "results"
SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
log = logging.getLogger("bench.pruning")


def korean_text(path: Path, reviews: int) -> Path:
    """NSMC raw reviews (CC0) of at least 40 characters, one per line, into ``path``."""
    lines = []
    with gzip.open(SHARED / "nsmc" / "nsmc_raw_reviews.tsv.gz", "rt", encoding="utf-8") as f:
        next(f)
        for row in f:
            text = row.rstrip("\n").split("\t")[3].strip()
            if len(text) >= 40:
                lines.append(text)
            if len(lines) == reviews:
                break
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@torch.no_grad()
def speed(model, vocab: int, repeats: int, decode_tokens: int) -> dict[str, float]:
    """Median prefill seconds (1,024-token prompt) and decode tokens/s at batch 1 and 16 (KV cache)."""
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(10, vocab, (1, 1024), generator=gen)
    out: dict[str, list[float]] = {"prefill_1024_s": [], "decode_tok_s_b1": [], "decode_tok_s_b16": []}
    for _ in range(repeats):
        t = time.perf_counter()
        model(input_ids=prompt, use_cache=False, logits_to_keep=1)
        out["prefill_1024_s"].append(time.perf_counter() - t)
        for batch in (1, 16):
            ids = torch.randint(10, vocab, (batch, 32), generator=gen)
            step = model(input_ids=ids, use_cache=True, logits_to_keep=1)
            past, token = step.past_key_values, step.logits[:, -1:].argmax(-1)
            t = time.perf_counter()
            for _ in range(decode_tokens):
                step = model(input_ids=token, past_key_values=past, use_cache=True)
                past, token = step.past_key_values, step.logits[:, -1:].argmax(-1)
            out[f"decode_tok_s_b{batch}"].append(batch * decode_tokens / (time.perf_counter() - t))
    return {k: statistics.median(v) for k, v in out.items()}


def run_model(name: str, model_dir: Path, budgets: list[int], text: Path, args) -> dict:
    """Score once, then per budget: every solver's mask, perplexities, recovery, a smaller model for speed."""
    t0 = time.perf_counter()
    model, tokenizer, _ = load_model(str(model_dir))
    shape = attention_shape(model)
    layers = attention_layers(model)
    calib_text, heldout_text = split_text(PruneConfig(model=str(model_dir), keep_per_layer=1,
                                                      calibration_file=str(text)))
    calib = tokenize_chunks(tokenizer, calib_text, args.seq_len, args.calib_seqs)
    heldout = tokenize_chunks(tokenizer, heldout_text, args.seq_len, args.heldout_seqs)
    t = time.perf_counter()
    gradient_all, redundancy = score_heads(model, layers, calib)
    seconds = {"score_gradient": time.perf_counter() - t}
    t = time.perf_counter()
    importance_all = ablation_importance(model, layers, calib) if args.importance == "ablation" else gradient_all
    seconds["score_ablation"] = time.perf_counter() - t
    importance, gradient = importance_all.reshape(-1), gradient_all.reshape(-1)
    n = importance.size
    names = [f"L{i // shape.num_heads}.H{i % shape.num_heads}" for i in range(n)]
    cache: dict[bytes, float] = {}

    def ppl(x: np.ndarray | None) -> float:
        key = b"" if x is None else np.asarray(x, np.int8).tobytes()
        if key not in cache:
            cache[key] = perplexity(model, layers, heldout,
                                    None if x is None else np.asarray(x).reshape(shape.num_layers, -1))
        return cache[key]

    result = {"model": name, "path": str(model_dir), "shape": vars(shape), "parameters": count_parameters(model),
              "calibration_tokens": sum(s.shape[1] for s in calib), "heldout_tokens": sum(s.shape[1] for s in heldout),
              "perplexity_unpruned": ppl(None), "budgets": {}}
    log.info("%s: %d heads scored, unpruned perplexity %.3f (%.0f s)", name, n, result["perplexity_unpruned"],
             time.perf_counter() - t0)
    speed_models = {"unpruned": model}
    for keep in budgets:
        groups = budget_groups(shape, list(range(shape.num_layers)), keep)
        qubo = build_layer_qubo(importance, redundancy, groups, args.redundancy_weight, names)
        masks, rows, windows = {}, {}, []
        for solver in ("qaoa", "sa", "greedy"):
            solution, found = solve_layer_qubo(qubo, solver, args.seed, args.qaoa_reps, qaoa_maxiter=args.qaoa_maxiter)
            masks[solver] = solution.x
            rows[solver] = {"energy": solution.energy, "feasible": solution.feasible, "seconds": solution.seconds}
            windows = windows or [w.quality for w in found]
        masks["importance_top_k"] = importance_top_k(importance, groups)
        rows["importance_top_k"] = {"energy": float(qubo.energy(masks["importance_top_k"]))}
        if args.importance == "ablation":
            # The same QUBO built on the cheaper gradient importance (Michel et al.), for comparison.
            gradient_qubo = build_layer_qubo(gradient, redundancy, groups, args.redundancy_weight, names)
            masks["gradient_qubo_sa"] = solve_layer_qubo(gradient_qubo, "sa", args.seed)[0].x
            masks["gradient_top_k"] = importance_top_k(gradient, groups)
            for label in ("gradient_qubo_sa", "gradient_top_k"):
                rows[label] = {"energy": float(qubo.energy(masks[label]))}
        randoms = uniform_feasible_samples(qubo, args.random_trials, args.seed)
        for name_, x in masks.items():
            rows[name_]["perplexity"] = ppl(x)
        random_ppl = [ppl(x) for x in randoms]
        rows["random"] = {"perplexity": float(np.mean(random_ppl)), "perplexity_min": float(np.min(random_ppl)),
                          "perplexity_max": float(np.max(random_ppl)),
                          "energy": float(np.mean(qubo.energy(randoms)))}
        ratios = [w["p_optimum_vs_uniform"] for w in windows if w.get("p_optimum_vs_uniform")]
        budget = {"keep_per_layer": keep, "masks": rows, "qaoa_windows": windows,
                  "qaoa_p_optimum_vs_uniform_geomean": float(np.exp(np.mean(np.log(ratios)))) if ratios else None}
        # Recovery: by default at the smallest budget only, for the best solver's mask and one random mask;
        # every mask at every budget with --recover-all.
        solver_names = ("qaoa", "sa", "greedy", "importance_top_k")
        best = min(solver_names, key=lambda s: rows[s]["perplexity"])
        targets = {s: masks[s] for s in (solver_names if args.recover_all else (best,))}
        targets["random_0"] = randoms[0]
        # The unpruned model fine-tuned alike: how much of the recovery is adaptation to the text itself.
        targets["unpruned"] = np.ones(n, dtype=np.int8)
        if not args.recover_all and keep != min(budgets):
            targets = {}
        budget["recovery"] = {}
        for label, x in targets.items():
            if label == "unpruned":
                smaller = copy.deepcopy(model)
            else:
                smaller = prune_attention_heads(model, np.asarray(x).reshape(shape.num_layers, -1))
            before = perplexity(smaller, attention_layers(smaller), heldout)
            history = recover(smaller, calib, RecoveryConfig(args.recover_steps, args.recover_lr, seed=args.seed))
            after = perplexity(smaller, attention_layers(smaller), heldout)
            budget["recovery"][label] = {"perplexity_before": before, "perplexity_after": after, **history}
            log.info("%s keep %d %s: perplexity %.3f -> %.3f after %d steps", name, keep, label, before, after,
                     args.recover_steps)
            del smaller
        speed_models[f"keep_{keep}"] = prune_attention_heads(model, np.asarray(masks["qaoa"]).reshape(
            shape.num_layers, -1))
        budget["parameters"] = count_parameters(speed_models[f"keep_{keep}"])
        result["budgets"][str(keep)] = budget
        log.info("%s keep %d: %s", name, keep, {k: round(v["perplexity"], 3) for k, v in rows.items()})
    # Interleaved repeats, so that load from other processes hits every variant alike.
    timings: dict[str, list[dict]] = {k: [] for k in speed_models}
    for _ in range(args.repeats):
        for label, m in speed_models.items():
            timings[label].append(speed(m, len(tokenizer), 1, args.decode_tokens))
    result["speed"] = {label: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                       for label, runs in timings.items()}
    result["seconds"] = {**seconds, "total": time.perf_counter() - t0}
    return result


def recovery_baseline(name: str, model_dir: Path, text: Path, args) -> dict:
    """Only the unpruned model's recovery fine-tune (``--recovery-baseline-only``)."""
    model, tokenizer, _ = load_model(str(model_dir))
    calib_text, heldout_text = split_text(PruneConfig(model=str(model_dir), keep_per_layer=1,
                                                      calibration_file=str(text)))
    calib = tokenize_chunks(tokenizer, calib_text, args.seq_len, args.calib_seqs)
    heldout = tokenize_chunks(tokenizer, heldout_text, args.seq_len, args.heldout_seqs)
    before = perplexity(model, attention_layers(model), heldout)
    history = recover(model, calib, RecoveryConfig(args.recover_steps, args.recover_lr, seed=args.seed))
    after = perplexity(model, attention_layers(model), heldout)
    log.info("%s unpruned: perplexity %.3f -> %.3f after %d steps", name, before, after, args.recover_steps)
    return {"model": name, "unpruned_recovery": {"perplexity_before": before, "perplexity_after": after,
                                                 **history}}


def markdown_tables(report: dict) -> str:
    """The docs tables: size and speed per budget, perplexity per mask, QAOA against uniform sampling."""
    lines = ["| model | query heads / layer | parameters | prefill 1,024 tok (s) | decode tok/s b1 | "
             "decode tok/s b16 |", "|---|---|---|---|---|---|"]
    report = {**report, "runs": [r for r in report["runs"] if "budgets" in r]}
    for run in report["runs"]:
        heads = run["shape"]["num_heads"]
        variants = [("unpruned", heads, run["parameters"])] + [
            (f"keep_{k}", int(k), b["parameters"]) for k, b in run["budgets"].items()]
        for label, kept, params in variants:
            sp = run["speed"][label]
            lines.append(f"| {run['model']} | {kept} of {heads} | {params / 1e6:.1f} M | {sp['prefill_1024_s']:.2f} | "
                         f"{sp['decode_tok_s_b1']:.1f} | {sp['decode_tok_s_b16']:.1f} |")
    labels = ["qaoa", "sa", "greedy", "importance_top_k", "gradient_qubo_sa", "gradient_top_k", "random"]
    lines += ["", "| model | kept / layer | unpruned | " + " | ".join(labels) + " | QAOA P(opt) vs uniform |",
              "|---" * (len(labels) + 4) + "|"]
    for run in report["runs"]:
        for keep, b in run["budgets"].items():
            cells = [f"{b['masks'][m]['perplexity']:.4g}" if m in b["masks"] else "-" for m in labels]
            geo = b["qaoa_p_optimum_vs_uniform_geomean"]
            lines.append(f"| {run['model']} | {keep} | {run['perplexity_unpruned']:.4g} | " + " | ".join(cells)
                         + (f" | {geo:.1f}x |" if geo else " | - |"))
    lines += ["", "| model | kept / layer | mask | perplexity before | after recovery | steps |",
              "|---|---|---|---|---|---|"]
    for run in report["runs"]:
        for keep, b in run["budgets"].items():
            for label, r in b["recovery"].items():
                lines.append(f"| {run['model']} | {keep} | {label} | {r['perplexity_before']:.4g} | "
                             f"{r['perplexity_after']:.4g} | {r.get('steps', 0)} |")
    return "\n".join(lines)


def demo_gemma_dir() -> Path:
    """The converted Gemma 3 270M demo base (converting it on first use, about a minute)."""
    try:
        from serving.demo_model import prepare_demo_model
    except ImportError:
        from nexus_k.demo_model import prepare_demo_model  # before the serving/ move
    return prepare_demo_model(progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="more text and repeats, recover every mask")
    parser.add_argument("--models", default="gemma,100m", help="comma list of gemma, 100m")
    parser.add_argument("--gemma-dir", type=Path, help="Gemma 3 270M folder (default: the demo base)")
    parser.add_argument("--budgets-gemma", default="2,1",
                        help="query heads kept per layer (of 4; 3 cannot be saved: 640 is no multiple of 3)")
    parser.add_argument("--budgets-100m", default="8,6",
                        help="query heads kept per layer (of 12; 9 cannot be saved: 768 is no multiple of 9)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--calib-seqs", type=int, default=4)
    parser.add_argument("--heldout-seqs", type=int, default=6)
    parser.add_argument("--reviews", type=int, default=400, help="NSMC reviews read (3/4 calibration)")
    parser.add_argument("--redundancy-weight", type=float, default=0.5)
    parser.add_argument("--importance", default="ablation", help="ablation | gradient")
    parser.add_argument("--qaoa-reps", type=int, default=2)
    parser.add_argument("--qaoa-maxiter", type=int, default=60)
    parser.add_argument("--random-trials", type=int, default=5)
    parser.add_argument("--recover-steps", type=int, default=8)
    parser.add_argument("--recover-lr", type=float, default=5e-5)
    parser.add_argument("--recover-all", action="store_true")
    parser.add_argument("--repeats", type=int, default=2, help="speed repeats (median)")
    parser.add_argument("--decode-tokens", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "pruning.json")
    parser.add_argument("--table", action="store_true", help="print the docs tables of --out and exit")
    parser.add_argument("--recovery-baseline-only", action="store_true",
                        help="only fine-tune the unpruned model alike (included in a full run)")
    args = parser.parse_args()
    if args.table:
        print(markdown_tables(json.loads(args.out.read_text())))
        return
    if args.full:
        args.calib_seqs, args.heldout_seqs, args.reviews = 16, 32, 1500
        args.qaoa_reps, args.qaoa_maxiter, args.recover_steps, args.recover_all = 3, 150, 30, True
        args.repeats, args.decode_tokens = 3, 32
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("qiskit").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-pruning-"))
    text = korean_text(work / "nsmc.txt", args.reviews)
    runs = []
    for name in args.models.split(","):
        if name == "gemma":
            model_dir = args.gemma_dir or demo_gemma_dir()
            budgets = args.budgets_gemma
        elif name == "100m":
            from training.tiny_model import build_tiny_model

            model_dir = build_tiny_model(work / "100m", preset="100m")
            budgets = args.budgets_100m
        else:
            raise SystemExit(f"unknown model {name!r}")
        if args.recovery_baseline_only:
            runs.append(recovery_baseline(name, Path(model_dir), text, args))
        else:
            runs.append(run_model(name, Path(model_dir), [int(b) for b in budgets.split(",")], text, args))
    report = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} {platform.system()}, "
              f"torch threads {args.threads}", "config": {k: str(v) for k, v in vars(args).items()},
              "text": f"NSMC raw reviews (CC0), first {args.reviews} of >= 40 characters; last quarter held out",
              "engine": "transformers on CPU, float32 (vLLM was not run on the shared 2-core machine)",
              "runs": runs, "seconds": time.perf_counter() - started}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    log.info("wrote %s in %.0f s", args.out, report["seconds"])


if __name__ == "__main__":
    main()
