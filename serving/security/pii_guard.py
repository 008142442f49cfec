"""The live personal-data guard, per organisation (``nexus-k keys update --org NAME --pii-guard MODE``).

``mask``: personal data in the prompt is replaced by placeholders (``[RRN]``, ``[PHONE]`` ...) before the model
sees it, and in the answer before the client does, streamed answers included. ``block``: a prompt with personal
data is refused with ``400 pii_detected`` naming the kinds found (never the values); answers are masked. ``off``:
nothing is scanned. The counts per kind go into the request's audit row. Handlers call these functions on the
validated request, where the text is; the mode comes from the usage record, set from the caller's key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from nexus_k.core.pii import PII_KINDS, StreamRedactor, count_spans, find_pii, merge_counts, replace_spans
from serving.errors import APIError
from serving.usage import UsageRecord

KIND_NAMES = {
    "email": "e-mail address",
    "rrn": "resident registration number",
    "arn": "alien registration number",
    "driver_license": "driver's licence number",
    "passport": "passport number",
    "card": "card number",
    "phone": "phone number",
    "account": "bank account number",
}


def guard_prompt_texts(texts: Sequence[str], usage: UsageRecord, param: str) -> list[str]:
    """``texts`` as the model may see them: masked, unchanged, or a ``pii_detected`` error (block mode)."""
    if usage.pii_guard == "off":
        return list(texts)
    found = dict.fromkeys(PII_KINDS, 0)
    out = []
    for text in texts:
        spans = find_pii(text)
        merge_counts(found, count_spans(spans))
        out.append(replace_spans(text, spans) if spans else text)
    merge_counts(usage.pii_counts, {k: n for k, n in found.items() if n})
    kinds = [k for k in PII_KINDS if found[k]]
    if kinds and usage.pii_guard == "block":
        names = ", ".join(f"{KIND_NAMES[k]} ({k})" for k in kinds)
        raise APIError(f"The request contains personal data ({names}); this organisation's policy blocks it. "
                       "Remove it and try again.", 400, "invalid_request_error", param, "pii_detected")
    return out


def guard_chat_messages(messages: list[Any], usage: UsageRecord) -> None:
    """Guard every text of a chat request's messages in place (content strings and text parts)."""
    if usage.pii_guard == "off":
        return
    slots: list[tuple[Any, str]] = []  # (object, attribute) holding each text
    for message in messages:
        content = getattr(message, "content", None)
        if isinstance(content, str):
            slots.append((message, "content"))
        elif isinstance(content, list):
            slots += [(part, "text") for part in content if isinstance(getattr(part, "text", None), str)]
    guarded = guard_prompt_texts([getattr(obj, attr) for obj, attr in slots], usage, "messages")
    for (obj, attr), text in zip(slots, guarded, strict=True):
        setattr(obj, attr, text)


def guard_completion_prompt(prompt: Any, usage: UsageRecord, decode: Callable[[list[int]], str]) -> Any:
    """A completions ``prompt`` (text, texts, token ids or lists of them) guarded; token-id prompts that held
    personal data come back as masked text."""
    if usage.pii_guard == "off":
        return prompt
    single = isinstance(prompt, str) or (bool(prompt) and isinstance(prompt[0], int))
    items = [prompt] if single else list(prompt)
    texts = [item if isinstance(item, str) else decode(item) for item in items]
    guarded = guard_prompt_texts(texts, usage, "prompt")
    out = [new if isinstance(item, str) or new != old else item for item, old, new in zip(items, texts, guarded,
                                                                                         strict=True)]
    return out[0] if single else out


def refuse_answer_logprobs(usage: UsageRecord, wanted: bool, param: str) -> None:
    """Token logprobs would show the answer's tokens unmasked: refused while the guard is on."""
    if wanted and usage.pii_guard != "off":
        raise APIError("Token logprobs of the answer are not available while this organisation's PII guard is on "
                       "(they would show personal data the guard masks).", 400, "invalid_request_error", param,
                       "pii_guard_logprobs")


def guard_reply(text: str | None, usage: UsageRecord) -> str | None:
    """A whole answer with personal data masked (``mask`` and ``block`` modes), counted."""
    if usage.pii_guard == "off" or not text:
        return text
    spans = find_pii(text)
    if not spans:
        return text
    merge_counts(usage.pii_counts, {k: n for k, n in count_spans(spans).items() if n})
    return replace_spans(text, spans)


class ReplyGuard:
    """Masks one streamed answer across chunk boundaries (a pass-through when the guard is off)."""

    def __init__(self, usage: UsageRecord) -> None:
        self.usage = usage
        self.redactor = StreamRedactor() if usage.pii_guard != "off" else None

    def feed(self, piece: str) -> str:
        """What may be sent of the answer so far."""
        return piece if self.redactor is None else self.redactor.feed(piece)

    def flush(self) -> str:
        """The held-back rest, at the end of the answer (counts go to the usage record)."""
        if self.redactor is None:
            return ""
        rest = self.redactor.flush()
        merge_counts(self.usage.pii_counts, {k: n for k, n in self.redactor.counts.items() if n})
        self.redactor.counts = dict.fromkeys(PII_KINDS, 0)  # flushing again counts only what came since
        return rest
