"""The transformers engine's scheduler: one thread that owns the model and batches every request.

Loop: take new requests and aborts from a queue; prefill waiting requests in left-padded groups and merge
them into the running batch; run one decode step for all running sequences together; hand each request its
delta through its event loop (``call_soon_threadsafe``, one call per loop per step). New requests join
between decode steps, finished ones leave the batch at once.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from serving.engines.base import EngineError, GenerationDelta, SamplingSettings, TokenLogprob
from serving.engines.hf_detok import IncrementalDetokenizer
from serving.engines.hf_kv import BatchCache, KVBatch
from serving.engines.hf_sampling import SequenceSampler, sample_step, top_logprobs

logger = logging.getLogger(__name__)

BASE_ADAPTER = "__base__"
"""peft's name for "no adapter" in a mixed-adapter batch."""


@dataclass(eq=False)
class Request:
    """A request as handed to the scheduler thread."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingSettings
    adapter: str
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    matcher: Any = None
    """This request's xgrammar GrammarMatcher (structured output), or None."""


@dataclass(eq=False)
class Sequence:
    """A request being generated: its sampler, detokenizer and output so far."""

    request: Request
    sampler: SequenceSampler
    detok: IncrementalDetokenizer
    max_len: int
    """Total length (prompt + output) at which generation stops with "length"."""
    output_ids: list[int] = field(default_factory=list)

    @property
    def position(self) -> int:
        """Position id of the newest token."""
        return len(self.request.prompt_ids) + len(self.output_ids) - 1


@dataclass
class SchedulerConfig:
    """How the scheduler batches work."""

    max_num_seqs: int = 64
    """Most sequences decoded together."""
    max_model_len: int = 2048
    """Longest prompt + output."""
    prefill_token_budget: int = 8192
    """Most (padded) prompt tokens prefilled in one forward pass."""


@dataclass
class SchedulerStats:
    """Counters the scheduler thread keeps (read from other threads for metrics and tests)."""

    running: int = 0
    """Sequences in the decode batch now."""
    waiting: int = 0
    """Requests queued for prefill now."""
    prefill_passes: int = 0
    decode_steps: int = 0
    peak_batch: int = 0
    """Most sequences ever decoded in one step."""


class Scheduler:
    """Runs the model in its own thread; the asyncio side only submits requests and aborts."""

    def __init__(self, model: Any, tokenizer: Any, config: SchedulerConfig, eos_ids: set[int],
                 vocab_size: int, device: torch.device, use_adapters: bool) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.eos_ids = eos_ids
        self.vocab_size = vocab_size
        self.device = device
        self.use_adapters = use_adapters
        self._commands: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._waiting: deque[Request] = deque()
        self._running: list[Sequence] = []
        self._batch: KVBatch | None = None
        self._outbox: list[tuple[Request, GenerationDelta | BaseException]] = []
        self.stats = SchedulerStats()
        self._thread = threading.Thread(target=self._run, name="hf-engine-scheduler", daemon=True)
        self._thread.start()

    # ---- called from the event loop ----
    def submit(self, request: Request) -> None:
        """Queue a request for generation."""
        self._commands.put(("add", request))

    def abort(self, request_id: str) -> None:
        """Ask the thread to end a request with finish_reason "abort"."""
        self._commands.put(("abort", request_id))

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread (pending requests end with "abort") and wait for it."""
        self._commands.put(("stop", None))
        self._thread.join(timeout)

    # ---- the thread ----
    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                idle = not self._running and not self._waiting
                if not self._take_commands(block=idle):
                    break
                try:
                    self._admit()
                    if self._running:
                        self._decode_step()
                except Exception as exc:  # keep serving: fail the batch, not the engine
                    logger.exception("hf engine step failed")
                    self._fail_all(EngineError(f"generation failed: {type(exc).__name__}: {exc}"))
                self.stats.running, self.stats.waiting = len(self._running), len(self._waiting)
                self._flush()
        self._abort_all()
        self.stats.running = self.stats.waiting = 0
        self._flush()

    def _take_commands(self, block: bool) -> bool:
        """Apply queued commands; False once asked to stop."""
        while True:
            try:
                kind, payload = self._commands.get(block=block)
            except queue.Empty:
                return True
            block = False
            if kind == "stop":
                return False
            if kind == "add":
                self._waiting.append(payload)
            elif kind == "abort":
                self._abort(payload)

    def _abort(self, request_id: str) -> None:
        for request in list(self._waiting):
            if request.request_id == request_id:
                self._waiting.remove(request)
                self._emit(request, GenerationDelta(token_ids=[], text="", finish_reason="abort"))
                return
        for row, seq in enumerate(self._running):
            if seq.request.request_id == request_id:
                self._emit(seq.request, GenerationDelta(token_ids=[], text="", finish_reason="abort"))
                self._drop_rows({row})
                return

    def _abort_all(self) -> None:
        for request in [*self._waiting, *(s.request for s in self._running)]:
            self._emit(request, GenerationDelta(token_ids=[], text="", finish_reason="abort"))
        self._waiting.clear()
        self._running, self._batch = [], None

    def _fail_all(self, error: BaseException) -> None:
        for seq in self._running:
            self._emit(seq.request, error)
        self._running, self._batch = [], None

    def _emit(self, request: Request, item: GenerationDelta | BaseException) -> None:
        self._outbox.append((request, item))

    def _flush(self) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, Any]]] = {}
        for request, item in self._outbox:
            by_loop.setdefault(request.loop, []).append((request.queue, item))
        self._outbox.clear()
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the loop closed: nobody is listening any more
                logger.debug("dropped %d deltas for a closed event loop", len(items))

    # ---- prefill ----
    def _next_group(self) -> list[Request]:
        """Waiting requests to prefill together (prompt-logprob requests go alone: they need all logits)."""
        free = self.config.max_num_seqs - len(self._running)
        group: list[Request] = []
        longest = 0
        while self._waiting and len(group) < free:
            request = self._waiting[0]
            alone = request.params.prompt_logprobs is not None
            longest_if_added = max(longest, len(request.prompt_ids))
            too_big = longest_if_added * (len(group) + 1) > self.config.prefill_token_budget
            if group and (alone or too_big):
                break
            group.append(self._waiting.popleft())
            longest = longest_if_added
            if alone:
                break
        return group

    def _admit(self) -> None:
        while self._waiting and len(self._running) < self.config.max_num_seqs:
            group = self._next_group()
            try:
                self._prefill(group)
            except Exception as exc:  # only this group fails; the running batch is untouched
                if not isinstance(exc, EngineError):
                    logger.exception("hf engine prefill failed")
                    exc = EngineError(f"prefill failed: {type(exc).__name__}: {exc}")
                for request in group:
                    self._emit(request, exc)

    def _start(self, request: Request) -> Sequence:
        p = request.params
        sampler = SequenceSampler(p, request.prompt_ids, self.vocab_size, self.device, self.eos_ids,
                                  request.matcher)
        prompt_len = len(request.prompt_ids)
        max_len = min(prompt_len + p.max_tokens, self.config.max_model_len)
        return Sequence(request, sampler, IncrementalDetokenizer(self.tokenizer, request.prompt_ids, p.stop),
                        max_len)

    def _prefill(self, group: list[Request]) -> None:
        todo = [r for r in group if r.params.max_tokens > 0 or r.params.prompt_logprobs is not None]
        for request in group:
            if request not in todo:
                self._emit(request, GenerationDelta(token_ids=[], text="", finish_reason="length"))
        if not todo:
            return
        lengths = [len(r.prompt_ids) for r in todo]
        width = max(lengths)
        pad = 0
        ids = torch.tensor([[pad] * (width - n) + r.prompt_ids for r, n in zip(todo, lengths, strict=True)],
                           dtype=torch.long, device=self.device)
        mask = torch.tensor([[0] * (width - n) + [1] * n for n in lengths], dtype=torch.long, device=self.device)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        want_prompt_lp = todo[0].params.prompt_logprobs is not None
        cache = BatchCache()
        self.stats.prefill_passes += 1
        out = self._forward(ids, mask, positions, cache, [r.adapter for r in todo],
                            keep=0 if want_prompt_lp else 1)
        first: dict[int, list[TokenLogprob | None]] = {}
        if want_prompt_lp:
            first[0] = _prompt_logprobs(out.logits[0].float(), todo[0].prompt_ids, todo[0].params.prompt_logprobs)
        logits = out.logits[:, -1, :].float()
        seqs = [self._start(r) for r in todo]
        sampling = [i for i, r in enumerate(todo) if r.params.max_tokens > 0]
        keep: list[int] = []
        if sampling:
            samples = sample_step(logits[sampling], [seqs[i].sampler for i in sampling], self.vocab_size)
            for j, i in enumerate(sampling):
                if not self._advance(seqs[i], samples.tokens[j], samples.logprobs[j], first.get(i)):
                    keep.append(i)
        for i, seq in enumerate(seqs):
            if seq.request.params.max_tokens == 0:
                self._emit(seq.request, GenerationDelta(token_ids=[], text="", finish_reason="length",
                                                        prompt_logprobs=first.get(i)))
        if not keep:
            return
        joined = KVBatch(cache, mask)
        if len(keep) < len(todo):
            joined.select(keep)
        if self._batch is None:
            self._batch = joined
        else:
            self._batch.merge(joined)
        self._running.extend(seqs[i] for i in keep)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: BatchCache,
                 adapters: list[str], keep: int) -> Any:
        kwargs: dict[str, Any] = {}
        if self.use_adapters:
            kwargs["adapter_names"] = adapters
        return self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                          use_cache=True, logits_to_keep=keep, **kwargs)

    # ---- decode ----
    def _decode_step(self) -> None:
        batch = self._batch
        assert batch is not None
        ids = torch.tensor([[s.output_ids[-1]] for s in self._running], dtype=torch.long, device=self.device)
        positions = torch.tensor([[s.position] for s in self._running], dtype=torch.long, device=self.device)
        mask = batch.append_column()
        self.stats.decode_steps += 1
        self.stats.peak_batch = max(self.stats.peak_batch, batch.rows)
        out = self._forward(ids, mask, positions, batch.cache, [s.request.adapter for s in self._running], keep=1)
        logits = out.logits[:, -1, :].float()
        samples = sample_step(logits, [s.sampler for s in self._running], self.vocab_size)
        done = {
            row for row, seq in enumerate(self._running)
            if self._advance(seq, samples.tokens[row], samples.logprobs[row], None)
        }
        if done:
            self._drop_rows(done)

    def _drop_rows(self, rows: set[int]) -> None:
        keep = [i for i in range(len(self._running)) if i not in rows]
        self._running = [self._running[i] for i in keep]
        if not keep:
            self._batch = None
        elif self._batch is not None:
            self._batch.select(keep)

    def _advance(self, seq: Sequence, token: int, logprob: TokenLogprob | None,
                 prompt_logprobs: list[TokenLogprob | None] | None) -> bool:
        """Record a new token, emit its delta; True when the sequence has finished."""
        p = seq.request.params
        seq.output_ids.append(token)
        seq.sampler.record(token)
        stop_string = seq.detok.add_token(token)
        finish, reason = None, None
        if stop_string is not None:
            finish, reason = "stop", stop_string
        elif token in p.stop_token_ids:
            finish, reason = "stop", token
        elif self._ends_sequence(seq, token):
            finish = "stop"
        elif len(seq.request.prompt_ids) + len(seq.output_ids) >= seq.max_len:
            finish = "length"
        self._emit(seq.request, GenerationDelta(
            token_ids=[token],
            text=seq.detok.take_text(final=finish is not None, stopped_by_string=stop_string is not None),
            logprobs=[logprob] if logprob is not None else None,
            finish_reason=finish,
            stop_reason=reason,
            prompt_logprobs=prompt_logprobs,
        ))
        return finish is not None


    def _ends_sequence(self, seq: Sequence, token: int) -> bool:
        """EOS (unless ignored) or a grammar that has reached its end."""
        matcher = seq.sampler.matcher
        if token in self.eos_ids and not seq.request.params.ignore_eos:
            return True
        return matcher is not None and matcher.is_terminated()


def _prompt_logprobs(logits: torch.Tensor, prompt_ids: list[int], k: int) -> list[TokenLogprob | None]:
    """Logprob of each prompt token given the ones before it (the first has none)."""
    if len(prompt_ids) < 2:
        return [None]
    logprobs = torch.log_softmax(logits[:-1], dim=-1)
    entries = top_logprobs(logprobs, prompt_ids[1:], [k] * (len(prompt_ids) - 1))
    return [None, *entries]


def _deliver(items: list[tuple[asyncio.Queue, Any]]) -> None:
    for target, item in items:
        target.put_nowait(item)
