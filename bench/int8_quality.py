"""Held-out Korean perplexity of the demo model served by vLLM in bfloat16 against an int8 (W8A8) copy of it,
both scored by vLLM itself (``prompt_logprobs``), so the int8 side includes what vLLM's CPU kernels do with
int8 activations.

    flock /tmp/nexus-heavy.lock python -m bench.int8_quality [--int8 DIR]   # about 5 minutes on 2 cores

The int8 copy is the demo's (``serving.demo_model.prepare_demo_int8``, what ``--demo-precision int8`` serves:
``nexus-k model int8``'s defaults) unless ``--int8`` names one. The held-out text is bench/trim_quality.py's
(NSMC-style test reviews, KoBEST test passages). With the bundled chat adapter (rewritten for a smoothed copy
as the server does), both models also answer a few chat prompts greedily; the report counts the replies that
are identical and the tokens they share from the start. Writes bench/results/int8_quality.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from bench.trim_quality import DATA, RESULTS, held_out, summarise
from serving.quantize import RECORD

CHAT_PROMPTS = ["주말에 뭐 하면 좋을까?", "오늘 너무 피곤해요.", "영화 추천해 주세요.", "연차 휴가는 며칠인가요?",
                "민원 접수는 어떻게 하나요?", "김치찌개 끓이는 법 알려줘.", "Please explain what free software means.",
                "Write a short note to a friend."]


def vllm_scores(folder: Path, texts: list[str], max_tokens: int = 512,
                adapter: Path | None = None) -> tuple[list[tuple[float, int]], list[list[int]]]:
    """(negative log-likelihood in nats, tokens predicted) of each text after ``<bos>``, from vLLM; with an
    ``adapter``, also the greedy reply token ids (48 at most) to :data:`CHAT_PROMPTS` with it applied."""
    import os

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # else vLLM's CPU build reserves 92% of the memory
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest

    from serving.quantize import adapter_for_int8

    lora = {"enable_lora": True, "max_lora_rank": 64} if adapter else {}
    llm = LLM(model=str(folder), max_model_len=max_tokens + 8, enforce_eager=True, max_num_seqs=8, **lora)
    tokenizer = llm.get_tokenizer()
    prompts = [TokensPrompt(prompt_token_ids=[tokenizer.bos_token_id,
                                              *tokenizer.encode(t, add_special_tokens=False)][:max_tokens])
               for t in texts]
    outputs = llm.generate(prompts, SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
    results = []
    for prompt, output in zip(prompts, outputs, strict=True):
        ids = prompt["prompt_token_ids"]
        nats = -sum(step[token].logprob for token, step in zip(ids[1:], output.prompt_logprobs[1:], strict=True))
        results.append((nats, len(ids) - 1))
    replies = []
    if adapter:
        served = adapter_for_int8(adapter, folder, Path(tempfile.mkdtemp(prefix="nexus-k-adapters-")))
        chats = [TokensPrompt(prompt_token_ids=tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True, return_dict=False))
                 for p in CHAT_PROMPTS]
        outputs = llm.generate(chats, SamplingParams(max_tokens=48, temperature=0), use_tqdm=False,
                               lora_request=LoRARequest("chat", 1, str(served)))
        replies = [list(o.outputs[0].token_ids) for o in outputs]
    del llm
    return results, replies


def agreement(a: list[list[int]], b: list[list[int]]) -> dict:
    """How many greedy replies are identical, and the mean share of tokens they agree on from the start."""
    def shared(x: list[int], y: list[int]) -> float:
        same = next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y)))
        return same / max(len(x), len(y), 1)

    return {"prompts": len(a), "identical": sum(x == y for x, y in zip(a, b, strict=True)),
            "shared_prefix": round(sum(shared(x, y) for x, y in zip(a, b, strict=True)) / max(len(a), 1), 3)}


def main() -> None:
    """Score both folders in separate processes (vLLM keeps state per process) and write the results."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from serving.demo_model import demo_adapter_dir, prepare_demo_int8, prepare_demo_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--chars", type=int, default=12_000, help="Characters of each held-out source.")
    parser.add_argument("--int8", type=Path, default=None, help="an int8 folder (default: made from the demo)")
    parser.add_argument("--out", type=Path, default=RESULTS / "int8_quality.json")
    args = parser.parse_args()
    started = time.time()
    bf16 = prepare_demo_model(progress=False)
    int8 = args.int8 or prepare_demo_int8(progress=False)
    adapter = demo_adapter_dir()
    sources = held_out(args.data_dir, args.chars)
    texts = [t for name in sources for t in sources[name]]
    context = mp.get_context("spawn")
    models, replies = {}, {}
    for name, folder in (("bf16", bf16), ("int8", int8)):
        with ProcessPoolExecutor(1, mp_context=context) as pool:  # vLLM starts processes of its own
            scores, replies[name] = pool.submit(vllm_scores, Path(folder), texts, 512, adapter).result()
        models[name] = {"folder": str(folder), "all": summarise(texts, scores, list(range(len(texts))))}
        print(name, json.dumps(models[name]["all"]), flush=True)
    ratio = models["int8"]["all"]["ppl_per_char"] / models["bf16"]["all"]["ppl_per_char"]
    weights = {name: round(sum(f.stat().st_size for f in Path(m["folder"]).glob("*.safetensors")) / 2**20, 1)
               for name, m in models.items()}
    report = {"command": "python -m bench.int8_quality", "machine": {"platform": platform.platform()},
              "held_out": {name: len(t) for name, t in sources.items()}, "models": models,
              "weights_mib": weights, "ppl_per_char_ratio": round(ratio, 5),
              "int8_settings": json.loads((Path(int8) / RECORD).read_text(encoding="utf-8")),
              "chat_adapter": {"adapter": str(adapter), **agreement(replies["bf16"], replies["int8"])} if adapter
              else None,
              "wall_seconds": round(time.time() - started, 1),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({"ppl_per_char_ratio": report["ppl_per_char_ratio"], "weights_mib": weights,
                      "chat_adapter": report["chat_adapter"]}))


if __name__ == "__main__":
    main()
