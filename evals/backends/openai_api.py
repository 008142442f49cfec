"""An OpenAI-compatible endpoint: our own server, a vLLM server, or a foreign API.

Log-likelihoods use ``/v1/completions`` with ``echo=True, logprobs=1, max_tokens=0`` (servers that
refuse ``max_tokens=0`` get 1 and the generated token is ignored); the context is echoed once on its own
to learn where the continuation's tokens start (greedy-match flags are not available this way).
Generation uses completions, or chat completions for chat prompts and for APIs that only offer chat
(``api="chat"``), which cannot score.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from evals.backends.base import LM, GenerationRequest, Loglikelihood, LoglikelihoodRequest, cut_at_stop
from evals.progress import progress_bar
from nexus_k.core.errors import UserError

log = logging.getLogger(__name__)


class OpenAIBackend(LM):
    """Requests to an OpenAI-compatible HTTP API through the official ``openai`` client."""

    name = "openai"

    def __init__(self, model: str, *, base_url: str | None, api_key: str | None = None,
                 api: str = "completions", concurrency: int = 8, timeout: float = 120.0,
                 max_retries: int = 3, client: Any = None) -> None:
        import openai

        self.model = model
        self.base_url = base_url
        self.api = api
        self.concurrency = concurrency
        self.client = client or openai.OpenAI(base_url=base_url, api_key=api_key or "EMPTY",
                                              timeout=timeout, max_retries=max_retries)
        self._echo_max_tokens = 0
        self._openai = openai
        self._context_lengths: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def supports_loglikelihood(self) -> bool:  # type: ignore[override]
        """Only the completions route can echo prompt log-probabilities."""
        return self.api == "completions"

    def describe(self) -> dict[str, Any]:
        """Endpoint, model name and route (never the key)."""
        return {"backend": self.name, "model": self.model, "base_url": self.base_url, "api": self.api}

    def _map(self, func, items: list, label: str) -> list:
        results: list[Any] = [None] * len(items)
        with progress_bar(len(items), label) as advance, ThreadPoolExecutor(self.concurrency) as pool:
            futures = {pool.submit(func, item): i for i, item in enumerate(items)}
            for future, i in futures.items():
                results[i] = future.result()
                advance()
        return results

    def _call(self, func, **kwargs):
        try:
            return func(**kwargs)
        except self._openai.AuthenticationError:
            raise UserError(f"the endpoint {self.base_url} refused the API key") from None
        except self._openai.NotFoundError as err:
            raise UserError(f"{self.base_url}: {err.message}") from None
        except self._openai.APIConnectionError:
            raise UserError(f"cannot reach {self.base_url}") from None
        except self._openai.APIStatusError as err:  # 5xx after the client's retries, or another refusal
            raise UserError(f"{self.base_url} answered {err.status_code}: {err.message}") from None

    # --- log-likelihood ------------------------------------------------------------------------------

    def _echo(self, prompt: str) -> list[float | None]:
        """Log-probabilities of every prompt token (the first is None), via echo."""
        kwargs = dict(model=self.model, prompt=prompt, echo=True, logprobs=1, temperature=0.0)
        response = None
        if self._echo_max_tokens == 0:
            try:
                response = self._call(self.client.completions.create, max_tokens=0, **kwargs)
            except self._openai.BadRequestError:
                log.info("server refuses max_tokens=0 with echo; asking for 1 token and ignoring it")
                self._echo_max_tokens = 1
        generated = self._echo_max_tokens
        if response is None:
            response = self._call(self.client.completions.create, max_tokens=generated, **kwargs)
        logprobs = response.choices[0].logprobs
        if logprobs is None or not logprobs.token_logprobs:
            raise UserError(f"{self.base_url} returned no prompt log-probabilities (echo + logprobs)")
        values = list(logprobs.token_logprobs)
        return values[: len(values) - generated] if generated else values

    def _context_tokens(self, context: str) -> int:
        """How many tokens the context alone has (cached: choices share their context)."""
        with self._lock:
            if context in self._context_lengths:
                return self._context_lengths[context]
        count = len(self._echo(context))
        with self._lock:
            self._context_lengths[context] = count
        return count

    def _score(self, request: LoglikelihoodRequest) -> Loglikelihood:
        # lm-evaluation-harness's split: trailing context spaces go to the continuation, and the
        # continuation is whatever follows the context's own tokens in the tokens of the whole text.
        # Token counts come from the server, so no local tokenizer is needed (text offsets are not
        # reliable for byte-level tokens that split a Hangul syllable).
        context = request.context.rstrip()
        continuation = request.context[len(context):] + request.continuation
        n_context = self._context_tokens(context) if context else 0
        values = self._echo(context + continuation)
        tail = [v for v in values[n_context:] if v is not None]
        if not tail:
            raise UserError(f"{self.base_url}: the continuation {request.continuation!r} has no tokens of its own")
        return Loglikelihood(logprob=sum(tail), is_greedy=False, n_tokens=len(tail),
                             extra={"greedy_unknown": True})

    def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[Loglikelihood]:
        """Score every request with an echoed completion."""
        if not self.supports_loglikelihood:
            raise UserError("chat APIs cannot score text; choice tasks run in generative mode")
        return self._map(self._score, requests, "log-likelihood")

    # --- generation ----------------------------------------------------------------------------------

    def _generate(self, request: GenerationRequest) -> str:
        stop = list(request.stop)[:4] or None  # the OpenAI API takes at most four stop strings
        if request.chat or self.api == "chat":
            response = self._call(self.client.chat.completions.create, model=self.model,
                                  messages=[{"role": "user", "content": request.prompt}],
                                  max_tokens=request.max_tokens, temperature=request.temperature, stop=stop)
            text = response.choices[0].message.content or ""
        else:
            response = self._call(self.client.completions.create, model=self.model, prompt=request.prompt,
                                  max_tokens=request.max_tokens, temperature=request.temperature, stop=stop)
            text = response.choices[0].text or ""
        return cut_at_stop(text, request.stop)

    def generate_until(self, requests: list[GenerationRequest]) -> list[str]:
        """One completion per request, ``concurrency`` at a time."""
        return self._map(self._generate, requests, "generate")
