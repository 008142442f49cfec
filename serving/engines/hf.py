"""The transformers inference engine: batched, streaming generation for machines without vLLM.

``HFEngine`` implements :class:`serving.engines.base.Engine` with plain ``transformers`` (and ``peft`` for
LoRA, ``xgrammar`` for structured outputs). A scheduler thread owns the model and decodes every running
request together with a KV cache (see ``hf_scheduler``); the asyncio side only validates, submits and reads
per-request queues, so the event loop never blocks on torch.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import torch

from serving.engines.base import (
    EngineError,
    GenerationDelta,
    SamplingSettings,
    cannot_pool,
    context_length_message,
)
from serving.engines.hf_scheduler import BASE_ADAPTER, Request, Scheduler, SchedulerConfig, SchedulerStats
from serving.engines.settings import EngineSettings, as_settings
from serving.engines.tokenizer import eos_token_ids, load_tokenizer
from serving.quantize import adapters_for

logger = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32, "float": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "half": torch.float16, "fp16": torch.float16,
}
_DEFAULT_CONTEXT = 2048


def _resolve_dtype(dtype: str) -> Any:
    if dtype == "auto":
        return "auto"
    if dtype not in _DTYPES:
        raise EngineError(f"unknown dtype {dtype!r}; choose auto or one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def _check_params(p: SamplingSettings) -> None:
    if p.max_tokens < 0:
        raise EngineError(f"max_tokens must be >= 0, got {p.max_tokens}")
    if p.temperature < 0:
        raise EngineError(f"temperature must be >= 0, got {p.temperature}")
    if not 0 < p.top_p <= 1:
        raise EngineError(f"top_p must be in (0, 1], got {p.top_p}")
    if p.top_k < 0:
        raise EngineError(f"top_k must be >= 0, got {p.top_k}")
    if p.repetition_penalty <= 0:
        raise EngineError(f"repetition_penalty must be > 0, got {p.repetition_penalty}")
    for name in ("logprobs", "prompt_logprobs"):
        value = getattr(p, name)
        if value is not None and value < 0:
            raise EngineError(f"{name} must be >= 0, got {value}")


class HFEngine:
    """Batched, streaming generation with transformers; token ids in, deltas out."""

    name = "hf"
    runner = "generate"

    def __init__(self, model_path: str, model: Any, tokenizer: Any, *, max_model_len: int,
                 max_num_seqs: int, device: torch.device, adapters: list[str]) -> None:
        self.model_path = model_path
        self.model = model
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.device = device
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        """Width of the model's logits (may exceed the tokenizer's vocabulary)."""
        self.eos_token_ids = set(eos_token_ids(model_path, tokenizer))
        self._adapters = adapters
        self._streams: dict[str, asyncio.Queue] = {}
        self._grammars: Any = None
        self._grammar_lock = threading.Lock()
        self._closed = False
        config = SchedulerConfig(max_num_seqs=max_num_seqs, max_model_len=max_model_len)
        self._scheduler = Scheduler(model, tokenizer, config, self.eos_token_ids, self.vocab_size, device,
                                    use_adapters=bool(adapters))

    @classmethod
    async def create(cls, settings: EngineSettings | str, **overrides: Any) -> HFEngine:
        """Load tokenizer and model (folder or hub id; CUDA when available) and start the scheduler;
        ``overrides`` are EngineSettings fields."""
        return await asyncio.to_thread(cls._load, as_settings(settings, "hf", overrides))

    @classmethod
    def _load(cls, settings: EngineSettings) -> HFEngine:
        from transformers import AutoModelForCausalLM

        target = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        tokenizer = load_tokenizer(settings)
        model = AutoModelForCausalLM.from_pretrained(settings.model, dtype=_resolve_dtype(settings.dtype),
                                                     trust_remote_code=settings.trust_remote_code).to(target)
        context = getattr(model.config.get_text_config(), "max_position_embeddings", None) or _DEFAULT_CONTEXT
        max_model_len = settings.max_model_len or context
        if max_model_len > context:
            raise EngineError(f"max_model_len {max_model_len} must be between 1 and the model's context {context}")
        lora_modules = adapters_for(settings.model, settings.lora)  # rewritten for a smoothed int8 copy
        if lora_modules:
            model = _load_adapters(model, lora_modules)
        model.eval()
        logger.info("hf engine: %s on %s (%s), max_model_len %d, adapters %s", settings.model, target,
                    next(model.parameters()).dtype, max_model_len, sorted(lora_modules) or "none")
        return cls(settings.model, model, tokenizer, max_model_len=max_model_len,
                   max_num_seqs=settings.max_num_seqs, device=target, adapters=list(lora_modules))

    def lora_names(self) -> list[str]:
        """Names of the LoRA adapters this engine can apply."""
        return list(self._adapters)

    def num_unfinished_requests(self) -> int:
        """Requests whose stream has not ended yet."""
        return len(self._streams)

    def stats(self) -> SchedulerStats:
        """Live scheduler counters (running and waiting sequences, steps, peak batch size)."""
        return self._scheduler.stats

    def _grammar_cache(self) -> Any:
        with self._grammar_lock:
            if self._grammars is None:
                from serving.engines.hf_grammar import GrammarCache

                self._grammars = GrammarCache(self.tokenizer, self.vocab_size, sorted(self.eos_token_ids))
            return self._grammars

    def _matcher_for(self, params: SamplingSettings) -> Any:
        grammars = self._grammar_cache()
        return grammars.matcher(grammars.compile(params.structured))

    def _validate(self, prompt_ids: list[int], params: SamplingSettings, request_id: str,
                  lora_name: str | None) -> str:
        if self._closed:
            raise EngineError("the engine is shut down")
        if request_id in self._streams:
            raise EngineError(f"request id {request_id!r} is already running")
        adapter = lora_name or BASE_ADAPTER
        if lora_name and lora_name not in self._adapters:
            known = ", ".join(self._adapters) or "none loaded"
            raise EngineError(f"unknown LoRA adapter {lora_name!r} (known: {known})")
        if not prompt_ids:
            raise EngineError("the prompt is empty")
        bad = [i for i in prompt_ids if not 0 <= i < self.vocab_size]
        if bad:
            raise EngineError(f"prompt token id {bad[0]} is outside the vocabulary (size {self.vocab_size})")
        _check_params(params)
        needed = len(prompt_ids) + (1 if params.max_tokens > 0 else 0)
        if needed > self.max_model_len:
            # This engine stops a reply at the context's end ("length"); only the first token must fit.
            raise EngineError(context_length_message(len(prompt_ids), 1, self.max_model_len))
        return adapter

    async def generate(self, prompt_ids: list[int], params: SamplingSettings, request_id: str,
                       lora_name: str | None = None) -> AsyncIterator[GenerationDelta]:
        """Stream the generation for one prompt; the last delta has ``finish_reason`` set."""
        adapter = self._validate(prompt_ids, params, request_id, lora_name)
        matcher = None
        if params.structured is not None:
            matcher = await asyncio.to_thread(self._matcher_for, params)
        stream: asyncio.Queue = asyncio.Queue()
        self._streams[request_id] = stream
        request = Request(request_id, list(prompt_ids), params, adapter, asyncio.get_running_loop(), stream,
                          matcher)
        self._scheduler.submit(request)
        finished = False
        try:
            while True:
                item = await stream.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = item.finish_reason is not None
                yield item
                if finished:
                    return
        finally:
            self._streams.pop(request_id, None)
            if not finished:  # the consumer went away: free the slot
                self._scheduler.abort(request_id)

    async def pool(self, prompts: list[list[int]], request_id: str) -> list[list[float]]:
        """A generation model produces no embeddings."""
        return await cannot_pool(self.model_path)

    async def abort(self, request_id: str) -> None:
        """Stop a request; its stream ends with finish_reason "abort"."""
        self._scheduler.abort(request_id)

    async def shutdown(self) -> None:
        """Stop the scheduler thread (running requests end with "abort")."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._scheduler.stop)


def _load_adapters(model: Any, lora_modules: dict[str, str]) -> Any:
    """One PeftModel holding every adapter, so that a batch can mix them (``adapter_names``)."""
    from peft import PeftModel

    if BASE_ADAPTER in lora_modules:
        raise EngineError(f"{BASE_ADAPTER!r} is reserved for the base model; rename that adapter")
    items = list(lora_modules.items())
    try:
        first_name, first_path = items[0]
        peft_model = PeftModel.from_pretrained(model, first_path, adapter_name=first_name)
        for name, path in items[1:]:
            peft_model.load_adapter(path, adapter_name=name)
    except (OSError, ValueError) as exc:
        raise EngineError(f"cannot load LoRA adapters {lora_modules}: {exc}") from exc
    return peft_model
