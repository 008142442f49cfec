"""Local transformers model: batched log-likelihoods that compute each shared context once.

Requests are grouped by context. A batch of contexts (left-padded) runs once with the KV cache on;
the cache rows are then repeated once per choice and all continuations run in one more forward pass.
Token splitting follows lm-evaluation-harness, so scores match its HF backend item for item.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from evals.backends.base import (
    LM,
    GenerationRequest,
    Loglikelihood,
    LoglikelihoodRequest,
    cut_at_stop,
    empty_context_ids,
    encode_pair,
    generation_prompt_ids,
)
from evals.progress import progress_bar
from nexus_k.core.errors import UserError

log = logging.getLogger(__name__)

TAIL_CHUNK_FILL = 0.8
"""A continuation joins the current tail chunk while its length is at least this share of the chunk's longest."""


def _shallow_cache_copy(cache):
    """A KV cache object whose layers point at the same tensors, so row selection leaves ``cache`` intact."""
    import copy

    clone = copy.copy(cache)
    clone.layers = [copy.copy(layer) for layer in cache.layers]
    return clone


def load_hf_model(model: str, dtype: str = "auto", device: str = "cpu", trust_remote_code: bool = False,
                  adapter: str | None = None):
    """Tokenizer and causal LM from a local folder or hub name, in eval mode; with ``adapter`` (a PEFT LoRA
    folder, e.g. from ``nexus-k finetune``) merged into the weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype: Any = "auto" if dtype == "auto" else getattr(torch, dtype, None)
    if torch_dtype is None:
        raise UserError(f"unknown dtype {dtype!r} (auto, float32, bfloat16, float16)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
        lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise UserError(f"cannot load model {model!r}: {str(err).splitlines()[0]}") from None
    if adapter is not None:
        lm = merge_adapter(lm, adapter)
    return tokenizer, lm.to(device).eval()


def merge_adapter(lm: Any, adapter: str) -> Any:
    """``lm`` with the LoRA adapter at ``adapter`` merged in (scores then cost what the base's do)."""
    from peft import PeftModel

    if not (Path(adapter) / "adapter_config.json").is_file():
        raise UserError(f"adapter {adapter!r}: no adapter_config.json there (a PEFT LoRA folder is expected)")
    try:
        return PeftModel.from_pretrained(lm, adapter).merge_and_unload()
    except (ValueError, RuntimeError, KeyError) as err:
        raise UserError(f"adapter {adapter!r} does not fit the model: {str(err).splitlines()[0]}") from None


class HFBackend(LM):
    """A transformers causal LM in this process."""

    name = "hf"

    def __init__(self, model: str, *, dtype: str = "auto", device: str = "cpu", batch_size: int = 16,
                 max_batch_tokens: int = 16384, max_length: int | None = None,
                 trust_remote_code: bool = False, adapter: str | None = None) -> None:
        self.model_name = model
        self.adapter = adapter
        self.device = device
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.tokenizer, self.model = load_hf_model(model, dtype, device, trust_remote_code, adapter)
        config_len = getattr(self.model.config, "max_position_embeddings", None) or 2048
        self.max_length = max_length or config_len
        tok = self.tokenizer
        self.pad_id = next(t for t in (tok.pad_token_id, tok.eos_token_id, 0) if t is not None)

    def describe(self) -> dict[str, Any]:
        """Backend, model path, dtype, parameter count."""
        return {
            "backend": self.name,
            "model": self.model_name,
            "adapter": self.adapter,
            "dtype": str(self.model.dtype).replace("torch.", ""),
            "device": self.device,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "batch_size": self.batch_size,
        }

    # --- log-likelihood ------------------------------------------------------------------------------

    def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[Loglikelihood]:
        """Sum of continuation log-probabilities per request, shared contexts computed once."""
        groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
        for index, request in enumerate(requests):
            if request.context:
                context_ids, cont_ids = encode_pair(self.tokenizer, request.context, request.continuation)
            else:
                context_ids, cont_ids = empty_context_ids(self.tokenizer), self.tokenizer.encode(
                    request.continuation)
            if not cont_ids:
                raise UserError(f"continuation {request.continuation!r} encodes to no tokens")
            groups.setdefault(tuple(context_ids), []).append((index, cont_ids))
        # Longest context first (memory problems show up at once); neighbours have similar lengths, so the
        # left padding of the context pass stays small. Continuations are re-sorted in the tail pass.
        ordered = sorted(groups.items(), key=lambda kv: (-len(kv[0]), -max(len(c) for _, c in kv[1])))
        results: list[Loglikelihood | None] = [None] * len(requests)
        with progress_bar(len(requests), "log-likelihood") as advance:
            for batch in self._batches(ordered):
                for index, result in self._score_batch(batch):
                    results[index] = result
                advance(sum(len(conts) for _, conts in batch))
        return [r for r in results if r is not None]

    def _batches(self, ordered):
        batch: list = []
        width = 0
        for context, conts in ordered:
            length = len(context) + max(len(c) for _, c in conts)
            width = max(width, length)
            if batch and (len(batch) >= self.batch_size or width * (len(batch) + 1) > self.max_batch_tokens):
                yield batch
                batch, width = [], length
            batch.append((context, conts))
        if batch:
            yield batch

    def _score_batch(self, batch) -> list[tuple[int, Loglikelihood]]:
        import torch

        contexts = []
        for context, conts in batch:
            longest = max(len(c) for _, c in conts)
            # Keep the most recent tokens when context + continuation exceed the model's length.
            keep = max(1, self.max_length - longest)
            contexts.append(list(context)[-keep:])
        width = max(len(c) for c in contexts)
        ids = torch.full((len(contexts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(contexts), width), dtype=torch.long)
        for row, context in enumerate(contexts):
            ids[row, width - len(context):] = torch.tensor(context)
            mask[row, width - len(context):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        dev = self.device
        with torch.inference_mode():
            out = self.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=positions.to(dev),
                             use_cache=True, logits_to_keep=1)
            first = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
            first_best = first.argmax(dim=-1)
            rows = [(g, index, cont) for g, (_, conts) in enumerate(batch) for index, cont in conts]
            scores = {index: (first[g, cont[0]].item(), bool(first_best[g].item() == cont[0]))
                      for g, index, cont in rows}
            tails = [(g, index, cont) for g, index, cont in rows if len(cont) > 1]
            if tails:
                self._score_tails(out.past_key_values, mask, tails, scores)
        return [(index, Loglikelihood(logprob=scores[index][0], is_greedy=scores[index][1], n_tokens=len(cont)))
                for _, index, cont in rows]

    def _score_tails(self, cache, mask, tails, scores) -> None:
        """Continuation tokens after the first, for every choice over the repeated context cache.

        Tails are sorted by length and cut into chunks of similar length (each padded only to its own
        longest), so choices of very different lengths (COPA, HellaSwag) waste little compute on padding.
        """
        tails = sorted(tails, key=lambda tail: -len(tail[2]))
        chunks: list[list] = []
        for tail in tails:
            if chunks and len(tail[2]) - 1 >= TAIL_CHUNK_FILL * (len(chunks[-1][0][2]) - 1):
                chunks[-1].append(tail)
            else:
                chunks.append([tail])
        for number, chunk in enumerate(chunks):
            # The last chunk may consume the context cache; the others work on shallow copies of it
            # (selecting rows builds new tensors, so the shared ones stay intact).
            last = number == len(chunks) - 1
            self._score_tail_chunk(cache if last else _shallow_cache_copy(cache), mask, chunk, scores)

    def _score_tail_chunk(self, cache, mask, tails, scores) -> None:
        import torch

        dev = self.device
        select = torch.tensor([g for g, _, _ in tails])
        cache.batch_select_indices(select.to(dev))
        span = max(len(cont) - 1 for _, _, cont in tails)
        ids = torch.full((len(tails), span), self.pad_id, dtype=torch.long)
        tail_mask = torch.zeros((len(tails), span), dtype=torch.long)
        for row, (_, _, cont) in enumerate(tails):
            ids[row, : len(cont) - 1] = torch.tensor(cont[:-1])
            tail_mask[row, : len(cont) - 1] = 1
        context_mask = mask[select]
        full_mask = torch.cat([context_mask, tail_mask], dim=1)
        positions = context_mask.sum(-1, keepdim=True) + torch.arange(span)[None, :]
        out = self.model(input_ids=ids.to(dev), attention_mask=full_mask.to(dev), position_ids=positions.to(dev),
                         past_key_values=cache, use_cache=True)
        logprobs = torch.log_softmax(out.logits.float(), dim=-1)
        best = logprobs.argmax(dim=-1)
        for row, (_, index, cont) in enumerate(tails):
            targets = torch.tensor(cont[1:], device=logprobs.device)
            n = len(cont) - 1
            total = logprobs[row, torch.arange(n), targets].sum().item()
            greedy = bool((best[row, :n] == targets).all().item())
            first_lp, first_greedy = scores[index]
            scores[index] = (first_lp + total, first_greedy and greedy)

    # --- generation ----------------------------------------------------------------------------------

    def generate_until(self, requests: list[GenerationRequest]) -> list[str]:
        """Greedy (or sampled) answers, batched with left padding, cut at the stop strings."""
        import torch

        encoded = [(i, generation_prompt_ids(self.tokenizer, r)) for i, r in enumerate(requests)]
        encoded.sort(key=lambda item: -len(item[1]))
        outputs: list[str] = [""] * len(requests)
        with progress_bar(len(requests), "generate") as advance:
            for start in range(0, len(encoded), self.batch_size):
                chunk = encoded[start:start + self.batch_size]
                reqs = [requests[i] for i, _ in chunk]
                new_tokens = max(r.max_tokens for r in reqs)
                keep = max(1, self.max_length - new_tokens)
                prompts = [ids[-keep:] for _, ids in chunk]
                width = max(len(p) for p in prompts)
                ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for row, prompt in enumerate(prompts):
                    ids[row, width - len(prompt):] = torch.tensor(prompt)
                    mask[row, width - len(prompt):] = 1
                sample = any(r.temperature > 0 for r in reqs)
                with torch.inference_mode():
                    generated = self.model.generate(
                        input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                        max_new_tokens=new_tokens, do_sample=sample,
                        temperature=max(r.temperature for r in reqs) if sample else None,
                        top_p=None, top_k=None, pad_token_id=self.pad_id,
                    )
                for row, (index, _) in enumerate(chunk):
                    tokens = generated[row, width:width + requests[index].max_tokens].tolist()
                    text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                    outputs[index] = cut_at_stop(text, requests[index].stop)
                advance(len(chunk))
        return outputs
