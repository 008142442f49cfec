"""vLLM's engine embedded in-process (``AsyncLLM``). The only module in Nexus-K that imports vllm."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from serving.engines.base import EngineError, GenerationDelta, SamplingSettings, TokenLogprob

logger = logging.getLogger(__name__)


def _prepare_cpu_environment(kv_cache_gib: float) -> None:
    """vLLM's CPU build needs a KV-cache size and a loopback address for its internal messaging."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(kv_cache_gib))))
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")


def _lower_engine_core_priority(priority: str) -> list[int]:
    """Put vLLM's engine-core processes (children of this one) at ``priority`` ("low": niceness 10, "idle":
    SCHED_IDLE); returns their pids.

    The engine core waits for its workers by spinning on ``sched_yield`` (vLLM's shared-memory queue). On a
    CPU host the workers already compute on every core but one, and at the default priority that spin wins
    the last core from the HTTP front end and anything else on the machine (bench/engine_core_priority.py).
    Set after start-up, so the workers the engine core spawned keep their own priority.
    """
    import psutil

    pids = []
    for child in psutil.Process().children():
        try:
            if not child.name().startswith("VLLM::EngineCor"):
                continue
            for thread in child.threads():  # Linux keeps both per thread
                if priority == "idle":
                    os.sched_setscheduler(thread.id, os.SCHED_IDLE, os.sched_param(0))
                else:
                    os.setpriority(os.PRIO_PROCESS, thread.id, 10)
        except (psutil.Error, OSError, AttributeError) as err:  # AttributeError: no SCHED_IDLE off Linux
            logger.warning("could not lower the priority of vLLM's engine core %s: %s", child.pid, err)
            continue
        pids.append(child.pid)
    return pids


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _to_vllm_params(params: SamplingSettings, eos_ids: list[int]) -> Any:
    from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

    structured = None
    if params.structured is not None:
        s = params.structured
        structured = StructuredOutputsParams(
            json=s.json_schema, json_object=s.json_object or None, choice=s.choice, disable_any_whitespace=True
        )
    return SamplingParams(
        n=1,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k if params.top_k > 0 else -1,
        min_tokens=params.min_tokens,
        seed=params.seed,
        presence_penalty=params.presence_penalty,
        frequency_penalty=params.frequency_penalty,
        repetition_penalty=params.repetition_penalty,
        stop=list(params.stop) or None,
        stop_token_ids=sorted(set(params.stop_token_ids) | set(eos_ids)) if not params.ignore_eos
        else list(params.stop_token_ids),
        ignore_eos=params.ignore_eos,
        max_tokens=params.max_tokens,
        logprobs=params.logprobs,
        prompt_logprobs=params.prompt_logprobs,
        structured_outputs=structured,
        output_kind=RequestOutputKind.DELTA,
        skip_special_tokens=True,
    )


def _convert_logprobs(token_ids: list[int], entries: Any) -> list[TokenLogprob]:
    out: list[TokenLogprob] = []
    for token_id, entry in zip(token_ids, entries or [], strict=False):
        top = {int(k): float(v.logprob) for k, v in entry.items()}
        out.append(TokenLogprob(token_id=token_id, logprob=top.get(token_id, float("-inf")), top=top))
    return out


class VLLMEngine:
    """Nexus-K's Engine protocol on top of vLLM's ``AsyncLLM`` (continuous batching, prefix caching, LoRA)."""

    name = "vllm"

    def __init__(self, llm: Any, model_path: str, tokenizer: Any, max_model_len: int,
                 loras: dict[str, str], eos_ids: list[int]) -> None:
        self._llm = llm
        self.model_path = model_path
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self._loras = loras
        self._lora_ids = {name: i + 1 for i, name in enumerate(loras)}
        self._eos_ids = eos_ids
        self._running: set[str] = set()

    @classmethod
    async def create(
        cls,
        model: str,
        *,
        max_model_len: int | None = None,
        dtype: str = "auto",
        lora_modules: dict[str, str] | None = None,
        max_lora_rank: int = 64,
        tensor_parallel_size: int = 1,
        pipeline_parallel_size: int = 1,
        enforce_eager: bool = False,
        kv_cache_gib: float = 2.0,
        engine_core_priority: str = "low",
        gpu_memory_utilization: float = 0.9,
        max_num_seqs: int = 128,
        seed: int = 0,
    ) -> VLLMEngine:
        """Start vLLM on ``model`` (a folder or hub id) with the given parallelism and adapters."""
        if not _has_cuda():
            _prepare_cpu_environment(kv_cache_gib)
        from transformers import AutoTokenizer, GenerationConfig
        from vllm.config import StructuredOutputsConfig
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        loras = dict(lora_modules or {})
        for name, path in loras.items():
            if not (Path(path) / "adapter_config.json").is_file():
                raise EngineError(f"LoRA adapter {name!r}: no adapter_config.json in {path}")
        args = AsyncEngineArgs(
            model=model,
            dtype=dtype,
            max_model_len=max_model_len,
            tensor_parallel_size=tensor_parallel_size,
            pipeline_parallel_size=pipeline_parallel_size,
            enforce_eager=enforce_eager,
            enable_lora=bool(loras),
            max_loras=max(1, len(loras)),
            max_lora_rank=max_lora_rank,
            max_num_seqs=max_num_seqs,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_prefix_caching=True,
            seed=seed,
            disable_log_stats=True,
            # Compact JSON: without this, a weak model can fill max_tokens with legal whitespace.
            structured_outputs_config=StructuredOutputsConfig(backend="xgrammar", disable_any_whitespace=True),
        )
        llm = AsyncLLM.from_engine_args(args)
        if not _has_cuda() and engine_core_priority != "normal":
            pids = _lower_engine_core_priority(engine_core_priority)
            logger.info("vLLM engine core %s at %s CPU priority", pids, engine_core_priority)
        tokenizer = AutoTokenizer.from_pretrained(model)
        eos_ids: set[int] = set()
        try:
            gen = GenerationConfig.from_pretrained(model)
            eos = gen.eos_token_id
            eos_ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        except OSError:
            pass
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        length = llm.model_config.max_model_len
        logger.info("vLLM engine ready: %s (max_model_len=%d, loras=%s)", model, length, list(loras))
        return cls(llm, model, tokenizer, length, loras, sorted(eos_ids))

    def lora_names(self) -> list[str]:
        """Names of the LoRA adapters this engine can apply."""
        return list(self._loras)

    def num_unfinished_requests(self) -> int:
        """Requests vLLM still holds."""
        return len(self._running)

    async def generate(
        self,
        prompt_ids: list[int],
        params: SamplingSettings,
        request_id: str,
        lora_name: str | None = None,
    ) -> AsyncIterator[GenerationDelta]:
        """Stream one sequence's deltas from vLLM."""
        from vllm.inputs import TokensPrompt
        from vllm.lora.request import LoRARequest

        if len(prompt_ids) + params.max_tokens > self.max_model_len:
            raise EngineError(
                f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                f"{len(prompt_ids) + params.max_tokens} tokens ({len(prompt_ids)} in the prompt, "
                f"{params.max_tokens} for the completion)."
            )
        lora = None
        if lora_name is not None:
            if lora_name not in self._loras:
                raise EngineError(f"unknown LoRA adapter {lora_name!r}")
            lora = LoRARequest(lora_name, self._lora_ids[lora_name], self._loras[lora_name])
        # vLLM wants at least one generated token; prompt-only scoring asks for one and drops it.
        prompt_only = params.max_tokens == 0
        if prompt_only:
            params = SamplingSettings(**{**params.__dict__, "max_tokens": 1, "structured": None})
        try:
            sampling = _to_vllm_params(params, self._eos_ids)
        except ValueError as err:  # vLLM's own checks of the settings: the caller's mistake, not ours
            raise EngineError(f"invalid sampling settings: {err}") from None
        self._running.add(request_id)
        first = True
        try:
            async for out in self._llm.generate(
                TokensPrompt(prompt_token_ids=list(prompt_ids)), sampling, request_id, lora_request=lora
            ):
                prompt_lps = None
                if first and params.prompt_logprobs is not None and out.prompt_logprobs is not None:
                    prompt_lps = [None, *_convert_logprobs(prompt_ids[1:], out.prompt_logprobs[1:])]
                first = False
                seq = out.outputs[0]
                if prompt_only:
                    if not out.finished:
                        await self._llm.abort(request_id)
                    yield GenerationDelta([], "", [] if params.logprobs is not None else None, "length",
                                          prompt_logprobs=prompt_lps)
                    return
                token_ids = list(seq.token_ids)
                logprobs = _convert_logprobs(token_ids, seq.logprobs) if params.logprobs is not None else None
                finish = seq.finish_reason if out.finished else None
                if finish not in (None, "stop", "length"):
                    finish = "abort"
                yield GenerationDelta(token_ids, seq.text, logprobs, finish, seq.stop_reason, prompt_lps)
                if out.finished:
                    return
        finally:
            self._running.discard(request_id)

    async def abort(self, request_id: str) -> None:
        """Tell vLLM to drop the request."""
        await self._llm.abort(request_id)
        self._running.discard(request_id)

    async def shutdown(self) -> None:
        """Stop vLLM's engine core."""
        self._llm.shutdown()
