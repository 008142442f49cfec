"""A batch's input file checked line by line before anything runs: JSON, ``method``, ``url``, unique
``custom_id``, a model this server serves. Valid lines are stored in chunks as the file streams by."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from serving.errors import APIError

MAX_ERRORS = 1000
"""Errors reported per batch (the file may hold millions of lines)."""
CHUNK = 500
"""Lines stored per transaction."""
MAX_CUSTOM_ID = 512


def _error(code: str, message: str, line: int | None, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def check_line(raw: bytes, line_no: int, endpoint: str, check_model: Callable[[str | None], object],
               seen: set[str]) -> tuple[tuple[int, str, dict] | None, dict[str, Any] | None]:
    """One input line as ``(line_no, custom_id, body)``, or the error that names it."""
    try:
        item = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, _error("invalid_json_line", f"Line {line_no} is not valid JSON.", line_no)
    if not isinstance(item, dict):
        return None, _error("invalid_json_line", f"Line {line_no} is not a JSON object.", line_no)
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
        return None, _error("missing_custom_id", f"Line {line_no}: custom_id must be a non-empty string of at most "
                            f"{MAX_CUSTOM_ID} characters.", line_no, "custom_id")
    if item.get("method") != "POST":
        return None, _error("invalid_method", f"Line {line_no}: method must be POST.", line_no, "method")
    if item.get("url") != endpoint:
        return None, _error("invalid_url", f"Line {line_no}: url {item.get('url')!r} does not match the batch's "
                            f"endpoint {endpoint}.", line_no, "url")
    body = item.get("body")
    if not isinstance(body, dict):
        return None, _error("invalid_body", f"Line {line_no}: body must be a JSON object.", line_no, "body")
    if body.get("stream"):
        return None, _error("invalid_body", f"Line {line_no}: streaming is not available in a batch.", line_no,
                            "body.stream")
    if custom_id in seen:
        return None, _error("duplicate_custom_id", f"Line {line_no}: custom_id {custom_id!r} is used twice.",
                            line_no, "custom_id")
    seen.add(custom_id)
    model = body.get("model")
    try:
        check_model(model if isinstance(model, str) else None)
    except APIError as err:
        return None, _error(err.code or "invalid_model", f"Line {line_no}: {err.message}", line_no, "body.model")
    return (line_no, custom_id, body), None


def validate_file(path: Path, endpoint: str, check_model: Callable[[str | None], object],
                  store_lines: Callable[[list[tuple[int, str, dict]]], None],
                  renew: Callable[[], None] = lambda: None) -> tuple[int, list[dict[str, Any]]]:
    """Stream ``path``; store valid lines in chunks until the first error; the number of lines and the errors
    (empty when the batch may run)."""
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    chunk: list[tuple[int, str, dict]] = []
    total = 0
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            line, error = check_line(raw, line_no, endpoint, check_model, seen)
            if error is not None:
                if len(errors) < MAX_ERRORS:
                    errors.append(error)
                continue
            total += 1
            if not errors:
                chunk.append(line)  # type: ignore[arg-type]
                if len(chunk) >= CHUNK:
                    store_lines(chunk)
                    renew()
                    chunk = []
    if total == 0 and not errors:
        errors.append(_error("empty_file", "The input file holds no requests.", None))
    if chunk and not errors:
        store_lines(chunk)
    return total, errors
