"""End-to-end part of ``bench.rag``: KorQuAD answers of the demo model (greedy, through the project's HF engine)
with the retrieved passages in the prompt (as the Responses API's ``file_search`` puts them) and without.

Scoring follows KorQuAD 1.0's evaluation: answers are normalised (quotation marks and brackets to spaces,
lower case, ASCII punctuation removed, whitespace collapsed); exact match compares the normalised strings,
F1 counts the characters the prediction shares with the answer (spaces not counted), best over the gold answers.
Written here from that description. Citation markers ([1], [2, 3]) are removed from the reply first.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import string
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

_QUOTES = re.compile("['\"《》〈〉「」『』‘’“”・]")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_CITATION = re.compile(r"\[\d{1,2}(?:\s*,\s*\d{1,2})*\]")


def normalize_answer(text: str) -> str:
    """KorQuAD's normal form of an answer."""
    text = _QUOTES.sub(" ", text).lower().translate(_PUNCTUATION)
    return " ".join(text.split())


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals one normalised gold answer."""
    guess = normalize_answer(prediction)
    return float(any(guess == normalize_answer(a) for a in answers))


def char_f1(prediction: str, answers: Sequence[str]) -> float:
    """Best character-level F1 of the prediction against the gold answers (spaces ignored)."""
    guess = Counter(normalize_answer(prediction).replace(" ", ""))
    best = 0.0
    for answer in answers:
        gold = Counter(normalize_answer(answer).replace(" ", ""))
        same = sum((guess & gold).values())
        if same:
            precision, recall = same / sum(guess.values()), same / sum(gold.values())
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def contains_answer(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when a normalised gold answer occurs in the normalised prediction (a generative model's long reply
    can hold the right span and still score low on EM and F1)."""
    guess = normalize_answer(prediction)
    return float(any(normalize_answer(a) and normalize_answer(a) in guess for a in answers))


def strip_citations(reply: str) -> str:
    """The reply without ``[n]`` markers."""
    return _CITATION.sub("", reply).strip()


def grounded_message(question: str, sources: Sequence[tuple[str, str]]) -> str:
    """The user message ``file_search`` builds: the instruction, numbered sources (filename, text), the question."""
    from serving.handlers.file_search import SOURCES_INTRO

    listing = "\n\n".join(f"[{n}] ({name})\n{text}" for n, (name, text) in enumerate(sources, start=1))
    return f"{SOURCES_INTRO}\n\n{listing}\n\n질문: {question}"


def summarise(rows: Sequence[dict]) -> dict[str, float]:
    """Mean EM, F1 and answer-contained (in percent) of scored rows."""
    count = max(len(rows), 1)
    return {key: round(100 * sum(r[key] for r in rows) / count, 2) for key in ("em", "f1", "contains")}


async def _generate_all(engine: object, prompts: list[list[int]], max_tokens: int, lora: str | None) -> list[str]:
    from serving.engines.base import SamplingSettings

    params = SamplingSettings(max_tokens=max_tokens, temperature=0.0)

    async def one(number: int, ids: list[int]) -> str:
        text = ""
        async for delta in engine.generate(ids, params, f"rag-{number}", lora_name=lora):  # type: ignore[attr-defined]
            text += delta.text
        return text

    return list(await asyncio.gather(*(one(i, ids) for i, ids in enumerate(prompts))))


def answer_questions(model_dir: Path, adapter: Path | None, arms: dict[str, list[str]], max_tokens: int,
                     threads: int, batch: int, cache: Path,
                     cached_only: bool = False) -> tuple[dict[str, list[str | None]], dict[str, float], int]:
    """Greedy replies per arm (arm name -> user messages) from the HF engine with ``adapter`` applied; returns
    the replies, generation seconds per arm (summed over the runs that made them) and the longest prompt in
    tokens. Replies are appended to ``cache`` (JSON lines keyed by model, adapter and prompt) after every
    ``batch`` prompts, so a stopped run resumes where it was. ``cached_only``: generate nothing (a reply not in
    the cache is None)."""
    import torch

    from nexus_k.core.chat_templates import chat_to_ids
    from serving.engines.hf import HFEngine
    from serving.engines.settings import EngineSettings
    from serving.engines.tokenizer import load_tokenizer

    torch.set_num_threads(threads)
    lora = {"adapter": str(adapter)} if adapter is not None else {}
    settings = EngineSettings(model=str(model_dir), engine="hf", dtype="float32", lora=lora, max_num_seqs=batch)
    weights = adapter / "adapter_model.safetensors" if adapter is not None else None
    model_key = f"{model_dir.resolve()}|{sha256_of(weights) if weights and weights.is_file() else adapter}|{max_tokens}"
    known = {}
    if cache.is_file():
        for line in cache.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            known[row["key"]] = (row["reply"], row["seconds"])

    async def run() -> tuple[dict[str, list[str | None]], dict[str, float], int]:
        tokenizer = load_tokenizer(settings)
        engine = None
        replies, seconds, longest = {}, {}, 0
        try:
            for arm, messages in arms.items():
                prompts = [chat_to_ids(tokenizer, [{"role": "user", "content": m}]) for m in messages]
                keys = [hashlib.sha256(f"{model_key}|{p}".encode()).hexdigest() for p in prompts]
                longest = max([longest, *(len(p) for p in prompts)])
                todo = [] if cached_only else [i for i, key in enumerate(keys) if key not in known]
                for start in range(0, len(todo), batch):
                    engine = engine or await HFEngine.create(settings)
                    group = todo[start:start + batch]
                    started = time.perf_counter()
                    texts = await _generate_all(engine, [prompts[i] for i in group], max_tokens,
                                                "adapter" if lora else None)
                    share = (time.perf_counter() - started) / len(group)
                    with cache.open("a", encoding="utf-8") as handle:
                        for i, text in zip(group, texts, strict=True):
                            known[keys[i]] = (text, round(share, 3))
                            handle.write(json.dumps({"key": keys[i], "reply": text, "seconds": round(share, 3)},
                                                    ensure_ascii=False) + "\n")
                seconds[arm] = round(sum(known[key][1] for key in keys if key in known), 1)
                replies[arm] = [known[key][0] if key in known else None for key in keys]
        finally:
            if engine is not None:
                await engine.shutdown()
        return replies, seconds, longest

    return asyncio.run(run())


def sha256_of(path: Path) -> str:
    """SHA256 of a file (the adapter's weights key the reply cache)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
