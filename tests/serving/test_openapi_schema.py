"""The published OpenAPI schema describes what the routes really answer (schemathesis checks it too)."""

from __future__ import annotations

import pytest

from serving.app import build_app
from serving.config import ServerSettings


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_streaming_routes_document_server_sent_events(path: str) -> None:
    # Found by fuzzing: a `stream: true` answer came back as text/event-stream, which the schema did not list.
    spec = build_app(ServerSettings(model="unused")).openapi()
    content = spec["paths"][path]["post"]["responses"]["200"]["content"]
    assert set(content) == {"application/json", "text/event-stream"}
    assert content["application/json"]["schema"]["$ref"].endswith(("ChatCompletion", "Completion"))
    # Found by fuzzing too: schemathesis checks each event against this schema (an object with `data`).
    assert content["text/event-stream"]["schema"]["required"] == ["data"]
