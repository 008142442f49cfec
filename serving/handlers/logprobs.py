"""Engine logprobs to OpenAI's two logprob shapes (chat and legacy completions)."""

from __future__ import annotations

from serving.engines.base import TokenLogprob
from serving.protocol import ChatTokenLogprob, CompletionLogprobs, TopLogprob
from serving.state import ServerState


def _top(state: ServerState, entry: TokenLogprob, k: int) -> list[TopLogprob]:
    ranked = sorted(entry.top.items(), key=lambda kv: kv[1], reverse=True)[:k]
    out = []
    for token_id, logprob in ranked:
        text = state.token_text(token_id)
        out.append(TopLogprob(token=text, logprob=logprob, bytes=list(text.encode("utf-8"))))
    return out


def chat_logprobs(state: ServerState, entries: list[TokenLogprob], k: int) -> list[ChatTokenLogprob]:
    """Chat-style entries: token, logprob, bytes and the k most likely alternatives."""
    out = []
    for entry in entries:
        text = state.token_text(entry.token_id)
        out.append(ChatTokenLogprob(token=text, logprob=entry.logprob, bytes=list(text.encode("utf-8")),
                                    top_logprobs=_top(state, entry, k)))
    return out


def completion_logprobs(
    state: ServerState,
    token_ids: list[int],
    entries: list[TokenLogprob | None],
    k: int,
    offset: int = 0,
) -> CompletionLogprobs:
    """Legacy-completion entries (tokens, token_logprobs, top_logprobs, text_offset) for ``token_ids``."""
    tokens, token_lps, tops, offsets = [], [], [], []
    position = offset
    for token_id, entry in zip(token_ids, entries, strict=True):
        text = state.token_text(token_id)
        tokens.append(text)
        offsets.append(position)
        position += len(text)
        if entry is None:
            token_lps.append(None)
            tops.append(None)
            continue
        token_lps.append(entry.logprob)
        top = {t.token: t.logprob for t in _top(state, entry, k)}
        top.setdefault(text, entry.logprob)
        tops.append(top)
    return CompletionLogprobs(text_offset=offsets, token_logprobs=token_lps, tokens=tokens, top_logprobs=tops)
