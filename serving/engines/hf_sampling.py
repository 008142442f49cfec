"""Batched next-token selection for the transformers engine.

One call handles every running sequence of a step: logprobs of the raw logits, penalties, min_tokens,
grammar masks, greedy or seeded sampling with temperature / top-k / top-p. Tensor work is batched; only
what is truly per sequence (its random generator, its grammar matcher, its penalty counts) loops in Python.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import xgrammar as xgr

from serving.engines.base import SamplingSettings, TokenLogprob

# Temperatures below this are greedy (the same threshold vLLM uses).
_GREEDY_EPS = 1e-5



def _make_finite(logits: torch.Tensor) -> torch.Tensor:
    """Extreme (legal) penalties or temperatures can overflow: +inf becomes the largest float, NaN impossible."""
    return torch.nan_to_num_(logits, nan=float("-inf"), posinf=torch.finfo(logits.dtype).max)


class SequenceSampler:
    """Sampling state of one sequence: its generator, penalty counts and grammar matcher."""

    def __init__(
        self,
        params: SamplingSettings,
        prompt_ids: list[int],
        vocab_size: int,
        device: torch.device,
        eos_ids: set[int],
        matcher: xgr.GrammarMatcher | None = None,
    ) -> None:
        self.params = params
        self.matcher = matcher
        self.greedy = params.temperature < _GREEDY_EPS
        self.generator: torch.Generator | None = None
        if not self.greedy:
            self.generator = torch.Generator(device=device)
            seed = params.seed if params.seed is not None else random.getrandbits(63)
            self.generator.manual_seed(seed)
        # min_tokens forbids everything that would end the sequence early.
        blocked = set(params.stop_token_ids) | (set() if params.ignore_eos else eos_ids)
        self.min_tokens_blocked = torch.tensor(sorted(blocked), dtype=torch.long, device=device)
        self.num_generated = 0
        self.counts: torch.Tensor | None = None
        """Output-token counts (presence / frequency penalties)."""
        if params.presence_penalty or params.frequency_penalty:
            self.counts = torch.zeros(vocab_size, dtype=torch.float32, device=device)
        self.bias: tuple[torch.Tensor, torch.Tensor] | None = None
        """(token ids, values) of the request's logit bias."""
        if params.logit_bias:
            ids, values = zip(*sorted(params.logit_bias.items()), strict=True)
            self.bias = (torch.tensor(ids, dtype=torch.long, device=device),
                         torch.tensor(values, dtype=torch.float32, device=device))
        self.seen: torch.Tensor | None = None
        """Tokens of prompt and output (repetition penalty)."""
        if params.repetition_penalty != 1.0:
            self.seen = torch.zeros(vocab_size, dtype=torch.bool, device=device)
            self.seen[torch.tensor(prompt_ids, dtype=torch.long, device=device)] = True

    def record(self, token_id: int) -> None:
        """Account for the token the sequence just produced."""
        self.num_generated += 1
        if self.counts is not None:
            self.counts[token_id] += 1
        if self.seen is not None:
            self.seen[token_id] = True
        if self.matcher is not None:
            self.matcher.accept_token(token_id)

    def adjust(self, logits: torch.Tensor) -> None:
        """Apply penalties and min_tokens to this sequence's logits row, in place."""
        p = self.params
        if self.seen is not None:
            penalised = torch.where(logits > 0, logits / p.repetition_penalty, logits * p.repetition_penalty)
            logits.copy_(torch.where(self.seen, penalised, logits))
        if self.counts is not None:
            logits -= p.frequency_penalty * self.counts + p.presence_penalty * (self.counts > 0).float()
        if self.bias is not None:
            logits[self.bias[0]] += self.bias[1].to(logits.dtype)
        if self.num_generated < p.min_tokens and self.min_tokens_blocked.numel():
            logits[self.min_tokens_blocked] = float("-inf")
        _make_finite(logits)


    @property
    def needs_adjust(self) -> bool:
        """Whether :meth:`adjust` would change anything this step."""
        return (
            self.seen is not None
            or self.counts is not None
            or self.bias is not None
            or self.num_generated < self.params.min_tokens
        )


@dataclass
class StepSamples:
    """What a sampling step chose for each row."""

    tokens: list[int]
    logprobs: list[TokenLogprob | None]


def top_logprobs(logprobs: torch.Tensor, chosen: list[int], k: list[int]) -> list[TokenLogprob]:
    """TokenLogprob entries for rows of log-softmaxed ``logprobs`` (one chosen token and k alternatives each)."""
    index = torch.tensor(chosen, dtype=torch.long, device=logprobs.device).unsqueeze(1)
    chosen_lp = logprobs.gather(1, index).squeeze(1).tolist()
    k_max = max(k, default=0)
    top_values: list[list[float]] = [[] for _ in chosen]
    top_ids: list[list[int]] = [[] for _ in chosen]
    if k_max > 0:
        values, ids = logprobs.topk(min(k_max, logprobs.shape[-1]), dim=-1)
        top_values, top_ids = values.tolist(), ids.tolist()
    return [
        TokenLogprob(token_id=t, logprob=lp, top=dict(zip(top_ids[r][: k[r]], top_values[r][: k[r]], strict=True)))
        for r, (t, lp) in enumerate(zip(chosen, chosen_lp, strict=True))
    ]


def _sample_rows(logits: torch.Tensor, samplers: list[SequenceSampler]) -> torch.Tensor:
    """Sample one token per row with each row's own generator (temperature, top-k, top-p)."""
    device = logits.device
    temperature = torch.tensor([s.params.temperature for s in samplers], device=device).unsqueeze(1)
    scaled = _make_finite(logits / temperature)
    top_k = [s.params.top_k for s in samplers]
    top_p = [s.params.top_p for s in samplers]
    vocab = scaled.shape[-1]
    if any(0 < k < vocab for k in top_k) or any(p < 1.0 for p in top_p):
        ranked, order = scaled.sort(dim=-1, descending=True)
        ks = torch.tensor([k if 0 < k < vocab else vocab for k in top_k], device=device).unsqueeze(1)
        ranks = torch.arange(vocab, device=device).unsqueeze(0)
        ranked = ranked.masked_fill(ranks >= ks, float("-inf"))
        if any(p < 1.0 for p in top_p):
            probs = ranked.softmax(dim=-1)
            mass_before = probs.cumsum(dim=-1) - probs
            ps = torch.tensor(top_p, device=device).unsqueeze(1)
            ranked = ranked.masked_fill(mass_before > ps, float("-inf"))
        # Back to vocabulary order, so that a row samples the same way whatever the other rows ask for.
        scaled = torch.empty_like(scaled).scatter_(1, order, ranked)
    probs = scaled.softmax(dim=-1)
    return torch.cat([torch.multinomial(probs[r], 1, generator=s.generator) for r, s in enumerate(samplers)])


def sample_step(logits: torch.Tensor, samplers: list[SequenceSampler], vocab_size: int) -> StepSamples:
    """Choose the next token of every row of ``logits`` (float32, one row per sampler); modifies ``logits``."""
    lp_rows = [r for r, s in enumerate(samplers) if s.params.logprobs is not None]
    raw_logprobs = torch.log_softmax(logits[lp_rows], dim=-1) if lp_rows else None

    for r, s in enumerate(samplers):
        if s.needs_adjust:
            s.adjust(logits[r])
    grammar_rows = [r for r, s in enumerate(samplers) if s.matcher is not None]
    if grammar_rows:
        bitmask = xgr.allocate_token_bitmask(len(samplers), vocab_size)
        for r in grammar_rows:
            samplers[r].matcher.fill_next_token_bitmask(bitmask, r)
        on_device = bitmask.to(logits.device) if logits.device.type != "cpu" else bitmask
        xgr.apply_token_bitmask_inplace(logits, on_device, vocab_size=vocab_size, indices=grammar_rows)

    tokens = torch.empty(len(samplers), dtype=torch.long, device=logits.device)
    greedy = [r for r, s in enumerate(samplers) if s.greedy]
    sampled = [r for r, s in enumerate(samplers) if not s.greedy]
    if len(greedy) == len(samplers):
        tokens = logits.argmax(dim=-1)
    else:
        if greedy:
            tokens[greedy] = logits[greedy].argmax(dim=-1)
        tokens[sampled] = _sample_rows(logits[sampled], [samplers[r] for r in sampled])
    chosen = tokens.tolist()

    logprobs: list[TokenLogprob | None] = [None] * len(samplers)
    if raw_logprobs is not None:
        ks = [samplers[r].params.logprobs or 0 for r in lp_rows]
        entries = top_logprobs(raw_logprobs, [chosen[r] for r in lp_rows], ks)
        for r, entry in zip(lp_rows, entries, strict=True):
            logprobs[r] = entry
    return StepSamples(tokens=chosen, logprobs=logprobs)
