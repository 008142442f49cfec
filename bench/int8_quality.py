"""Held-out Korean perplexity of the demo model served by vLLM in bfloat16 against an int8 (W8A8) copy of it,
both scored by vLLM itself (``prompt_logprobs``), so the int8 side includes what vLLM's CPU kernels do with
int8 activations.

    flock /tmp/nexus-heavy.lock python -m bench.int8_quality [--int8 DIR]   # about 5 minutes on 2 cores

The int8 copy is made with ``nexus-k model int8`` (compressed-tensors W8A8: int8 weights with a scale per output
channel, int8 activations scaled per token at run time) unless ``--int8`` names one. The held-out text is
bench/trim_quality.py's (NSMC-style test reviews, KoBEST test passages). Writes bench/results/int8_quality.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from bench.trim_quality import DATA, RESULTS, held_out, summarise


def vllm_scores(folder: Path, texts: list[str], max_tokens: int = 512) -> list[tuple[float, int]]:
    """(negative log-likelihood in nats, tokens predicted) of each text after ``<bos>``, from vLLM."""
    import os

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # else vLLM's CPU build reserves 92% of the memory
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=str(folder), max_model_len=max_tokens + 8, enforce_eager=True, max_num_seqs=8)
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
    del llm
    return results


def main() -> None:
    """Score both folders in separate processes (vLLM keeps state per process) and write the results."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from serving.demo_model import prepare_demo_model
    from serving.quantize import quantize_int8

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--chars", type=int, default=12_000, help="Characters of each held-out source.")
    parser.add_argument("--int8", type=Path, default=None, help="an int8 folder (default: made from the demo)")
    parser.add_argument("--out", type=Path, default=RESULTS / "int8_quality.json")
    args = parser.parse_args()
    started = time.time()
    bf16 = prepare_demo_model(progress=False)
    int8 = args.int8 or quantize_int8(bf16, Path(tempfile.mkdtemp(prefix="nexus-k-int8-")) / "int8")
    sources = held_out(args.data_dir, args.chars)
    texts = [t for name in sources for t in sources[name]]
    context = mp.get_context("spawn")
    models = {}
    for name, folder in (("bf16", bf16), ("int8", int8)):
        with ProcessPoolExecutor(1, mp_context=context) as pool:  # vLLM starts processes of its own
            scores = pool.submit(vllm_scores, Path(folder), texts).result()
        models[name] = {"folder": str(folder), "all": summarise(texts, scores, list(range(len(texts))))}
        print(name, json.dumps(models[name]["all"]), flush=True)
    ratio = models["int8"]["all"]["ppl_per_char"] / models["bf16"]["all"]["ppl_per_char"]
    weights = {name: round(sum(f.stat().st_size for f in Path(m["folder"]).glob("*.safetensors")) / 2**20, 1)
               for name, m in models.items()}
    report = {"command": "python -m bench.int8_quality", "machine": {"platform": platform.platform()},
              "held_out": {name: len(t) for name, t in sources.items()}, "models": models,
              "weights_mib": weights, "ppl_per_char_ratio": round(ratio, 5),
              "wall_seconds": round(time.time() - started, 1),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({"ppl_per_char_ratio": report["ppl_per_char_ratio"], "weights_mib": weights}))


if __name__ == "__main__":
    main()
