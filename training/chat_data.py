"""Chat data in OpenAI ``messages`` JSONL: validation (all problems reported at once, with line
numbers), personal-data redaction, and tokenization through the model's chat template with labels on
assistant tokens only."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nexus_k.core.chat_templates import content_text, render_chat, resolve_chat_template
from nexus_k.core.errors import UserError
from nexus_k.core.pii import PII_KINDS, merge_counts, redact

log = logging.getLogger(__name__)

ALLOWED_ROLES = ("system", "user", "assistant")
IGNORE_INDEX = -100
_MAX_LISTED = 8


@dataclass
class Conversation:
    """One validated conversation and the JSONL line it came from."""

    line: int
    """1-based line number in the source file."""
    messages: list[dict[str, str]]
    """``{"role", "content"}`` turns with plain-string content."""


@dataclass
class EncodedConversation:
    """Token ids of a rendered conversation and the labels (``-100`` outside assistant turns)."""

    line: int
    """Source line number."""
    input_ids: list[int]
    """Token ids of the whole conversation rendered through the chat template."""
    labels: list[int]
    """Same length as ``input_ids``; the token id on assistant tokens, -100 elsewhere."""


@dataclass
class ChatDataStats:
    """What went into training, for the report and model card."""

    conversations: int = 0
    """Conversations after validation."""
    turns: int = 0
    """Messages across all conversations."""
    assistant_turns: int = 0
    """Assistant messages (the ones the loss sees)."""
    characters: int = 0
    """Characters of message content."""
    tokens: int = 0
    """Tokens after the chat template."""
    assistant_tokens: int = 0
    """Tokens that carry a label."""
    max_tokens: int = 0
    """Longest conversation in tokens."""
    redactions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PII_KINDS, 0))
    """Personal data replaced, per kind."""
    conversations_redacted: int = 0
    """Conversations in which anything was redacted."""


def _check_record(record: Any) -> tuple[list[dict[str, str]] | None, str | None]:
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        return None, 'expected an object with a "messages" list'
    messages = record["messages"]
    if not messages:
        return None, "empty messages list"
    cleaned = []
    for i, msg in enumerate(messages, start=1):
        if not isinstance(msg, dict):
            return None, f"message {i} is not an object"
        role = msg.get("role")
        if role not in ALLOWED_ROLES:
            return None, f"message {i}: unknown role {role!r} (allowed: {', '.join(ALLOWED_ROLES)})"
        text = content_text(msg.get("content"))
        if text is None:
            return None, f"message {i} ({role}): content must be a string or a list of text parts"
        if not text.strip():
            return None, f"message {i} ({role}): empty turn"
        cleaned.append({"role": role, "content": text})
    if not any(m["role"] == "assistant" for m in cleaned):
        return None, "no assistant turn to learn from"
    return cleaned, None


def _raise_problems(path: Path, problems: list[tuple[int, str]]) -> None:
    listed = "; ".join(f"line {n}: {msg}" for n, msg in problems[:_MAX_LISTED])
    more = f"; and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    raise UserError(f"{path}: {len(problems)} problem(s), nothing was trained: {listed}{more}")


def read_conversations(path: str | Path) -> list[Conversation]:
    """Read and validate a ``messages`` JSONL file; every problem is reported in one UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    conversations: list[Conversation] = []
    problems: list[tuple[int, str]] = []
    with path.open(encoding="utf-8", errors="strict") as fh:
        try:
            lines = list(fh)
        except UnicodeDecodeError as err:
            raise UserError(f"{path}: not UTF-8 text ({err})") from err
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as err:
            problems.append((number, f"bad JSON ({err.msg} at column {err.colno})"))
            continue
        messages, problem = _check_record(record)
        if problem:
            problems.append((number, problem))
        else:
            conversations.append(Conversation(line=number, messages=messages or []))
    if problems:
        _raise_problems(path, problems)
    if not conversations:
        raise UserError(f"{path}: no conversations found")
    return conversations


def redact_conversations(conversations: list[Conversation], stats: ChatDataStats) -> None:
    """Replace personal data in every message (in place) and add the counts to ``stats``."""
    for conv in conversations:
        touched = False
        for msg in conv.messages:
            text, counts = redact(msg["content"])
            if text != msg["content"]:
                touched = True
                msg["content"] = text
            merge_counts(stats.redactions, counts)
        stats.conversations_redacted += touched


def _render(tokenizer: Any, template: str, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    if not messages:
        return ""
    return render_chat(tokenizer, messages, add_generation_prompt=generation_prompt, chat_template=template)


def encode_conversation(tokenizer: Any, template: str, conv: Conversation) -> EncodedConversation:
    """Render ``conv`` through the chat template; label the characters each assistant turn adds."""
    msgs = conv.messages
    full = _render(tokenizer, template, msgs, generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for i, msg in enumerate(msgs):
        if msg["role"] != "assistant":
            continue
        prefix = _render(tokenizer, template, msgs[:i], generation_prompt=True)
        upto = _render(tokenizer, template, msgs[: i + 1], generation_prompt=False)
        if not (full.startswith(upto) and upto.startswith(prefix)):
            raise UserError(
                f"line {conv.line}: the chat template does not render conversations prefix by prefix, "
                "so assistant turns cannot be located"
            )
        spans.append((len(prefix), len(upto)))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = enc["input_ids"]
    labels = [
        tok if any(lo <= start < hi for lo, hi in spans) else IGNORE_INDEX
        for tok, (start, _end) in zip(ids, enc["offset_mapping"], strict=True)
    ]
    return EncodedConversation(line=conv.line, input_ids=ids, labels=labels)


def encode_all(
    tokenizer: Any, conversations: list[Conversation], max_length: int, stats: ChatDataStats, path: str | Path
) -> list[EncodedConversation]:
    """Encode every conversation; over-long ones are reported together (with line numbers) as an error."""
    template = resolve_chat_template(tokenizer)
    encoded, too_long = [], []
    for conv in conversations:
        item = encode_conversation(tokenizer, template, conv)
        if len(item.input_ids) > max_length:
            too_long.append((conv.line, f"{len(item.input_ids)} tokens, over the limit of {max_length}"))
            continue
        if not any(label != IGNORE_INDEX for label in item.labels[1:]):
            too_long.append((conv.line, "no assistant tokens after rendering"))
            continue
        encoded.append(item)
        stats.conversations += 1
        stats.turns += len(conv.messages)
        stats.assistant_turns += sum(m["role"] == "assistant" for m in conv.messages)
        stats.characters += sum(len(m["content"]) for m in conv.messages)
        stats.tokens += len(item.input_ids)
        stats.assistant_tokens += sum(label != IGNORE_INDEX for label in item.labels)
        stats.max_tokens = max(stats.max_tokens, len(item.input_ids))
    if too_long:
        _raise_problems(Path(path), too_long)
    return encoded


def split_heldout(
    items: list[EncodedConversation], fraction: float, seed: int
) -> tuple[list[EncodedConversation], list[EncodedConversation]]:
    """Set aside ``fraction`` of the conversations (at least one when fraction > 0), chosen by ``seed``."""
    if fraction <= 0 or len(items) < 2:
        return items, []
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_held = min(len(items) - 1, max(1, round(len(items) * fraction)))
    held = set(order[:n_held])
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]
