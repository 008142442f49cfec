"""Embedding speed (``python bench/embeddings.py --speed``): input tokens/s through our server (``nexus-k serve
--runner pool``, the transformers pooling engine, the official ``openai`` client asking for base64 as it does
by default) against sentence-transformers' ``SentenceTransformer.encode`` on the same model folder and the same
Korean inputs, batch 64 on both sides, in rounds alternating server / sentence-transformers, and the peak
resident memory (VmHWM) of each process.

Each side runs in its own process (the server as a subprocess; sentence-transformers in a spawned worker that
waits for each round), so one's memory and threads do not count for the other, and only one side works at a
time. Both embed in float32 with the same number of torch threads, the batches of 64 in the same order (so the
padding is the same), after one untimed warm-up batch each. Output: bench/results/embeddings_speed.json.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("bench.embeddings")


def peak_rss_mib(pid: int) -> dict[str, float]:
    """Resident memory now and at its peak (VmRSS, VmHWM), in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mib": fields.get("VmRSS", 0.0), "peak_rss_mib": fields.get("VmHWM", 0.0)}


def korean_inputs(data_dir: Path, count: int, seed: int) -> list[str]:
    """``count`` distinct KorSTS test sentences (both columns), in a seeded order."""
    from training.embed_data import read_sts

    sts = read_sts(data_dir / "kornli_korsts" / "KorSTS" / "sts-test.tsv")
    sentences = sorted(set(sts.first) | set(sts.second))
    random.Random(seed).shuffle(sentences)
    return sentences[:count]


def st_worker(model_dir: str, threads: int, batches: list[list[str]], connection: Any) -> None:
    """sentence-transformers' side: load once, then one timed pass over ``batches`` per request."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(model_dir, device="cpu")
    model.encode(batches[0], batch_size=len(batches[0]))  # warm-up
    connection.send("ready")
    while connection.recv() == "round":
        started = time.perf_counter()
        for batch in batches:
            model.encode(batch, batch_size=len(batch), convert_to_numpy=True)
        connection.send(time.perf_counter() - started)
    connection.close()


def server_round(client: Any, batches: list[list[str]]) -> tuple[float, int]:
    """One timed pass through the server; seconds and the prompt tokens it counted."""
    started = time.perf_counter()
    tokens = 0
    for batch in batches:
        reply = client.embeddings.create(model="embed", input=batch)  # base64 on the wire, numpy decode
        tokens += reply.usage.prompt_tokens
    return time.perf_counter() - started, tokens


def overheads(client: Any, tokenizer: Any, batches: list[list[str]]) -> dict:
    """Where time goes besides the model: tokenising a round's batches, and a whole request (HTTP, JSON,
    auth, audit, base64 both ways) around a near-empty forward pass (64 one-syllable inputs)."""
    started = time.perf_counter()
    for batch in batches:
        tokenizer(batch)
    tokenize = time.perf_counter() - started
    tiny = []
    for _ in range(5):
        started = time.perf_counter()
        client.embeddings.create(model="embed", input=["가"] * len(batches[0]))
        tiny.append(time.perf_counter() - started)
    return {"tokenize_round_s": round(tokenize, 4), "near_empty_request_s_median": round(statistics.median(tiny), 4),
            "near_empty_requests_per_round_s": round(statistics.median(tiny) * len(batches), 4)}


def run_speed(model_dir: Path, data_dir: Path, inputs: int, batch: int, rounds: int, threads: int,
              seed: int) -> dict:
    """Rounds alternating server / sentence-transformers; medians, ratio and peak memory."""
    import openai
    from transformers import AutoTokenizer

    from serving.launcher import start_serve

    texts = korean_inputs(data_dir, inputs, seed)
    batches = [texts[i:i + batch] for i in range(0, len(texts), batch)]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokens = sum(len(ids) for ids in tokenizer(texts).input_ids)
    env = {"OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    os.environ.update(env)
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe()
    with tempfile.TemporaryDirectory(prefix="embed-speed-") as tmp:
        server = start_serve(["--engine", "hf", "--model", str(model_dir), "--runner", "pool",
                              "--served-model-name", "embed", "--no-web-ui"], Path(tmp) / "server.log",
                             env={**env, "NEXUS_K_DATABASE_URL": f"sqlite:///{tmp}/server.db",
                                  "NEXUS_K_DATA_DIR": f"{tmp}/data"}, timeout=900)
        worker = context.Process(target=st_worker, args=(str(model_dir), threads, batches, sender), daemon=True)
        worker.start()
        try:
            client = openai.OpenAI(base_url=server.api, api_key="unused", max_retries=0, timeout=900)
            client.embeddings.create(model="embed", input=batches[0])  # warm-up
            loaded = {"server": peak_rss_mib(server.process.pid)}
            if receiver.recv() != "ready":
                raise RuntimeError("the sentence-transformers worker did not start")
            loaded["sentence_transformers"] = peak_rss_mib(worker.pid)  # type: ignore[arg-type]
            seconds: dict[str, list[float]] = {"server": [], "sentence_transformers": []}
            for turn in range(rounds):
                took, counted = server_round(client, batches)
                if counted != tokens:
                    log.warning("the server counted %d tokens, the tokenizer here %d", counted, tokens)
                seconds["server"].append(took)
                receiver.send("round")
                seconds["sentence_transformers"].append(receiver.recv())
                log.info("round %d: server %.2f s, sentence-transformers %.2f s", turn + 1,
                         seconds["server"][-1], seconds["sentence_transformers"][-1])
            profile = overheads(client, tokenizer, batches)
            memory = {"server": peak_rss_mib(server.process.pid),
                      "sentence_transformers": peak_rss_mib(worker.pid)}  # type: ignore[arg-type]
            receiver.send("stop")
        finally:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
            server.stop()
    sides = {}
    for side, values in seconds.items():
        sides[side] = {"seconds": [round(v, 3) for v in values],
                       "tokens_per_s_median": round(tokens / statistics.median(values), 1),
                       "texts_per_s_median": round(len(texts) / statistics.median(values), 1),
                       "rss_after_load_mib": loaded[side]["rss_mib"], "peak_rss_mib": memory[side]["peak_rss_mib"]}
    ratio = sides["server"]["tokens_per_s_median"] / sides["sentence_transformers"]["tokens_per_s_median"]
    return {"model": str(model_dir), "inputs": len(texts), "batch": batch, "batches_per_round": len(batches),
            "input_tokens_per_round": tokens, "mean_tokens_per_input": round(tokens / len(texts), 1),
            "rounds": rounds, "threads": threads, "sides": sides, "ratio_server_over_st": round(ratio, 3),
            "target_ratio": 1.0, "profile": profile}
