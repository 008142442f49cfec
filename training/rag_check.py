"""Does a demo adapter answer from its sources and still chat? Checks on held-out data, adapters side by side.

    python -m training.rag_check --adapters serving/adapters/ko_chat,serving/adapters/ko_rag --out check.json

For each adapter (on the demo base, greedy decoding): the held-out grounded records of ``training.rag_data``
(BoolQ verdict right, KoBBQ span right, the cited ``[n]`` the gold passage's, negatives answered "not in the
sources"), the perplexity of ko_chat's held-out chat pairs (assistant tokens only, as ``bench.demo`` scores
them) and replies to a few Korean chat prompts. The end-to-end KorQuAD measurement is ``bench.rag``'s.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

from training.chat_data import Conversation, encode_conversation
from training.demo_data import DemoDataConfig, build_demo_data
from training.rag_data import NO_ANSWER, RagDataConfig, build_rag_data

log = logging.getLogger(__name__)

CHAT_PROMPTS = ["안녕하세요! 오늘 기분이 좀 우울해요.", "주말에 뭐 하면 좋을까?", "회사 면접이 내일인데 너무 떨려요.",
                "공부하기 싫은데 어떻게 하면 집중할 수 있을까요?", "요즘 잠이 안 와요."]
"""Chat turns without sources (the first four are ``bench.demo``'s)."""
_CITATION = re.compile(r"\[(\d{1,2})\]")
_NUMBER = re.compile(r"\d+")


def score_grounded(record: dict, reply: str) -> dict[str, Any]:
    """Whether ``reply`` gets the held-out ``record`` right: answer, cited number, abstention."""
    gold = record["messages"][1]["content"]
    cited = _CITATION.findall(reply)
    abstained = "자료에는" in reply and "없" in reply
    if record["kind"] == "negative":
        return {"kind": "negative", "correct": abstained, "cited_right": not cited, "abstained": abstained}
    number = _CITATION.findall(gold)[-1]
    body = _CITATION.sub("", reply).strip().rstrip(".").strip()
    if record["kind"] == "boolq":
        correct = body.split(".", 1)[0].strip() == gold.split(".", 1)[0]
    elif record["kind"] == "office":  # the numbers copied from the regulation, however the sentence is worded
        correct = set(_NUMBER.findall(gold.rsplit(" [", 1)[0])) <= set(_NUMBER.findall(body))
    else:
        correct = body.removesuffix("입니다").strip() == gold.rsplit(" [", 1)[0]
    return {"kind": record["kind"], "correct": correct, "cited_right": number in cited, "abstained": abstained}


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per kind: count and percent correct, cited right and abstained."""
    out = {}
    for kind in sorted({r["kind"] for r in rows}):
        mine = [r for r in rows if r["kind"] == kind]
        out[kind] = {"n": len(mine), **{key: round(100 * sum(r[key] for r in mine) / len(mine), 1)
                                        for key in ("correct", "cited_right", "abstained")}}
    return out


def _reply(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int) -> str:
    import torch

    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def chat_perplexity(model: Any, tokenizer: Any, conversations: list[list[dict[str, str]]]) -> float:
    """Perplexity on the assistant tokens of ``conversations`` (one at a time: no padding)."""
    import torch

    from nexus_k.core.chat_templates import resolve_chat_template

    template = resolve_chat_template(tokenizer)
    nll, count = 0.0, 0
    for number, messages in enumerate(conversations, start=1):
        item = encode_conversation(tokenizer, template, Conversation(number, messages))
        ids, labels = torch.tensor([item.input_ids]), torch.tensor([item.labels])
        with torch.inference_mode():
            logits = model(input_ids=ids).logits[:, :-1].float()
        target = labels[:, 1:]
        losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, ignore_index=-100, reduction="sum")
        nll += float(losses)
        count += int((target != -100).sum())
    return round(math.exp(nll / count), 2)


def check_adapter(base: str, adapter: str | None, grounded: list[dict], chat: list[list[dict[str, str]]],
                  max_new_tokens: int) -> dict[str, Any]:
    """All checks of one adapter (None: the base alone)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter:
        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    replies = [_reply(model, tokenizer, r["messages"][0]["content"], max_new_tokens) for r in grounded]
    rows = [score_grounded(r, reply) for r, reply in zip(grounded, replies, strict=True)]
    return {"adapter": adapter, "grounded": summarise(rows),
            "chat_heldout_perplexity": chat_perplexity(model, tokenizer, chat),
            "chat_replies": {p: _reply(model, tokenizer, p, max_new_tokens) for p in CHAT_PROMPTS},
            "grounded_replies": [{"question": r["messages"][0]["content"].rsplit("질문: ", 1)[1],
                                  "kind": r["kind"], "gold": r["messages"][1]["content"], "reply": reply}
                                 for r, reply in list(zip(grounded, replies, strict=True))[:8]]}


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m training.rag_check --adapters A,B [--limit 60] --out FILE``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=None, help="base model folder (default: the converted demo model)")
    parser.add_argument("--adapters", required=True, help="comma-separated adapter folders; 'none' for the base")
    parser.add_argument("--data-dir", default=str(Path("..") / "shared" / "data"))
    parser.add_argument("--limit", type=int, default=60, help="held-out grounded records answered")
    parser.add_argument("--chat-limit", type=int, default=160, help="ko_chat held-out pairs scored")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    from nexus_k.core.paths import cache_dir

    torch.set_num_threads(args.threads)
    base = args.base or str(cache_dir() / "models" / "gemma-3-270m")
    _, heldout, _ = build_rag_data(RagDataConfig(data_dir=args.data_dir))
    _, chat_held, _ = build_demo_data(DemoDataConfig(data_dir=args.data_dir, max_train=0,
                                                     max_heldout=args.chat_limit))
    chat = [r["messages"] for r in chat_held]
    results = {"no_answer": NO_ANSWER, "adapters": {}}
    for adapter in args.adapters.split(","):
        name = Path(adapter).name
        log.info("checking %s", name)
        results["adapters"][name] = check_adapter(base, None if adapter == "none" else adapter,
                                                  heldout[:args.limit], chat, args.max_new_tokens)
        log.info("%s: %s", name, json.dumps(results["adapters"][name]["grounded"]))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
