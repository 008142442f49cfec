"""vLLM on structurally pruned checkpoints: does it serve them unchanged, and how much faster do they decode?

    flock /tmp/nexus-heavy.lock python -m bench.pruning_vllm        # Gemma 3 270M and the 100m preset
    python -m bench.pruning_vllm --table                             # print the docs table of --out

For each model (Gemma 3 270M, the demo base; the project's ``--preset 100m`` Llama, random weights) the
heads are scored (gradient importance and redundancy on two sequences of the bundled Korean story), the
per-layer QUBO is solved at two budgets by QAOA (windows of whole layers, <= 24 qubits) and by annealing,
and each answer is written as a smaller checkpoint with ``quantum_kernels.structural``. Every checkpoint,
and the unpruned model, is then served by vLLM's offline ``LLM`` (CPU build, float32, eager mode, no prefix
caching, token ids in and out), each in its own process:

* **agreement**: greedy continuations of two fixed Korean prompts (with their logprobs), checked against
  transformers on the same checkpoint (float32): vLLM's every token must be transformers' argmax given the
  same prefix (so transformers' greedy decoding yields the same tokens) and the logprobs must agree;
* **speed**: prefill seconds of a 1,024-token prompt, and decode tokens/s at batch 1 and 16 with
  ``ignore_eos`` (``--decode-tokens`` new tokens per sequence, 32-token prompts; the time of the same batch
  with one new token is subtracted, so prompt processing is not counted), ``--repeats`` per process.

Processes alternate unpruned and pruned (A B C, then C B A, ...) for ``--rounds`` rounds, so that load from
other jobs hits every variant alike; tables report the median of all repeats. Every mask of one budget has
the same shapes (same head counts in every layer), so speed depends only on the budget: the QAOA checkpoint
is measured in every round, the annealing one (and a random feasible mask where annealing chose the same)
once, to show it. Writes bench/results/pruning_vllm.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parent.parent
log = logging.getLogger("bench.pruning_vllm")

VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_HOST_IP": "127.0.0.1", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "TOKENIZERS_PARALLELISM": "false"}


# --------------------------------------------------------------------------------------------------------
# The worker: one vLLM engine on one checkpoint, in its own process.


def worker(spec: dict) -> dict:
    """Greedy check and speed of one checkpoint under vLLM's offline ``LLM`` (run in a fresh process)."""
    import random

    if spec.get("config_only"):
        # Only vLLM's config loader (what it does before building an engine) on the folder.
        from vllm.transformers_utils.config import get_config

        try:
            config = get_config(spec["model"], trust_remote_code=False)
            return {"config_loaded": True, "num_attention_heads": config.num_attention_heads}
        except Exception as err:  # what a user of `vllm serve` would see
            return {"config_loaded": False, "error": f"{type(err).__name__}: {err}"}
    from vllm import LLM, SamplingParams

    t = time.perf_counter()
    llm = LLM(model=spec["model"], dtype=spec.get("dtype", "float32"), enforce_eager=True,
              enable_prefix_caching=False, skip_tokenizer_init=True, max_model_len=spec["max_model_len"],
              max_num_seqs=max([1, *spec.get("batches", [])]), seed=0)
    out: dict = {"load_s": time.perf_counter() - t}

    def run(prompts: list[list[int]], max_tokens: int, logprobs: int | None = None):
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, detokenize=False,
                                logprobs=logprobs)
        started = time.perf_counter()
        outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        seconds = time.perf_counter() - started
        for o in outputs:
            if len(o.outputs[0].token_ids) != max_tokens:
                raise RuntimeError(f"asked for {max_tokens} tokens, got {len(o.outputs[0].token_ids)}")
        return outputs, seconds

    if spec.get("check_prompts"):
        outputs, _ = run(spec["check_prompts"], spec["check_tokens"], logprobs=1)
        out["greedy"] = [{"tokens": list(o.outputs[0].token_ids),
                          "logprobs": [step[tok].logprob for tok, step in zip(o.outputs[0].token_ids,
                                                                                o.outputs[0].logprobs,
                                                                                strict=True)]}
                         for o in outputs]
    batches = spec.get("batches", [])
    if batches:
        rng = random.Random(0)
        vocab = spec["vocab_size"]
        prompts = [[rng.randrange(10, vocab) for _ in range(spec["prompt_tokens"])] for _ in range(max(batches))]
        long_prompt = [rng.randrange(10, vocab) for _ in range(spec["prefill_tokens"])]
        n = spec["decode_tokens"]
        run(prompts[:max(batches)], 8)  # warm-up
        run([long_prompt], 1)
        timings: dict[str, list[float]] = {"prefill_s": []}
        for _ in range(spec["repeats"]):
            timings["prefill_s"].append(run([long_prompt], 1)[1])
            for b in batches:
                first = run(prompts[:b], 1)[1]
                full = run(prompts[:b], n)[1]
                timings.setdefault(f"decode_tok_s_b{b}", []).append(b * (n - 1) / max(full - first, 1e-9))
                timings.setdefault(f"generate_tok_s_b{b}", []).append(b * n / full)
        out["timings"] = timings
    return out


def run_worker(spec: dict, timeout: float = 900, log_file: Path | None = None) -> dict:
    """``worker(spec)`` in a fresh Python process with vLLM's CPU environment; raises on failure."""
    with tempfile.TemporaryDirectory(prefix="pruning-vllm-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec))
        env = {**os.environ, **VLLM_ENV}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        proc = subprocess.run([sys.executable, "-m", "bench.pruning_vllm", "--worker", str(spec_path),
                               "--worker-out", str(out_path)], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout)
        if log_file is not None:
            with log_file.open("a", encoding="utf-8") as f:
                f.write(f"==== {spec['model']}\n{proc.stdout}\n{proc.stderr}\n")
        if proc.returncode != 0 or not out_path.exists():
            raise RuntimeError(f"vLLM worker failed ({proc.returncode}) on {spec['model']}: {proc.stderr[-3000:]}")
        return json.loads(out_path.read_text())


# --------------------------------------------------------------------------------------------------------
# The reference: transformers on the same checkpoint.


def transformers_agreement(model_dir: str | Path, prompts: list[list[int]], greedy: list[dict]) -> dict:
    """Teacher-forced transformers (float32) on vLLM's greedy sequences: is each of vLLM's tokens transformers'
    argmax given the same prefix, and how far apart are the logprobs?"""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    argmax_equal, max_diff, min_margin = True, 0.0, float("inf")
    with torch.no_grad():
        for prompt, got in zip(prompts, greedy, strict=True):
            ids = torch.tensor([prompt + got["tokens"]])
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
            steps = logprobs[len(prompt) - 1:len(prompt) - 1 + len(got["tokens"])]
            top2 = steps.topk(2, dim=-1).values
            min_margin = min(min_margin, float((top2[:, 0] - top2[:, 1]).min()))
            argmax_equal &= steps.argmax(-1).tolist() == got["tokens"]
            ref = steps[torch.arange(len(got["tokens"])), torch.tensor(got["tokens"])]
            max_diff = max(max_diff, float((ref - torch.tensor(got["logprobs"])).abs().max()))
    del model
    return {"greedy_tokens_equal": bool(argmax_equal), "max_logprob_diff": max_diff,
            "min_top2_margin": min_margin}


# --------------------------------------------------------------------------------------------------------
# Checkpoints: QAOA's and annealing's masks written as smaller models.


def prepare_checkpoints(name: str, model_dir: Path, budgets: list[int], work: Path, args) -> dict:
    """Score heads once, solve each budget with QAOA and annealing, write the smaller checkpoints."""
    import numpy as np

    from nexus_k.core.korean_text import bundled_korean_text
    from quantum_kernels.greedy import uniform_feasible_samples
    from quantum_kernels.head_pruning import checkpoint_bytes, load_model
    from quantum_kernels.head_scores import attention_layers, score_heads, tokenize_chunks
    from quantum_kernels.layer_qubo import build_layer_qubo, solve_layer_qubo
    from quantum_kernels.structural import (
        attention_shape,
        budget_groups,
        config_problem,
        count_parameters,
        prune_attention_heads,
        pruned_config,
        writable_budgets,
    )

    t0 = time.perf_counter()
    model, tokenizer, _ = load_model(str(model_dir))
    shape = attention_shape(model)
    text = bundled_korean_text()
    calib = tokenize_chunks(tokenizer, text, 128, args.calib_seqs)
    importance, redundancy = score_heads(model, attention_layers(model), calib)
    importance = importance.reshape(-1)
    names = [f"L{i // shape.num_heads}.H{i % shape.num_heads}" for i in range(importance.size)]
    lines = [line.strip() for line in text.splitlines() if len(line.strip()) >= 40]
    check_prompts = [tokenizer(line, add_special_tokens=True)["input_ids"][:24] for line in (lines[0], lines[-1])]
    variants = {"unpruned": {"path": str(model_dir), "keep": shape.num_heads, "mask": "all",
                             "parameters": count_parameters(model), "bytes": checkpoint_bytes(Path(model_dir))}}
    unwritable = {}
    writable = [keep for keep in budgets if keep in writable_budgets(model)]
    for keep in budgets:
        if keep not in writable:
            # Written anyway (config.json without transformers' validation) to show what vLLM says.
            kv = keep if shape.num_kv_heads == shape.num_heads else shape.num_kv_heads
            config = pruned_config(model.config, keep, kv, shape.head_dim)
            out = work / f"{name}-keep_{keep}-config-only"
            out.mkdir(parents=True, exist_ok=True)
            config.to_json_file(str(out / "config.json"))
            unwritable[str(keep)] = {"transformers": config_problem(config),
                                     "vllm": run_worker({"model": str(out), "config_only": True}, timeout=300)}
            log.info("%s keep %d cannot be written: %s", name, keep, unwritable[str(keep)])
            continue
        groups = budget_groups(shape, list(range(shape.num_layers)), keep)
        qubo = build_layer_qubo(importance, redundancy, groups, 0.5, names)
        qaoa = solve_layer_qubo(qubo, "qaoa", args.seed, args.qaoa_reps, qaoa_maxiter=args.qaoa_maxiter)[0].x
        sa = solve_layer_qubo(qubo, "sa", args.seed)[0].x
        masks = {"qaoa": qaoa}
        if keep == min(writable):
            # A second mask of the same budget, measured once: annealing's, or a random feasible mask where
            # annealing chose QAOA's.
            other = "random" if np.array_equal(qaoa, sa) else "sa"
            masks[other] = uniform_feasible_samples(qubo, 1, args.seed)[0] if other == "random" else sa
        for solver, x in masks.items():
            label = f"keep_{keep}_{solver}"
            out = work / f"{name}-{label}"
            mask = np.asarray(x).reshape(shape.num_layers, -1)
            smaller = prune_attention_heads(model, mask)
            smaller.save_pretrained(out, safe_serialization=True)
            tokenizer.save_pretrained(out)
            variants[label] = {"path": str(out), "keep": keep, "mask": solver, "parameters": count_parameters(smaller),
                               "bytes": checkpoint_bytes(out), "energy": float(qubo.energy(np.asarray(x))),
                               "sa_energy": float(qubo.energy(sa)), "same_as_sa": bool(np.array_equal(x, sa)),
                               "kept_heads": [[int(h) for h in np.flatnonzero(row)] for row in mask]}
            del smaller
    log.info("%s: %d checkpoints in %.0f s", name, len(variants), time.perf_counter() - t0)
    return {"model": name, "shape": vars(shape), "vocab_size": int(model.config.get_text_config().vocab_size),
            "check_prompts": check_prompts, "variants": variants, "writable_budgets": writable_budgets(model),
            "unwritable": unwritable, "prepare_s": time.perf_counter() - t0}


# --------------------------------------------------------------------------------------------------------


def measure(run: dict, args, log_file: Path) -> None:
    """Rounds of worker processes, alternating order; then transformers' agreement per checkpoint."""
    variants = run["variants"]
    every_round = ["unpruned"] + [label for label in variants if label.endswith("_qaoa")]
    once = [label for label in variants if label not in every_round]
    for label in variants:
        variants[label]["runs"] = []
    for r in range(args.rounds):
        order = every_round if r % 2 == 0 else every_round[::-1]
        if r == 0:
            order = order + once
        for label in order:
            spec = {"model": variants[label]["path"], "dtype": args.dtype, "max_model_len": 1024 + 64,
                    "vocab_size": run["vocab_size"], "batches": [1, 16], "prompt_tokens": 32,
                    "prefill_tokens": 1024, "decode_tokens": args.decode_tokens, "repeats": args.repeats,
                    "check_prompts": run["check_prompts"] if r == 0 else [], "check_tokens": args.check_tokens}
            t = time.perf_counter()
            result = run_worker(spec, timeout=args.worker_timeout, log_file=log_file)
            if "greedy" in result:
                variants[label]["vllm_greedy"] = result.pop("greedy")
            variants[label]["runs"].append(result)
            log.info("%s %s round %d: %s (%.0f s)", run["model"], label, r,
                     {k: round(statistics.median(v), 3) for k, v in result.get("timings", {}).items()},
                     time.perf_counter() - t)
    for label, v in variants.items():
        v["speed"] = {k: statistics.median(x for r_ in v["runs"] for x in r_["timings"][k])
                      for k in v["runs"][0]["timings"]}
        v["agreement"] = transformers_agreement(v["path"], run["check_prompts"], v["vllm_greedy"])
        log.info("%s %s: %s", run["model"], label, v["agreement"])


def markdown_table(report: dict) -> str:
    """The docs table: size, vLLM speed and agreement with transformers per checkpoint."""
    lines = ["| model | query heads / layer | mask | parameters | prefill 1,024 tok (s) | decode tok/s b1 | "
             "decode tok/s b16 | b1 / b16 vs unpruned | greedy = transformers (max logprob diff) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run in report["runs"]:
        heads = run["shape"]["num_heads"]
        base = run["variants"]["unpruned"]["speed"]
        for v in run["variants"].values():
            sp = v["speed"]
            gain = (f"{100 * (sp['decode_tok_s_b1'] / base['decode_tok_s_b1'] - 1):+.0f}% / "
                    f"{100 * (sp['decode_tok_s_b16'] / base['decode_tok_s_b16'] - 1):+.0f}%")
            runs = sum(len(r["timings"]["prefill_s"]) for r in v["runs"])
            agree = v["agreement"]
            lines.append(f"| {run['model']} | {v['keep']} of {heads} | {v['mask']} ({runs}x) | "
                         f"{v['parameters'] / 1e6:.1f} M | {sp['prefill_s']:.2f} | {sp['decode_tok_s_b1']:.1f} | "
                         f"{sp['decode_tok_s_b16']:.1f} | {gain if v['mask'] != 'all' else '-'} | "
                         f"{'yes' if agree['greedy_tokens_equal'] else 'NO'} ({agree['max_logprob_diff']:.1e}) |")
        for keep, why in run.get("unwritable", {}).items():
            served = "vLLM loads the config" if why["vllm"].get("config_loaded") else "vLLM rejects the config too"
            lines.append(f"| {run['model']} | {keep} of {heads} | any | - | cannot be saved: transformers rejects the "
                         f"config; {served} | - | - | - | - |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="100m,gemma", help="comma list of gemma, 100m")
    parser.add_argument("--gemma-dir", type=Path, help="Gemma 3 270M folder (default: the demo base)")
    parser.add_argument("--budgets-gemma", default="3,2,1", help="query heads kept per layer (of 4)")
    parser.add_argument("--budgets-100m", default="9,8,6", help="query heads kept per layer (of 12)")
    parser.add_argument("--calib-seqs", type=int, default=2)
    parser.add_argument("--qaoa-reps", type=int, default=1)
    parser.add_argument("--qaoa-maxiter", type=int, default=40)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rounds", type=int, default=2, help="worker processes per checkpoint, order alternating")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats inside each worker")
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--check-tokens", type=int, default=16)
    parser.add_argument("--worker-timeout", type=float, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "pruning_vllm.json")
    parser.add_argument("--table", action="store_true", help="print the docs table of --out and exit")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.worker_out.write_text(json.dumps(worker(json.loads(args.worker.read_text()))))
        return
    if args.table:
        print(markdown_table(json.loads(args.out.read_text())))
        return
    for key, value in VLLM_ENV.items():
        os.environ.setdefault(key, value)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("qiskit").setLevel(logging.WARNING)
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-pruning-vllm-"))
    log_file = work / "vllm.log"
    runs = []
    for name in args.models.split(","):
        if name == "gemma":
            from bench.pruning import demo_gemma_dir

            model_dir, budgets = Path(args.gemma_dir or demo_gemma_dir()), args.budgets_gemma
        elif name == "100m":
            from training.tiny_model import build_tiny_model

            model_dir, budgets = build_tiny_model(work / "100m", preset="100m"), args.budgets_100m
        else:
            raise SystemExit(f"unknown model {name!r}")
        run = prepare_checkpoints(name, Path(model_dir), [int(b) for b in budgets.split(",")], work, args)
        measure(run, args, log_file)
        runs.append(run)
        report = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} {platform.system()}, "
                  f"{os.cpu_count()} CPUs (shared)", "engine": f"{vllm_version()} offline LLM, "
                  f"{args.dtype}, enforce_eager, no prefix caching; default thread binding",
                  "env": VLLM_ENV, "config": {k: str(v) for k, v in vars(args).items() if not k.startswith("worker")},
                  "runs": runs, "seconds": time.perf_counter() - started}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")  # after every model
        log.info("wrote %s after %.0f s (vLLM logs: %s)", args.out, report["seconds"], log_file)
    print(markdown_table(report))


def vllm_version() -> str:
    """The installed vLLM distribution and version (the CPU build is named vllm-cpu)."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm-cpu", "vllm"):
        try:
            return f"{dist} {version(dist)}"
        except PackageNotFoundError:
            continue
    return "?"


if __name__ == "__main__":
    main()
