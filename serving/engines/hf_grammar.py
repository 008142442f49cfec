"""Structured outputs for the transformers engine: xgrammar grammars, compiled once and cached.

JSON is compact (no free whitespace), as vLLM's xgrammar backend produces it, so that small or random models
cannot wander off into endless spaces and newlines.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from typing import Any

import xgrammar as xgr

from serving.engines.base import EngineError, StructuredOutput

_XGRAMMAR_PREFIX = re.compile(r"^\[[^\]]*\]\s*\S+:\d+:\s*")


def choice_ebnf(choices: list[str]) -> str:
    """An EBNF grammar whose language is exactly the given strings."""
    if not choices:
        raise EngineError("structured output 'choice' needs at least one string")
    alternatives = " | ".join(json.dumps(c, ensure_ascii=False) for c in choices)
    return f"root ::= {alternatives}"


class GrammarCache:
    """Compiles :class:`StructuredOutput` requests into xgrammar grammars, keeping recent ones."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: list[int], max_entries: int = 256):
        info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=stop_token_ids
        )
        self.vocab_size = vocab_size
        """Size of the model's logits (the bitmask width)."""
        self._compiler = xgr.GrammarCompiler(info)
        self._cache: OrderedDict[str, xgr.CompiledGrammar] = OrderedDict()
        self._max_entries = max_entries
        self._lock = threading.Lock()

    @staticmethod
    def _key(spec: StructuredOutput) -> str:
        return json.dumps(
            {"schema": spec.json_schema, "object": spec.json_object, "choice": spec.choice, "grammar": spec.grammar},
            sort_keys=True
        )

    def compile(self, spec: StructuredOutput) -> xgr.CompiledGrammar:
        """The compiled grammar for ``spec``; an invalid schema raises :class:`EngineError`."""
        key = self._key(spec)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        compiled = self._compile_uncached(spec)
        with self._lock:
            self._cache[key] = compiled
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        return compiled

    def _compile_uncached(self, spec: StructuredOutput) -> xgr.CompiledGrammar:
        chosen = [spec.json_schema is not None, spec.json_object, spec.choice is not None, spec.grammar is not None]
        if sum(chosen) != 1:
            raise EngineError("structured output needs exactly one of json_schema, json_object, choice, grammar")
        try:
            if spec.choice is not None:
                return self._compiler.compile_grammar(choice_ebnf(spec.choice))
            if spec.grammar is not None:
                return self._compiler.compile_grammar(spec.grammar)
            schema = spec.json_schema if spec.json_schema is not None else {"type": "object"}
            return self._compiler.compile_json_schema(json.dumps(schema), any_whitespace=False)
        except EngineError:
            raise
        except Exception as exc:  # xgrammar raises RuntimeError/ValueError with a readable message
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            # xgrammar prefixes its messages with "[time] source.cc:line: ".
            message = _XGRAMMAR_PREFIX.sub("", lines[0])
            raise EngineError(f"invalid structured output: {message}") from exc

    def matcher(self, compiled: xgr.CompiledGrammar) -> xgr.GrammarMatcher:
        """A fresh matcher (one per request) for a compiled grammar."""
        return xgr.GrammarMatcher(compiled)
