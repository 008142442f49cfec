"""Does the Korean chat adapter help? Held-out perplexity (base vs tuned) and sample conversations.

    python -m bench.demo [--data-dir ../shared/data] [--max-new-tokens 48]

Converts the demo base model first if needed (its conversion time is read from the conversion record),
scores the adapter's held-out split (rebuilt from the committed data recipe) on assistant tokens only,
with the adapter switched off (base) and on (tuned) in one process, and writes greedy replies of both to
a few Korean prompts. Output: bench/results/demo.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "demo.json"
PROMPTS = [
    "안녕하세요! 오늘 기분이 좀 우울해요.",
    "여자친구랑 헤어졌어. 너무 힘들다.",
    "주말에 뭐 하면 좋을까?",
    "다이어트 하는데 자꾸 야식이 생각나요.",
    "회사 면접이 내일인데 너무 떨려요.",
    "공부하기 싫은데 어떻게 하면 집중할 수 있을까요?",
]
log = logging.getLogger("bench.demo")


def heldout_conversations(recipe_file: Path | None, data_dir: str) -> list[list[dict[str, str]]]:
    """The adapter's held-out conversations, rebuilt from its data recipe (default recipe if None)."""
    from training.demo_data import DemoDataConfig, build_demo_data

    config = DemoDataConfig(data_dir=data_dir)
    if recipe_file is not None:
        recipe = json.loads(recipe_file.read_text(encoding="utf-8"))
        # training.rag_data's recipe (chat plus grounded QA) names its chat split as chat_config.
        config = DemoDataConfig(**{**recipe.get("chat_config", recipe["config"]), "data_dir": data_dir})
    _, heldout, _ = build_demo_data(config)
    return [record["messages"] for record in heldout]


def score(model, batches) -> tuple[float, int]:
    """Summed negative log-likelihood (nats) and number of labelled tokens over the batches."""
    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    with torch.inference_mode():
        for input_ids, labels, mask in batches:
            logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1].float()
            target = labels[:, 1:]
            total += F.cross_entropy(logits.transpose(1, 2), target, ignore_index=-100, reduction="sum").item()
            count += int((target != -100).sum())
    return total, count


def make_batches(tokenizer, conversations, batch_size: int):
    """Right-padded (input_ids, labels, attention_mask) batches; labels on assistant tokens only."""
    import torch

    from training.chat_data import Conversation, encode_conversation

    template = tokenizer.chat_template
    encoded = [encode_conversation(tokenizer, template, Conversation(i, m)) for i, m in enumerate(conversations)]
    encoded.sort(key=lambda e: len(e.input_ids))
    batches = []
    for start in range(0, len(encoded), batch_size):
        group = encoded[start : start + batch_size]
        width = max(len(e.input_ids) for e in group)
        ids = torch.full((len(group), width), tokenizer.pad_token_id)
        labels = torch.full((len(group), width), -100)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for row, item in enumerate(group):
            n = len(item.input_ids)
            ids[row, :n] = torch.tensor(item.input_ids)
            labels[row, :n] = torch.tensor(item.labels)
            mask[row, :n] = 1
        batches.append((ids, labels, mask))
    return batches


def reply(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """Greedy reply to one user turn through the chat template."""
    import torch

    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def evaluate(model, tokenizer, batches, max_new_tokens: int) -> tuple[dict, list[dict]]:
    """Perplexity on the held-out batches and greedy replies to the sample prompts."""
    started = time.perf_counter()
    nll, tokens = score(model, batches)
    perplexity = {
        "assistant_tokens": tokens,
        "nll_per_token": round(nll / tokens, 4),
        "perplexity": round(math.exp(nll / tokens), 2),
        "seconds": round(time.perf_counter() - started, 1),
    }
    samples = [{"prompt": p, "reply": reply(model, tokenizer, p, max_new_tokens)} for p in PROMPTS]
    return perplexity, samples


def main() -> None:
    """Run the comparison and write (or update) bench/results/demo.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", default=os.environ.get("NEXUS_K_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    )
    parser.add_argument("--models", default="base,tuned", help="which to run: base, tuned or both")
    parser.add_argument("--recipe", type=Path, help="data recipe (default: the committed adapter's)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from serving.demo_model import DEMO_MODEL_NAME, demo_adapter_dir, prepare_demo_model, read_conversion_record

    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    base_dir = prepare_demo_model()
    adapter = demo_adapter_dir()
    if "tuned" in wanted and adapter is None:
        raise SystemExit("no committed adapter in serving/adapters/ko_chat; train it first (docs/demo.md)")
    recipe = args.recipe or (adapter / "data_recipe.json" if adapter else None)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.bfloat16).eval()
    conversations = heldout_conversations(recipe, args.data_dir)
    batches = make_batches(tokenizer, conversations, args.batch_size)

    # Runs of base and tuned may be split (CPU time is scarce); results merge when the held-out set matches.
    results: dict = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {}
    if results.get("heldout_conversations") != len(conversations):
        results = {}
    results.update({"model": DEMO_MODEL_NAME, "heldout_conversations": len(conversations)})
    results.setdefault("perplexity", {})
    results.setdefault("samples", {"decoding": f"greedy, at most {args.max_new_tokens} new tokens"})
    for name in wanted:
        if name == "tuned":
            model = PeftModel.from_pretrained(model, adapter).eval()
        perplexity, samples = evaluate(model, tokenizer, batches, args.max_new_tokens)
        results["perplexity"][name] = perplexity
        results["samples"][name] = samples
        log.info(
            "%s: perplexity %.2f on %d assistant tokens", name, perplexity["perplexity"], perplexity["assistant_tokens"]
        )
    ppl = results["perplexity"]
    if {"base", "tuned"} <= set(ppl):
        results["perplexity_ratio_tuned_over_base"] = round(ppl["tuned"]["perplexity"] / ppl["base"]["perplexity"], 3)
    record = read_conversion_record(base_dir)
    results["conversion"] = asdict(record) if record else None
    results["machine"] = {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
