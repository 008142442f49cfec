"""Document Q&A in Korean, measured (issue 19): retrieval quality, ingestion speed, answers with and without context.

    python -m bench.rag                          # bounded default: 300 questions per set, 100 QA questions;
                                                 # about 12 minutes on 2 cores with nothing cached
    python -m bench.rag --full                   # every question (KorQuAD dev 5,774, BoolQ test 1,404)
    python -m bench.rag --parts retrieval        # one part: retrieval, ingest, qa (comma-separated)
    python -m bench.rag --parts qa --qa-limit 200 --adapter serving/adapters/ko_rag   # another QA adapter

Retrieval (bench/rag_retrieval.py): recall@1/5/10 and MRR of word BM25, Kiwi BM25, dense (the bundled
nexus-k-ko-embed), hybrid (the vector store's RRF) and hybrid + rerank of its top 20 (a cross-encoder with
``--rerank-model``; otherwise the embedding model, as /v1/rerank does when it names one). Document vectors are
cached under the cache dir (``NEXUS_K_CACHE_DIR``), keyed by model and texts; a stopped run resumes.
Ingestion (bench/rag_ingest.py): characters/s and pages/s per format through the server's extraction,
chunking and Kiwi terms; embedding apart. QA (bench/rag_qa.py): KorQuAD EM / character F1 of the demo model's
greedy answers with the hybrid's top passages in the prompt (as ``file_search`` writes them) and without.
Results: bench/results/rag.json (rag_full.json with --full); each run replaces the parts it ran.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import rag_ingest, rag_qa, rag_retrieval

REPO = Path(__file__).resolve().parent.parent
PARTS = ("retrieval", "ingest", "qa")
log = logging.getLogger("bench.rag")


def load_embedder(args: argparse.Namespace) -> tuple[object, str]:
    """The bundled embedding model (merged once, offline) and its cache fingerprint."""
    from serving.demo_embedder import prepare_demo_embedder
    from training.embed import Embedder

    folder = Path(args.embed_model) if args.embed_model else prepare_demo_embedder()
    if folder is None:
        raise SystemExit("error: no embedding model (the bundled ko_embed adapter is missing; give --embed-model)")
    embedder = Embedder.load(str(folder), max_length=args.embed_max_length)
    return embedder, rag_retrieval.model_fingerprint(folder, args.embed_max_length)


def vectors_of(args: argparse.Namespace, embedder: object, fingerprint: str, texts: list[str]) -> tuple:
    """Cached vectors of ``texts`` and the seconds spent embedding now."""
    cache = Path(args.cache_dir) / "bench-rag"
    return rag_retrieval.cached_vectors(lambda batch: embedder.encode(batch, batch_size=args.batch_size),  # type: ignore[attr-defined]
                                        texts, fingerprint, cache)


def make_task(args: argparse.Namespace, name: str, limit: int | None) -> rag_retrieval.Task:
    maker = rag_retrieval.korquad_task if name == "korquad" else rag_retrieval.boolq_task
    return maker(Path(args.data_dir), limit, args.seed)


def cross_encoder_reranker(path: str, task: rag_retrieval.Task,
                           threads: int) -> Callable[[int, list[int]], list[float]]:
    """Rerank with a served cross-encoder model through the project's scoring engine."""
    import asyncio

    import torch

    from serving.engines.base import PairPrompt
    from serving.engines.hf_scoring import HFScoringEngine

    torch.set_num_threads(threads)
    scorer = asyncio.run(HFScoringEngine.create(path))

    def rerank(query: int, candidates: list[int]) -> list[float]:
        encoded = scorer.tokenizer([task.queries[query]] * len(candidates), [task.documents[i] for i in candidates],
                                   truncation="only_second", max_length=scorer.max_model_len)
        types = encoded.get("token_type_ids")
        pairs = [PairPrompt(list(ids), list(types[i]) if types is not None else None)
                 for i, ids in enumerate(encoded["input_ids"])]
        return asyncio.run(scorer.score(pairs, f"rag-rerank-{query}"))

    return rerank


def run_retrieval(args: argparse.Namespace, embedder: object, fingerprint: str) -> dict:
    """Every method on every data set."""
    out: dict = {"rerank": args.rerank_model or "embedding cosine (nexus-k-ko-embed; no cross-encoder offline)",
                 "rerank_depth": args.rerank_depth, "sets": {}}
    for name in args.datasets.split(","):
        task = make_task(args, name, None if args.full else args.limit)
        doc_vectors, doc_s = vectors_of(args, embedder, fingerprint, task.documents)
        query_vectors, query_s = vectors_of(args, embedder, fingerprint, task.queries)
        rerank = (cross_encoder_reranker(args.rerank_model, task, args.threads) if args.rerank_model
                  else rag_retrieval.cosine_reranker(doc_vectors, query_vectors))
        metrics, timing, _ = rag_retrieval.retrieve(task, doc_vectors, query_vectors, rerank, args.rerank_depth)
        timing.update(embed_documents_s=round(doc_s, 1), embed_queries_s=round(query_s, 1))
        out["sets"][name] = {"documents": len(task.documents), "queries": len(task.queries), "metrics": metrics,
                             "hybrid_beats_every_single": rag_retrieval.beats_every_single(metrics),
                             "timing": timing, "command": args.command}
        log.info("%s: %s", name, json.dumps(metrics))
    return out


def run_ingest(args: argparse.Namespace, embedder: object) -> dict:
    """Throughput per format, and embedding of sample chunks apart."""
    import torch

    torch.set_num_threads(args.threads)
    pages = rag_ingest.pages_of(rag_ingest.source_paragraphs(Path(args.data_dir)))
    per_doc = args.ingest_pages
    documents = [pages[i * per_doc:(i + 1) * per_doc] for i in range(args.ingest_docs)]
    documents = [d for d in documents if d]
    tokenizer = embedder.tokenizer  # type: ignore[attr-defined]
    formats: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-rag-") as folder:
        for kind in rag_ingest.WRITERS:
            reason = rag_ingest.missing_for(kind)
            formats[kind] = {"skipped": reason} if reason else rag_ingest.measure_format(
                kind, documents, Path(folder), tokenizer)
            log.info("ingest %s: %s", kind, formats[kind])
    formats["hwp"] = {"skipped": "no HWP 5.0 file to build or redistribute (no library writes HWP 5.0)"}
    chunks = rag_ingest.sample_chunks(documents, tokenizer, args.embed_chunks)
    kept, embedder.max_length = embedder.max_length, 1024  # type: ignore[attr-defined]  # whole 800-token chunks
    started = time.perf_counter()
    embedder.encode(chunks, batch_size=4)  # type: ignore[attr-defined]
    seconds = time.perf_counter() - started
    embedder.max_length = kept  # type: ignore[attr-defined]
    tokens = sum(len(ids) for ids in tokenizer(chunks, add_special_tokens=False).input_ids)
    return {"page_chars": rag_ingest.PAGE_CHARS, "documents_per_format": len(documents),
            "pages_per_document": per_doc, "chunking": "auto (800 tokens, 400 overlap)", "formats": formats,
            "embedding": {"chunks": len(chunks), "chunk_chars": sum(map(len, chunks)), "tokens": tokens,
                          "seconds": round(seconds, 1), "chunk_chars_per_s": round(sum(map(len, chunks)) / seconds),
                          "tokens_per_s": round(tokens / seconds), "max_length": 1024}}


def run_qa(args: argparse.Namespace, embedder: object, fingerprint: str) -> dict:
    """KorQuAD EM / F1 with the hybrid's top passages in the prompt and without."""
    from serving.demo_model import demo_adapter_dir, prepare_demo_model

    task = make_task(args, "korquad", args.qa_limit)
    doc_vectors, _ = vectors_of(args, embedder, fingerprint, task.documents)
    query_vectors, _ = vectors_of(args, embedder, fingerprint, task.queries)
    _, _, hybrid = rag_retrieval.retrieve(task, doc_vectors, query_vectors,
                                          rag_retrieval.cosine_reranker(doc_vectors, query_vectors), 0)
    top = [[h.index for h in hits[:args.qa_sources]] for hits in hybrid]
    arms = {
        "without_context": list(task.queries),
        "with_context": [rag_qa.grounded_message(q, [(task.titles[i], task.documents[i]) for i in ids])
                         for q, ids in zip(task.queries, top, strict=True)],
    }
    adapter = None if args.adapter == "none" else Path(args.adapter) if args.adapter else demo_adapter_dir()
    cache = Path(args.cache_dir) / "bench-rag" / "qa_replies.jsonl"
    cache.parent.mkdir(parents=True, exist_ok=True)
    replies, seconds, longest = rag_qa.answer_questions(prepare_demo_model(progress=False), adapter, arms,
                                                        args.qa_max_tokens, args.threads, args.qa_batch, cache,
                                                        args.qa_cached_only)
    answered = [i for i in range(len(task.queries)) if all(replies[arm][i] is not None for arm in replies)]
    out: dict = {"questions": len(answered), "questions_asked": len(task.queries), "sources": args.qa_sources,
                 "adapter": str(adapter),
                 "max_tokens": args.qa_max_tokens, "longest_prompt_tokens": longest,
                 "gold_in_sources": round(sum(bool(task.relevant[i] & set(top[i])) for i in answered)
                                         / max(len(answered), 1), 4),
                 "arms": {}, "examples": []}
    for arm, texts in replies.items():
        scored = [(rag_qa.strip_citations(texts[i] or ""), task.answers[i]) for i in answered]
        rows = [{"em": rag_qa.exact_match(t, a), "f1": rag_qa.char_f1(t, a), "contains": rag_qa.contains_answer(t, a)}
                for t, a in scored]
        out["arms"][arm] = {**rag_qa.summarise(rows), "seconds": seconds[arm]}
        log.info("qa %s: %s", arm, out["arms"][arm])
    out["examples"] = [{"question": task.queries[i], "answers": task.answers[i],
                        **{arm: replies[arm][i] for arm in replies}} for i in answered[:5]]
    return out


def _same_data(old: dict, new: dict) -> bool:
    """Whether two retrieval runs asked the same questions of the same model (their sets may be merged)."""
    keys = ("data_dir", "limit", "full", "seed", "embed_model", "embed_max_length", "rerank_model", "rerank_depth")
    return all(old.get(k) == new.get(k) for k in keys)


def main(argv: list[str] | None = None) -> None:
    """Command line; writes (merges into) the results JSON."""
    from nexus_k.core.paths import cache_dir

    parser = argparse.ArgumentParser(prog="python -m bench.rag", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir",
                        default=os.environ.get("NEXUS_K_SHARED_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated: retrieval, ingest, qa")
    parser.add_argument("--datasets", default="korquad,boolq", help="retrieval sets: korquad, boolq")
    parser.add_argument("--limit", type=int, default=300, help="sampled questions per retrieval set")
    parser.add_argument("--full", action="store_true", help="every question of both sets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embed-model", default=None, help="embedding model folder (default: bundled, merged)")
    parser.add_argument("--embed-max-length", type=int, default=512, help="tokens kept per text when embedding")
    parser.add_argument("--batch-size", type=int, default=16, help="texts per embedding batch")
    parser.add_argument("--rerank-model", default=None, help="cross-encoder folder for the rerank row")
    parser.add_argument("--rerank-depth", type=int, default=20, help="hybrid hits reranked")
    parser.add_argument("--ingest-docs", type=int, default=3, help="documents per format")
    parser.add_argument("--ingest-pages", type=int, default=20, help="pages per document")
    parser.add_argument("--embed-chunks", type=int, default=12, help="chunks embedded for the embedding speed")
    parser.add_argument("--qa-limit", type=int, default=100,
                        help="KorQuAD questions answered (seeded sample; the docs' table: 200)")
    parser.add_argument("--qa-sources", type=int, default=3, help="retrieved passages put into the prompt")
    parser.add_argument("--qa-max-tokens", type=int, default=64)
    parser.add_argument("--qa-batch", type=int, default=8, help="sequences the engine runs at once")
    parser.add_argument("--adapter", default=None,
                        help="LoRA adapter folder for the QA model (default: the bundled ko_chat; 'none': the base)")
    parser.add_argument("--qa-cached-only", action="store_true",
                        help="score only the questions whose replies are cached for both prompts (generate none)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", default=None, help="vector cache root (default: the nexus-k cache dir)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS)) + sorted(set(args.datasets.split(",")) - {"korquad", "boolq"})
    if unknown:
        parser.error(f"unknown part or data set: {', '.join(unknown)}")
    args.cache_dir = args.cache_dir or str(cache_dir())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("fontTools").setLevel(logging.WARNING)  # fpdf2's font subsetting logs every table
    import torch

    torch.set_num_threads(args.threads)
    out = args.out or REPO / "bench" / "results" / ("rag_full.json" if args.full else "rag.json")
    document = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {}
    embedder, fingerprint = load_embedder(args)
    runners = {"retrieval": lambda: run_retrieval(args, embedder, fingerprint),
               "ingest": lambda: run_ingest(args, embedder), "qa": lambda: run_qa(args, embedder, fingerprint)}
    args.command = "python -m bench.rag " + " ".join(argv if argv is not None else sys.argv[1:])
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "cache_dir", "command")}
    for part in parts:
        started = time.time()
        result = runners[part]()
        result.update(command=args.command, settings=settings, wall_seconds=round(time.time() - started, 1),
                      date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                      machine={"python": platform.python_version(), "cpus": os.cpu_count(),
                               "load": [round(x, 2) for x in os.getloadavg()]})
        previous = document.get(part, {})
        if part == "retrieval" and _same_data(previous.get("settings", {}), settings):
            result["sets"] = {**previous.get("sets", {}), **result["sets"]}  # one data set per run still one table
        document[part] = result
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        log.info("%s done in %.0f s; wrote %s", part, result["wall_seconds"], out)


if __name__ == "__main__":
    main()
