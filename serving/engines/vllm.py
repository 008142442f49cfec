"""vLLM's engine embedded in-process (``AsyncLLM``). The only module in Nexus-K that imports vllm."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from serving.engines.base import (
    EngineError,
    GenerationDelta,
    PairPrompt,
    SamplingSettings,
    TokenLogprob,
    cannot_pool,
    context_length_message,
)
from serving.engines.settings import EngineSettings, as_settings
from serving.engines.tokenizer import eos_token_ids, load_tokenizer
from serving.quantize import adapters_for

logger = logging.getLogger(__name__)


#: Machines with at most this many cores reserve none for vLLM's front end by default (``cpu_reserved_cores``).
SMALL_CPU_CORES = 2


def usable_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _prepare_cpu_environment(settings: EngineSettings) -> None:
    """vLLM's CPU build needs a KV-cache size and a loopback address for its internal messaging; the cores
    reserved for its front end follow ``cpu_reserved_cores`` (given: always; default: none on a small machine,
    unless the environment already says)."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(settings.kv_cache_gib))))
    if settings.cpu_reserved_cores is not None:
        os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(settings.cpu_reserved_cores)
    elif usable_cores() <= SMALL_CPU_CORES:
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
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


def _engine_arg_names() -> list[str]:
    import dataclasses

    from vllm.engine.arg_utils import AsyncEngineArgs

    return [f.name for f in dataclasses.fields(AsyncEngineArgs) if not f.name.startswith("_")]


def check_engine_args(args: dict[str, Any]) -> None:
    """Every name must be one of vLLM's ``AsyncEngineArgs``; an unknown one is an error naming the closest."""
    import difflib

    names = _engine_arg_names()
    for name in args:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join('--' + c.replace('_', '-') for c in close)}?" if close else ""
            raise EngineError(f"--{name.replace('_', '-')} is not a vLLM engine argument{hint}")
        if name in _OWN_ARGS:
            raise EngineError(f"engine argument {name!r} is a Nexus-K setting: use --{_OWN_ARGS[name]} instead")


# vLLM names that our own settings set (so that both engines read them, or because the server needs them).
_OWN_ARGS = {"model": "model", "served_model_name": "served-model-name", "trust_remote_code": "trust-remote-code",
             "max_model_len": "max-model-len", "dtype": "dtype", "max_num_seqs": "max-num-seqs",
             "max_lora_rank": "max-lora-rank", "enable_lora": "lora", "max_loras": "lora",
             "reasoning_parser": "reasoning-parser"}


def engine_args(settings: EngineSettings) -> Any:
    """vLLM's ``AsyncEngineArgs``: our defaults, then the user's engine arguments, checked by vLLM itself."""
    from vllm.config import StructuredOutputsConfig
    from vllm.engine.arg_utils import AsyncEngineArgs

    check_engine_args(settings.engine_args)
    loras = settings.lora
    if settings.runner in ("pool", "score"):  # vLLM picks embed or classify from the architecture
        pooling = {"enable_prefix_caching": False, "seed": 0, "disable_log_stats": True, **settings.engine_args,
                   "model": settings.model, "runner": "pooling", "dtype": settings.dtype,
                   "max_model_len": settings.max_model_len, "max_num_seqs": settings.max_num_seqs,
                   "trust_remote_code": settings.trust_remote_code}
        try:
            return AsyncEngineArgs(**pooling)
        except (TypeError, ValueError) as err:
            raise EngineError(f"invalid vLLM engine arguments: {_first_line(err)}") from None
    args: dict[str, Any] = {
        "enable_prefix_caching": True,
        "seed": 0,
        "disable_log_stats": True,
        # Compact JSON: without this, a weak model can fill max_tokens with legal whitespace.
        "structured_outputs_config": StructuredOutputsConfig(backend="xgrammar", disable_any_whitespace=True),
        **settings.engine_args,
        "model": settings.model,
        "dtype": settings.dtype,
        "max_model_len": settings.max_model_len,
        "max_num_seqs": settings.max_num_seqs,
        "trust_remote_code": settings.trust_remote_code,
        "enable_lora": bool(loras),
        "max_loras": max(1, len(loras)),
        "max_lora_rank": settings.max_lora_rank,
        "reasoning_parser": settings.reasoning_parser or "",
    }
    try:
        return AsyncEngineArgs(**args)
    except (TypeError, ValueError) as err:
        raise EngineError(f"invalid vLLM engine arguments: {_first_line(err)}") from None


def _start(async_llm: Any, settings: EngineSettings) -> Any:
    """vLLM's engine on these settings; a configuration vLLM rejects is an EngineError, one line."""
    args = engine_args(settings)
    try:
        return async_llm.from_engine_args(args)
    except (TypeError, ValueError) as err:  # pydantic's ValidationError is a ValueError
        raise EngineError(f"vLLM rejected the engine settings: {_first_line(err)}") from None


def validate_engine_config(settings: EngineSettings) -> None:
    """Let vLLM resolve its whole configuration (model config, quantization, parallelism...) without starting
    anything, so that a wrong setting is one error line before the server starts."""
    try:
        engine_args(settings).create_engine_config()
    except EngineError:
        raise
    except (TypeError, ValueError, OSError, RuntimeError) as err:
        raise EngineError(f"vLLM rejected the engine settings: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return " ".join(lines[:2])[:500] if lines else type(err).__name__


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _to_vllm_params(params: SamplingSettings, eos_ids: list[int]) -> Any:
    from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

    structured = None
    if params.structured is not None:
        s = params.structured
        structured = StructuredOutputsParams(
            json=s.json_schema, json_object=s.json_object or None, choice=s.choice, grammar=s.grammar,
            disable_any_whitespace=True
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
        logit_bias=dict(params.logit_bias) or None,
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
    runner = "generate"

    def __init__(self, llm: Any, model_path: str, tokenizer: Any, max_model_len: int,
                 loras: dict[str, str], eos_ids: list[int], priority_scheduling: bool = False) -> None:
        self._llm = llm
        self._priority_scheduling = priority_scheduling
        """Started with ``scheduling_policy: priority``: requests carry their priority (batch lines go last)."""
        self.model_path = model_path
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self._loras = loras
        self._lora_ids = {name: i + 1 for i, name in enumerate(loras)}
        self._eos_ids = eos_ids
        self._running: set[str] = set()

    @classmethod
    async def create(cls, settings: EngineSettings | str, **overrides: Any) -> VLLMEngine:
        """Start vLLM on ``settings.model`` (a folder or hub id); ``overrides`` are EngineSettings fields."""
        settings = as_settings(settings, "vllm", overrides)
        if not _has_cuda():
            _prepare_cpu_environment(settings)
        from vllm.v1.engine.async_llm import AsyncLLM

        loras = dict(settings.lora)
        for name, path in loras.items():
            if not (Path(path) / "adapter_config.json").is_file():
                raise EngineError(f"LoRA adapter {name!r}: no adapter_config.json in {path}")
        loras = adapters_for(settings.model, loras)  # rewritten for a smoothed int8 copy (``nexus-k model int8``)
        tokenizer = load_tokenizer(settings)
        llm = _start(AsyncLLM, settings)
        if not _has_cuda() and settings.engine_core_priority != "normal":
            pids = _lower_engine_core_priority(settings.engine_core_priority)
            logger.info("vLLM engine core %s at %s CPU priority", pids, settings.engine_core_priority)
        length = llm.model_config.max_model_len
        logger.info("vLLM engine ready: %s (max_model_len=%d, loras=%s)", settings.model, length, list(loras))
        return cls(llm, settings.model, tokenizer, length, loras, eos_token_ids(settings.model, tokenizer),
                   settings.engine_args.get("scheduling_policy") == "priority")

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
            raise EngineError(context_length_message(len(prompt_ids), params.max_tokens, self.max_model_len))
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
        # vLLM refuses a priority unless it schedules by priority; without that every request is equal.
        priority = {"priority": params.priority} if self._priority_scheduling else {}
        try:
            async for out in self._llm.generate(
                TokensPrompt(prompt_token_ids=list(prompt_ids)), sampling, request_id, lora_request=lora, **priority
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

    async def pool(self, prompts: list[list[int]], request_id: str) -> list[list[float]]:
        """A generation model produces no embeddings."""
        return await cannot_pool(self.model_path)

    async def abort(self, request_id: str) -> None:
        """Tell vLLM to drop the request."""
        await self._llm.abort(request_id)
        self._running.discard(request_id)

    async def shutdown(self) -> None:
        """Stop vLLM's engine core."""
        self._llm.shutdown()


class VLLMPoolingEngine:
    """Embeddings on vLLM's pooling runner (the checkpoint's sentence-transformers pooling and normalisation,
    Matryoshka dimensions where the model declares them)."""

    name = "vllm"
    runner = "pool"

    def __init__(self, llm: Any, model_path: str, tokenizer: Any, max_model_len: int, dimensions: int,
                 matryoshka_dimensions: list[int]) -> None:
        self._llm = llm
        self.model_path = model_path
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.dimensions = dimensions
        self.matryoshka_dimensions = matryoshka_dimensions
        self._running: set[str] = set()

    @classmethod
    async def create(cls, settings: EngineSettings | str, **overrides: Any) -> VLLMPoolingEngine:
        """Start vLLM's pooling runner on ``settings.model``."""
        settings = as_settings(settings, "vllm", {"runner": cls.runner, **overrides})
        if not _has_cuda():
            _prepare_cpu_environment(settings)
        from vllm.v1.engine.async_llm import AsyncLLM

        tokenizer = load_tokenizer(settings)
        llm = _start(AsyncLLM, settings)
        if not _has_cuda() and settings.engine_core_priority != "normal":
            _lower_engine_core_priority(settings.engine_core_priority)
        config = llm.model_config
        dims = list(getattr(config, "matryoshka_dimensions", None) or [])
        if not dims:  # declared beside the sentence-transformers files rather than in config.json
            from training.embed_pooling import read_pooling_spec

            spec = read_pooling_spec(settings.model) if Path(settings.model).is_dir() else None
            dims = list(spec.matryoshka_dimensions) if spec else []
        logger.info("vLLM pooling engine ready: %s (max_model_len=%d)", settings.model, config.max_model_len)
        return cls(llm, settings.model, tokenizer, config.max_model_len, config.get_hidden_size(), dims)

    def lora_names(self) -> list[str]:
        """Pooling engines serve no adapters."""
        return []

    def num_unfinished_requests(self) -> int:
        """Pooling requests vLLM still holds."""
        return len(self._running)

    async def pool(self, prompts: list[list[int]], request_id: str) -> list[list[float]]:
        """One embedding per prompt; vLLM batches them with everything else in flight."""
        import asyncio

        from vllm.inputs import TokensPrompt
        from vllm.pooling_params import PoolingParams

        for ids in prompts:
            if len(ids) > self.max_model_len:
                raise EngineError(context_length_message(len(ids), 0, self.max_model_len))

        async def one(i: int, ids: list[int]) -> list[float]:
            rid = f"{request_id}-{i}"
            self._running.add(rid)
            try:
                async for out in self._llm.encode(TokensPrompt(prompt_token_ids=ids), PoolingParams(task="embed"), rid):
                    if out.finished:
                        return out.outputs.data.float().tolist()
            finally:
                self._running.discard(rid)
            raise EngineError("the engine returned no embedding")

        return list(await asyncio.gather(*(one(i, ids) for i, ids in enumerate(prompts))))

    async def generate(self, prompt_ids: list[int], params: SamplingSettings, request_id: str,
                       lora_name: str | None = None) -> AsyncIterator[GenerationDelta]:
        """An embedding model does not generate."""
        raise EngineError(f"{self.model_path} is an embedding model: it cannot generate text")
        yield  # pragma: no cover  (makes this an async generator)

    async def abort(self, request_id: str) -> None:
        """Drop the request's pooling jobs."""
        await self._llm.abort([r for r in self._running if r.startswith(request_id)])

    async def shutdown(self) -> None:
        """Stop vLLM's engine core."""
        self._llm.shutdown()



class VLLMScoringEngine(VLLMPoolingEngine):
    """A cross-encoder on vLLM's pooling runner with its ``classify`` task (vLLM 0.32 folded the old ``score``
    task into it): each pair's single logit through the model's activation (sigmoid for one label), the same
    requests that vLLM's own ``/rerank`` sends, built from token ids here."""

    runner = "score"

    async def score(self, pairs: list[PairPrompt], request_id: str) -> list[float]:
        """One relevance score per pair; vLLM batches them with everything else in flight."""
        import asyncio

        from vllm.inputs import TokensPrompt
        from vllm.pooling_params import PoolingParams

        for pair in pairs:
            if len(pair.token_ids) > self.max_model_len:
                raise EngineError(context_length_message(len(pair.token_ids), 0, self.max_model_len))

        async def one(i: int, pair: PairPrompt) -> float:
            params = PoolingParams(task="classify")
            if pair.token_type_ids is not None:  # BERT-style segments, as vLLM's scoring front end passes them
                second = next((k for k, t in enumerate(pair.token_type_ids) if t == 1), len(pair.token_type_ids))
                params.extra_kwargs = {"compressed_token_type_ids": second}
            rid = f"{request_id}-{i}"
            self._running.add(rid)
            try:
                async for out in self._llm.encode(TokensPrompt(prompt_token_ids=pair.token_ids), params, rid):
                    if out.finished:
                        return float(out.outputs.data.float().reshape(-1)[0])
            finally:
                self._running.discard(rid)
            raise EngineError("the engine returned no score")

        return list(await asyncio.gather(*(one(i, pair) for i, pair in enumerate(pairs))))

    async def pool(self, prompts: list[list[int]], request_id: str) -> list[list[float]]:
        """A reranker gives no embeddings."""
        raise EngineError(f"{self.model_path} is a reranker: it cannot produce embeddings")

    async def generate(self, prompt_ids: list[int], params: SamplingSettings, request_id: str,
                       lora_name: str | None = None) -> AsyncIterator[GenerationDelta]:
        """A reranker does not generate."""
        raise EngineError(f"{self.model_path} is a reranker: it cannot generate text")
        yield  # pragma: no cover  (makes this an async generator)
