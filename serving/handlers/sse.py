"""Server-sent events in OpenAI's streaming format."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

DONE = "data: [DONE]\n\n"

# JSON leaves these raw, but readers that split a stream with ``str.splitlines`` (httpx's ``aiter_lines``,
# and hand-written clients built on it) take them for line ends and cut an event in two. A model can emit
# any of them, so they are written as JSON escapes, which every JSON parser reads back unchanged.
_LINE_BREAKS_JSON_KEEPS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def event_json(payload: BaseModel | dict[str, Any]) -> str:
    """A payload as one line of JSON that is safe in an SSE ``data:`` field (Korean text stays readable)."""
    if isinstance(payload, BaseModel):
        body = payload.model_dump_json(exclude_unset=False)
    else:
        body = json.dumps(payload, ensure_ascii=False)
    if "\u2028" in body or "\u2029" in body or "\x85" in body:  # rare: skip the per-character pass
        return body.translate(_LINE_BREAKS_JSON_KEEPS)
    return body


def sse(payload: BaseModel | dict[str, Any]) -> str:
    """One ``data:`` event holding a JSON object."""
    return f"data: {event_json(payload)}\n\n"
