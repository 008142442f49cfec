"""Server-sent events in OpenAI's streaming format."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

DONE = "data: [DONE]\n\n"


def sse(payload: BaseModel | dict[str, Any]) -> str:
    """One ``data:`` event holding a JSON object."""
    if isinstance(payload, BaseModel):
        body = payload.model_dump_json(exclude_unset=False)
    else:
        body = json.dumps(payload, ensure_ascii=False)
    return f"data: {body}\n\n"
