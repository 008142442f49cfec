"""Korean embedding quality: KorSTS Spearman and passage retrieval (KorQuAD 1.0 dev, KoBEST BoolQ test) for
the untrained base, the bundled trained model, Kiwi-morpheme BM25 and BM25 + dense by reciprocal-rank fusion.

    python bench/embeddings.py                 # bounded default: a seeded subsample (see --help)
    python bench/embeddings.py --full          # every KorSTS test pair, all 5,774 KorQuAD questions x 964
                                               # contexts, all 1,404 BoolQ test questions x their passages
    python bench/embeddings.py --speed         # throughput and peak memory: our server against
                                               # sentence-transformers on the bundled model (embeddings_speed.py)

Retrieval: each question is searched against all contexts of the (sub)set; the right context is the one it
was written on (KorQuAD; evaluation only, its licence forbids derivatives) or its passage (BoolQ). Both
models embed with the same settings (mean pooling as declared, texts cut at --max-length tokens).
Output: bench/results/embeddings.json (embeddings_full.json with --full).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import random
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PUBLISHED_KORSTS = {"KoSBERT": 0.785, "KoSimCSE-BERT": 0.826}
log = logging.getLogger("bench.embeddings")


def korquad_task(data_dir: Path, contexts: int | None, questions: int | None, seed: int) -> dict:
    """Contexts and (question, index of its context) from KorQuAD 1.0 dev, optionally subsampled."""
    data = json.loads((data_dir / "korquad_v1" / "KorQuAD_v1.0_dev.json").read_text(encoding="utf-8"))
    paragraphs = [p for article in data["data"] for p in article["paragraphs"]]
    rng = random.Random(seed)
    if contexts is not None and contexts < len(paragraphs):
        paragraphs = rng.sample(paragraphs, contexts)
    items = [(qa["question"], i) for i, p in enumerate(paragraphs) for qa in p["qas"]]
    if questions is not None and questions < len(items):
        items = rng.sample(items, questions)
    return {"documents": [p["context"] for p in paragraphs], "queries": [q for q, _ in items],
            "relevant": [{i} for _, i in items]}


def boolq_task(data_dir: Path, questions: int | None, seed: int) -> dict:
    """KoBEST BoolQ test: question -> its passage, among the passages of the (sub)sampled rows."""
    with (data_dir / "kobest" / "BoolQ" / "test.tsv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    if questions is not None and questions < len(rows):
        rows = random.Random(seed).sample(rows, questions)
    documents = sorted({r["Text"] for r in rows})
    position = {text: i for i, text in enumerate(documents)}
    return {"documents": documents, "queries": [r["Question"] for r in rows],
            "relevant": [{position[r["Text"]]} for r in rows]}


def retrieval_metrics(results: list, relevant: list) -> dict:
    """recall@1/5/10 and MRR (within the top 100)."""
    from retrieval import mrr, recall_at_k

    out = {f"recall@{k}": round(recall_at_k(results, relevant, k), 4) for k in (1, 5, 10)}
    out["mrr"] = round(mrr(results, relevant), 4)
    return out


def run(args: argparse.Namespace) -> dict:
    """Every method on every task; returns the results document."""
    import torch

    from retrieval import BM25Index, DenseIndex, reciprocal_rank_fusion
    from training.embed import Embedder
    from training.embed_data import cosine_spearman, read_sts

    torch.set_num_threads(args.threads)
    data_dir = Path(args.data_dir)
    sts = read_sts(data_dir / "kornli_korsts" / "KorSTS" / "sts-test.tsv")
    if not args.full and args.sts_pairs < len(sts.scores):
        # A seeded sample: the file is ordered by genre (captions first, which are the easiest).
        keep = sorted(random.Random(args.seed).sample(range(len(sts.scores)), args.sts_pairs))
        sts = type(sts)(*([column[i] for i in keep] for column in (sts.first, sts.second, sts.scores)))
    tasks = {
        "korquad": korquad_task(data_dir, None if args.full else args.korquad_contexts,
                                None if args.full else args.korquad_questions, args.seed),
        "boolq": boolq_task(data_dir, None if args.full else args.boolq_questions, args.seed),
    }
    results: dict = {"sts": {}, "retrieval": {name: {} for name in tasks}, "timing": {}}
    bm25_hits = {}
    for name, task in tasks.items():
        started = time.perf_counter()
        bm25_hits[name] = BM25Index(task["documents"]).search(task["queries"], k=100)
        results["retrieval"][name]["bm25"] = retrieval_metrics(bm25_hits[name], task["relevant"])
        results["timing"][f"bm25_{name}_s"] = round(time.perf_counter() - started, 1)
        log.info("%s bm25: %s", name, results["retrieval"][name]["bm25"])
    models = {"base": args.base, "trained": args.trained}
    for label in args.models.split(","):
        embedder = Embedder.load(models[label], max_length=args.max_length)
        started = time.perf_counter()
        tokens = 0

        def encode(texts: list[str], _e: Embedder = embedder) -> np.ndarray:
            nonlocal tokens
            tokens += sum(min(len(ids), args.max_length) for ids in _e.tokenizer(texts)["input_ids"])
            return _e.encode(texts, batch_size=args.batch_size)

        first, second = encode(sts.first), encode(sts.second)
        results["sts"][label] = {"spearman": round(cosine_spearman(first, second, sts.scores), 4)}
        for dim in [d for d in args.matryoshka_dims if d < first.shape[1]]:
            value = cosine_spearman(first[:, :dim], second[:, :dim], sts.scores)
            results["sts"][label][f"spearman@{dim}"] = round(value, 4)
        log.info("%s KorSTS test: %s", label, results["sts"][label])
        for name, task in tasks.items():
            index = DenseIndex(encode(task["documents"]))
            dense = index.search(encode(task["queries"]), k=100)
            hybrid = [reciprocal_rank_fusion([b, d], top=100) for b, d in zip(bm25_hits[name], dense, strict=True)]
            results["retrieval"][name][f"dense_{label}"] = retrieval_metrics(dense, task["relevant"])
            results["retrieval"][name][f"hybrid_{label}"] = retrieval_metrics(hybrid, task["relevant"])
            log.info("%s %s: dense %s hybrid %s", name, label, results["retrieval"][name][f"dense_{label}"],
                     results["retrieval"][name][f"hybrid_{label}"])
        seconds = time.perf_counter() - started
        results["timing"][f"{label}_embed_s"] = round(seconds, 1)
        results["timing"][f"{label}_tokens_per_s"] = round(tokens / seconds, 1)
    results["sizes"] = {
        "korsts_test_pairs": len(sts.scores),
        **{f"{n}_queries": len(t["queries"]) for n, t in tasks.items()},
        **{f"{n}_documents": len(t["documents"]) for n, t in tasks.items()},
    }
    return results


def _comparable(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k not in ("models", "threads", "batch_size")}


def merge_previous(out: Path, document: dict) -> dict:
    """Keep the other models' numbers of an earlier run with the same data settings (``--models base``
    then ``--models trained`` give one table)."""
    if not out.is_file():
        return document
    old = json.loads(out.read_text(encoding="utf-8"))
    if _comparable(old.get("settings", {})) != _comparable(document["settings"]):
        return document
    for section in ("sts", "timing"):
        document[section] = {**old.get(section, {}), **document[section]}
    for task, methods in old.get("retrieval", {}).items():
        document["retrieval"][task] = {**methods, **document["retrieval"].get(task, {})}
    document["settings"]["models"] = ",".join(
        dict.fromkeys(old["settings"]["models"].split(",") + document["settings"]["models"].split(","))
    )
    return document


def main(argv: list[str] | None = None) -> None:
    """Command line; writes the results JSON."""
    cache = Path(os.environ.get("NEXUS_K_CACHE_DIR", Path.home() / ".cache" / "nexus-k"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--base", default=str(cache / "models" / "gemma-3-270m"), help="untrained base model")
    parser.add_argument("--trained", default=str(REPO / "serving" / "adapters" / "ko_embed"), help="trained model")
    parser.add_argument("--models", default="base,trained", help="which models to embed with")
    parser.add_argument("--full", action="store_true", help="every pair, question and context (slow on CPU)")
    parser.add_argument("--sts-pairs", type=int, default=300, help="KorSTS test pairs (seeded sample)")
    parser.add_argument("--korquad-contexts", type=int, default=100, help="sampled KorQuAD contexts")
    parser.add_argument("--korquad-questions", type=int, default=300, help="sampled questions on them")
    parser.add_argument("--boolq-questions", type=int, default=150, help="sampled BoolQ test questions")
    parser.add_argument("--max-length", type=int, default=256, help="tokens kept per text (both models)")
    parser.add_argument("--matryoshka-dims", default="64,128,256", help="also score STS at these widths")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    speed = parser.add_argument_group("speed (--speed): server vs sentence-transformers, batch 64")
    speed.add_argument("--speed", action="store_true", help="measure throughput and peak memory instead")
    speed.add_argument("--speed-model", type=Path, default=None,
                       help="embedding model folder (default: the bundled nexus-k-ko-embed, merged once)")
    speed.add_argument("--speed-inputs", type=int, default=512, help="KorSTS test sentences per round")
    speed.add_argument("--speed-batch", type=int, default=64, help="inputs per request / encode call")
    speed.add_argument("--speed-rounds", type=int, default=3, help="rounds of server then sentence-transformers")
    parser.set_defaults(sts_sample="seeded")
    args = parser.parse_args(argv)
    args.matryoshka_dims = [int(d) for d in args.matryoshka_dims.split(",") if d]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.time()
    if args.speed:
        from embeddings_speed import run_speed  # bench/ is on sys.path: this file runs as a script

        if args.speed_model is None:
            from serving.demo_embedder import prepare_demo_embedder

            args.speed_model = prepare_demo_embedder()
        results = run_speed(args.speed_model, Path(args.data_dir), args.speed_inputs, args.speed_batch,
                            args.speed_rounds, args.threads, args.seed)
        out = args.out or REPO / "bench" / "results" / "embeddings_speed.json"
        command = "python bench/embeddings.py --speed"
    else:
        results = run(args)
        out = args.out or REPO / "bench" / "results" / ("embeddings_full.json" if args.full else "embeddings.json")
        command = "python bench/embeddings.py" + (" --full" if args.full else "")
    document = {
        "command": command,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                     if k in ("data_dir", "threads", "seed") or (k != "out" and k.startswith("speed") == args.speed)},
        "published_korsts_test_spearman": PUBLISHED_KORSTS,
        **results,
        "wall_seconds": round(time.time() - started, 1),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load": os.getloadavg()},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if not args.speed:
        document = merge_previous(out, document)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info("wrote %s", out)


if __name__ == "__main__":
    main()
