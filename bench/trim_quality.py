"""Held-out Korean perplexity of the served (vocabulary-trimmed) demo model against the untrimmed bf16 one,
and what byte fallback does to text outside the kept vocabulary.

    flock /tmp/nexus-heavy.lock python -m bench.trim_quality            # about 5-10 minutes on 2 cores

Held-out text: the NSMC-style test reviews (their texts are left out of the kept-vocabulary recipe) and
KoBEST test passages (the recipe reads the train splits). Both models in bfloat16, the log-softmax in float32;
each text scored on its own (``<bos>`` + text). The tokenisations differ where a text uses a token the trim
dropped, so the fair unit is per character: ``ppl_per_char = exp(total nats / characters)``; per token
perplexity is given too, and the same numbers on the texts every token of which was kept.
Writes bench/results/trim_quality.json.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

from tokenizer.sources import SourceOptions, iter_source

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DATA = REPO.parent / "shared" / "data"
# Text the kept vocabulary was not built for: it must round-trip through byte fallback.
OUT_OF_VOCABULARY = {
    "rare_hanja": "鬱陵島 饕餮 齟齬 蠶食 麒麟 魑魅魍魎 躊躇 囹圄",
    "emoji": "오늘 기분 😀🥹🫠🧑‍🚀🏳️‍🌈 최고예요 🦜🪿",
    "thai": "สวัสดีครับ ยินดีที่ได้รู้จัก ภาษาไทยเป็นภาษาที่สวยงาม",
    "japanese": "東京の天気は晴れです。明日は雨が降るでしょう。",
    "math_symbols": "∮ E·dA = Q/ε₀, ∀x∈ℝ: x² ≥ 0, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
}


def held_out(data: Path, chars: int) -> dict[str, list[str]]:
    """Up to ``chars`` characters of each held-out source, in file order."""
    sources = {"nsmc_test": [(data / "nsmc" / "nsmc_style_test_10k.tsv", "document")],
               "kobest_test": [(data / "kobest" / "BoolQ" / "test.tsv", "Text"),
                               (data / "kobest" / "HellaSwag" / "test.tsv", "context"),
                               (data / "kobest" / "COPA" / "test.tsv", "sentence")]}
    out = {}
    for name, files in sources.items():
        texts, total = [], 0
        for path, column in files:
            for text in iter_source(path, SourceOptions(text_field=column)):
                if total >= chars:
                    break
                texts.append(text)
                total += len(text)
        out[name] = texts
    return out


def score(model, tokenizer, texts: list[str], batch: int = 8, max_tokens: int = 512) -> list[tuple[float, int]]:
    """(negative log-likelihood in nats, tokens predicted) of each text after ``<bos>``."""
    import torch

    results = []
    for start in range(0, len(texts), batch):
        rows = [[tokenizer.bos_token_id, *tokenizer.encode(t, add_special_tokens=False)][:max_tokens]
                for t in texts[start : start + batch]]
        width = max(map(len, rows))
        ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        valid = mask[:, 1:].bool()
        for row, keep in zip(logprobs, valid, strict=True):
            results.append((float(-row[keep].sum()), int(keep.sum())))
    return results


def summarise(texts: list[str], scores: list[tuple[float, int]], which: list[int]) -> dict:
    """Perplexity per character and per token over the texts at indices ``which``."""
    nats = sum(scores[i][0] for i in which)
    tokens = sum(scores[i][1] for i in which)
    chars = sum(len(texts[i]) for i in which)
    return {"texts": len(which), "chars": chars, "tokens": tokens, "nats": round(nats, 3),
            "ppl_per_char": round(math.exp(nats / chars), 5), "bits_per_char": round(nats / chars / math.log(2), 5),
            "ppl_per_token": round(math.exp(nats / tokens), 4), "tokens_per_char": round(tokens / chars, 4)}


def byte_fallback(full_tok, trimmed_tok) -> dict:
    """Tokens per character before and after the trim, and exact round trips, on out-of-vocabulary text."""
    rows = {}
    for name, text in OUT_OF_VOCABULARY.items():
        before = full_tok.encode(text, add_special_tokens=False)
        after = trimmed_tok.encode(text, add_special_tokens=False)
        rows[name] = {"text": text, "chars": len(text), "tokens_before": len(before), "tokens_after": len(after),
                      "tokens_per_char_before": round(len(before) / len(text), 3),
                      "tokens_per_char_after": round(len(after) / len(text), 3),
                      "roundtrip_after": trimmed_tok.decode(after) == text,
                      "unk_after": trimmed_tok.unk_token_id in after}
    return rows


def main() -> None:
    """Score both demo folders on the held-out text and write bench/results/trim_quality.json."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from serving.demo_model import prepare_demo_model, read_conversion_record

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--chars", type=int, default=12_000, help="Characters of each held-out source.")
    parser.add_argument("--out", type=Path, default=RESULTS / "trim_quality.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    started = time.perf_counter()
    folders = {"untrimmed": prepare_demo_model(progress=False, full_vocab=True),
               "trimmed": prepare_demo_model(progress=False)}
    tokenizers = {name: AutoTokenizer.from_pretrained(folder) for name, folder in folders.items()}
    sources = held_out(args.data_dir, args.chars)
    texts = [t for source in sources.values() for t in source]
    record = read_conversion_record(folders["trimmed"])
    kept = set(json.loads((folders["trimmed"] / "nexus_k_trim.json").read_text(encoding="utf-8"))["kept_ids"])
    fully_kept = [i for i, t in enumerate(texts) if set(tokenizers["untrimmed"].encode(t, add_special_tokens=False))
                  <= kept]
    result: dict = {"command": "python -m bench.trim_quality", "machine": {"platform": platform.platform(),
                                                                           "threads": 2},
                    "folders": {k: str(v) for k, v in folders.items()}, "dtype": "bfloat16",
                    "vocabulary": {k: v for k, v in (record.vocabulary or {}).items() if k != "recipe"},
                    "held_out": {name: {"texts": len(v), "chars": sum(map(len, v))} for name, v in sources.items()},
                    "fully_kept_texts": len(fully_kept), "models": {}}
    for name, folder in folders.items():
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
        scores = score(model, tokenizers[name], texts)
        offsets, by_source = 0, {}
        for source, items in sources.items():
            by_source[source] = summarise(texts, scores, list(range(offsets, offsets + len(items))))
            offsets += len(items)
        result["models"][name] = {"all": summarise(texts, scores, list(range(len(texts)))),
                                  "fully_kept": summarise(texts, scores, fully_kept), "by_source": by_source}
        del model
    full, trimmed = result["models"]["untrimmed"], result["models"]["trimmed"]
    result["ppl_per_char_ratio"] = round(trimmed["all"]["ppl_per_char"] / full["all"]["ppl_per_char"], 5)
    result["ppl_per_char_ratio_fully_kept"] = round(
        trimmed["fully_kept"]["ppl_per_char"] / full["fully_kept"]["ppl_per_char"], 5)
    result["target"] = {"ppl_within": 0.01, "met": abs(result["ppl_per_char_ratio"] - 1) <= 0.01}
    result["byte_fallback"] = byte_fallback(tokenizers["untrimmed"], tokenizers["trimmed"])
    result["seconds"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("ppl_per_char_ratio", "ppl_per_char_ratio_fully_kept", "target")}))


if __name__ == "__main__":
    main()
