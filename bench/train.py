"""Training benchmark: our loop vs a plain transformers ``Trainer`` (same model, data, batch, precision),
model FLOP utilisation against a measured matmul peak, and the held-out bits/char a ~10M model reaches
on NSMC text within a time budget.

    python -m bench.train                      # the full run (15-minute budget)
    python -m bench.train --budget-min 5       # what fits on a busy machine

Writes bench/results/train.json and bench/results/train_loss.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from training.batches import IndexedBatchSource, stack_collate
from training.config import DataConfig, LoopConfig, OptimConfig, PretrainConfig, load_config
from training.data import build_pretrain_data, training_documents
from training.distributed import DistInfo
from training.loop import run_training
from training.model import build_llama, count_parameters
from training.report import metrics_summary, plot_loss_curve

REPO = Path(__file__).resolve().parent.parent

log = logging.getLogger("bench.train")
RESULTS = REPO / "bench" / "results"
NSMC = REPO.parent / "shared" / "data" / "nsmc" / "nsmc_raw_reviews.tsv.gz"


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """Best observed FLOP/s of an n x n matmul in ``dtype`` on this machine."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.matmul(a, b)
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    """Training FLOPs per token: 6 x (matmul parameters incl. the output projection) + attention scores."""
    cfg = model.config
    embedding = cfg.vocab_size * cfg.hidden_size
    body = count_parameters(model) - embedding - (0 if cfg.tie_word_embeddings else embedding)
    matmul_params = body + embedding  # the output projection multiplies whether tied or not
    return 6 * matmul_params + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq_len


def korean_tokenizer(cfg: DataConfig, out: Path, vocab: int, docs: int):
    """A byte-level BPE trained on the first ``docs`` training documents (held-out ones excluded)."""
    from transformers import AutoTokenizer

    from tokenizer.train import TrainConfig, train_tokenizer

    texts = [d for _, d in zip(range(docs), training_documents(cfg), strict=False)]
    config = TrainConfig(corpus=[str(NSMC)], out=str(out), vocab_size=vocab, min_frequency=0, show_progress=False)
    train_tokenizer(config, texts)
    return AutoTokenizer.from_pretrained(out)


def ours_tokens_per_s(model, seqs, micro: int, steps: int, warmup: int, precision: str) -> float:
    """Tokens/s of our loop over ``steps`` optimizer steps after ``warmup`` steps."""
    source = IndexedBatchSource(seqs, stack_collate, micro, 1, DistInfo(), seed=0)
    loop = LoopConfig(
        max_steps=warmup + steps,
        micro_batch_size=micro,
        precision=precision,
        log_every=1,
        eval_every=0,
        checkpoint_every=0,
        resume=False,
    )
    result, _ = run_training(model, source, None, loop, OptimConfig(warmup_steps=2), DistInfo(), None, "ours")
    timed = result.history["train"][warmup:]
    tokens = micro * seqs.shape[1] * len(timed)
    return tokens / sum(micro * seqs.shape[1] / r["tokens_per_s"] for r in timed)


def trainer_tokens_per_s(model, seqs, micro: int, steps: int, warmup: int, precision: str, tmp: Path) -> float:
    """Tokens/s of a plain transformers Trainer on the same model, sequences, batch and precision."""
    from datasets import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments

    marks: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == warmup:
                marks["start"] = time.perf_counter()
            marks["end"] = time.perf_counter()

    data = Dataset.from_dict({"input_ids": seqs.tolist(), "labels": seqs.tolist()})
    args = TrainingArguments(
        output_dir=str(tmp / "trainer"),
        per_device_train_batch_size=micro,
        max_steps=warmup + steps,
        learning_rate=1e-3,
        warmup_steps=2,
        lr_scheduler_type="cosine",
        weight_decay=0.1,
        adam_beta2=0.95,
        max_grad_norm=1.0,
        bf16=precision == "bf16",
        use_cpu=True,
        save_strategy="no",
        report_to=[],
        logging_steps=10_000,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    Trainer(model=model, args=args, train_dataset=data, callbacks=[Clock()]).train()
    return micro * seqs.shape[1] * steps / (marks["end"] - marks["start"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-min", type=float, default=15.0, help="Training time for the bits/char run.")
    parser.add_argument("--config", default=str(REPO / "configs" / "train" / "ko-small.yaml"))
    parser.add_argument("--tokenizer", help="Tokenizer folder (default: a 32k BPE trained here on NSMC).")
    parser.add_argument("--data", default=str(NSMC), help="NSMC raw reviews (.tsv.gz).")
    parser.add_argument("--max-docs", type=int, default=150_000, help="Training reviews to tokenize.")
    parser.add_argument("--speed-steps", type=int, default=15, help="Timed steps per throughput round.")
    parser.add_argument("--rounds", type=int, default=2, help="Alternating throughput rounds per loop.")
    parser.add_argument("--micro-batch", type=int, help="Sequences per step (default: the config's).")
    parser.add_argument("--tokenizer-docs", type=int, default=100_000, help="Reviews to train the BPE on.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-budget-run", action="store_true", help="Only measure throughput and MFU.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    log.info("bench started: %s", vars(args))
    load_start = os.getloadavg()
    torch.set_num_threads(args.threads)
    started = time.time()

    cfg = load_config(PretrainConfig, args.config)
    cfg.data.train, cfg.data.heldout, cfg.data.max_docs = [args.data], [], args.max_docs
    tmp = Path(tempfile.mkdtemp(prefix="nexus-k-bench-train-"))
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    else:
        tokenizer = korean_tokenizer(cfg.data, tmp / "tokenizer", 32000, args.tokenizer_docs)
    if args.micro_batch:
        cfg.train.micro_batch_size = args.micro_batch
    precision, micro, seq_len = cfg.train.precision, cfg.train.micro_batch_size, cfg.data.seq_len

    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    log.info("matmul peak: %s GFLOP/s", {k: round(v / 1e9, 1) for k, v in peaks.items()})

    source, eval_set, data_stats = build_pretrain_data(tokenizer, cfg.data, cfg.train, DistInfo())
    seqs = source.items[: micro * (args.speed_steps + 3) * 2]
    torch.manual_seed(0)
    init = build_llama(cfg.model, tokenizer).state_dict()

    def fresh_model() -> torch.nn.Module:
        return _fresh(cfg, tokenizer, init)

    ours, theirs = [], []
    for _ in range(args.rounds):
        ours.append(ours_tokens_per_s(fresh_model(), seqs, micro, args.speed_steps, 3, precision))
        theirs.append(trainer_tokens_per_s(fresh_model(), seqs, micro, args.speed_steps, 3, precision, tmp))
        log.info("tokens/s ours %.0f, Trainer %.0f", ours[-1], theirs[-1])
    model = fresh_model()
    fpt = flops_per_token(model, seq_len)
    speed = {
        "model_parameters": count_parameters(model),
        "micro_batch": micro,
        "seq_len": seq_len,
        "precision": precision,
        "threads": args.threads,
        "steps_timed_per_round": args.speed_steps,
        "rounds": args.rounds,
        "ours_tokens_per_s": [round(x, 1) for x in ours],
        "trainer_tokens_per_s": [round(x, 1) for x in theirs],
        "ours_median": round(statistics.median(ours), 1),
        "trainer_median": round(statistics.median(theirs), 1),
        "ratio_ours_over_trainer": round(statistics.median(ours) / statistics.median(theirs), 3),
        "flops_per_token": fpt,
        "matmul_peak_gflops": {k: round(v / 1e9, 1) for k, v in peaks.items()},
        "mfu_ours": round(statistics.median(ours) * fpt / peaks[precision], 4),
        "mfu_trainer": round(statistics.median(theirs) * fpt / peaks[precision], 4),
    }
    results = {
        "machine": {"platform": platform.platform(), "cpus": torch.get_num_threads(), "torch": torch.__version__},
        "throughput": speed,
        "data": data_stats,
    }

    if not args.skip_budget_run:
        budget = args.budget_min * 60
        tokens_per_step = micro * cfg.train.grad_accum_steps * seq_len
        # The short timed rounds run below the long run's speed (warm-up), so plan ~10% more steps than the
        # fastest round allows and let the time budget stop the run: the budget is used in full.
        steps = max(10, int(budget * max(ours) / tokens_per_step * 1.1))
        loop = LoopConfig(
            max_steps=steps,
            micro_batch_size=micro,
            grad_accum_steps=cfg.train.grad_accum_steps,
            precision=precision,
            log_every=10,
            eval_every=steps // 5 if steps >= 50 else 0,
            eval_batches=0,
            checkpoint_every=0,
            resume=False,
            time_budget_s=budget,
        )
        optim = OptimConfig(**{**cfg.optim.__dict__, "warmup_steps": min(cfg.optim.warmup_steps, steps // 10)})
        torch.manual_seed(0)
        model = build_llama(cfg.model, tokenizer)
        run_source = IndexedBatchSource(source.items, stack_collate, micro, loop.grad_accum_steps, DistInfo(), 0)
        t0 = time.time()
        result, _ = run_training(model, run_source, eval_set, loop, optim, DistInfo(), None, "nsmc")
        plot_loss_curve(result, RESULTS / "train_loss.png", f"~10M model on NSMC, {args.budget_min:g} min budget")
        results["budget_run"] = {
            "budget_min": args.budget_min,
            "planned_steps": steps,
            "wall_s": round(time.time() - t0, 1),
            "tokens_per_step": tokens_per_step,
            **metrics_summary(result),
            "eval": result.history["eval"],
        }
    results["bench_wall_s"] = round(time.time() - started, 1)
    results["loadavg_start"] = [round(x, 2) for x in load_start]
    results["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["command"] = " ".join(["python", "bench/train.py", *sys.argv[1:]])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "train.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    log.info("wrote %s", RESULTS / "train.json")


def _fresh(cfg: PretrainConfig, tokenizer, state: dict) -> torch.nn.Module:
    model = build_llama(cfg.model, tokenizer)
    model.load_state_dict(state)
    return model


if __name__ == "__main__":
    main()
