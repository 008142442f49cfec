"""Incremental detokenisation and stop-string detection for the transformers engine.

Text is produced token by token without re-decoding the whole output each step: a short window of ids is
decoded and compared with the same window minus the newest token (the approach vLLM's detokenizer uses).
Text that ends in an incomplete UTF-8 character (decoded as U+FFFD) is held back until the next token
completes it. When stop strings are set, the last ``longest stop - 1`` characters are also held back, so a
stop string that arrives split over several tokens never leaks into the streamed text.
"""

from __future__ import annotations

from typing import Any

# Prompt ids decoded together with the first output ids, so that tokenizers which drop a leading space
# at the start of a decode (SentencePiece) still produce the right first word.
_PROMPT_CONTEXT_TOKENS = 5


class IncrementalDetokenizer:
    """Turns a growing list of output token ids into text, one delta per step."""

    def __init__(self, tokenizer: Any, prompt_ids: list[int], stop: list[str] | None = None) -> None:
        self._tokenizer = tokenizer
        context = list(prompt_ids[-_PROMPT_CONTEXT_TOKENS:])
        self._ids: list[int] = context
        self._prefix_offset = 0
        self._read_offset = len(context)
        self._stop = [s for s in (stop or []) if s]
        self._holdback = max((len(s) for s in self._stop), default=1) - 1
        self.text = ""
        """All output text so far (cut at the stop string once one is found)."""
        self._emitted = 0

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def add_token(self, token_id: int) -> str | None:
        """Append one token; returns the stop string when this token completed one (text is then cut)."""
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        if len(new_text) <= len(prefix_text) or new_text.endswith("\ufffd"):
            return None
        piece = new_text[len(prefix_text) :]
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        start = max(0, len(self.text) - self._holdback)
        self.text += piece
        found = [(at, stop) for stop in self._stop if (at := self.text.find(stop, start)) != -1]
        if not found:
            return None
        at, stop = min(found)
        self.text = self.text[:at]
        return stop

    def _flush_incomplete(self) -> None:
        """At the end, bytes that never completed a character are shown as they decode (U+FFFD)."""
        new_text = self._decode(self._ids[self._prefix_offset :])
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        if len(new_text) > len(prefix_text):
            self.text += new_text[len(prefix_text) :]
        self._prefix_offset = self._read_offset = len(self._ids)

    def take_text(self, final: bool, stopped_by_string: bool = False) -> str:
        """Text not handed out yet; while unfinished, keeps back what could start a stop string."""
        if final and not stopped_by_string:
            self._flush_incomplete()
        end = len(self.text) if final or not self._stop else max(self._emitted, len(self.text) - self._holdback)
        piece = self.text[self._emitted : end]
        self._emitted = end
        return piece
