"""The ``file_search`` tool of the Responses API, run by the server before the model answers.

The user's last message is searched (hybrid, reranked when a cross-encoder is served and the tool's
``ranking_options.ranker`` is not ``none``: ``serving.handlers.vector_stores.search``) in the tool's vector
stores, which must belong to the caller's organisation (404 otherwise, as on every vector store route). The best
chunks go into that message as numbered sources ([1], [2], ...) that the model is asked to cite, within half of
the model's context; the output gets a ``file_search_call`` item before the answer (with ``results`` when the
request includes ``file_search_call.results``), and the answer's ``output_text`` carries a ``file_citation``
annotation (file id, filename, index of the marker) for every ``[n]`` it cites. When the answer cites no
source, every file that was given to the model is annotated once, at the end of the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from anyio import to_thread

from nexus_k.core.grounded_prompt import SOURCES_INTRO as SOURCES_INTRO  # re-exported: bench.rag_qa reads it here
from nexus_k.core.grounded_prompt import sources_prompt
from serving.errors import APIError
from serving.handlers.vector_stores import not_found, search, store_of
from serving.protocol.responses import (
    CreateResponseRequest,
    FileSearchCall,
    FileSearchResult,
    FileSearchTool,
    response_id,
)
from serving.protocol.vector_stores import SearchRequest, SearchResult
from serving.state import ServerState
from serving.usage import UsageRecord

RESULTS = "file_search_call.results"
"""The ``include`` value that puts the search results into the ``file_search_call`` item."""
DEFAULT_RESULTS = 10
_MARKER = re.compile(r"\[(\d{1,2}(?:\s*,\s*\d{1,2})*)\]")


@dataclass
class FileSearchOutcome:
    """What the search found and gave the model."""

    item: FileSearchCall
    sources: list[SearchResult] = field(default_factory=list)
    """The chunks put into the prompt, in the order of their numbers."""

    def annotations(self, text: str) -> list[dict[str, Any]]:
        """``file_citation`` annotations of an answer: one per cited ``[n]``, else one per source file."""
        out = []
        for match in _MARKER.finditer(text):
            for number in re.findall(r"\d+", match.group(1)):
                if 1 <= int(number) <= len(self.sources):
                    source = self.sources[int(number) - 1]
                    out.append({"type": "file_citation", "file_id": source.file_id, "filename": source.filename,
                                "index": match.start()})
        if out or not text:
            return out
        seen: dict[str, SearchResult] = {}
        for source in self.sources:
            seen.setdefault(source.file_id, source)
        return [{"type": "file_citation", "file_id": s.file_id, "filename": s.filename, "index": len(text)}
                for s in seen.values()]


def _last_user_text(messages: list[dict[str, Any]]) -> tuple[int, str] | None:
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message["role"] == "user" and isinstance(message.get("content"), str) and message["content"].strip():
            return index, message["content"]
    return None


def _fit_sources(state: ServerState, results: list[SearchResult]) -> list[SearchResult]:
    """The results that fit in half of the model's context (the first one cut to fit if needed)."""
    budget = state.engine.max_model_len // 2
    kept = []
    for result in results:
        text = result.content[0].text
        tokens = len(state.tokenizer(text, add_special_tokens=False).input_ids) + 16
        if tokens > budget:
            if kept:
                break
            ids = state.tokenizer(text, add_special_tokens=False).input_ids[:max(budget - 16, 0)]
            result = result.model_copy(deep=True)
            result.content[0].text = state.tokenizer.decode(ids)
            tokens = budget
        kept.append(result)
        budget -= tokens
    return kept


async def run_file_search(state: ServerState, request: CreateResponseRequest, messages: list[dict[str, Any]],
                          usage: UsageRecord, owner: int | None) -> FileSearchOutcome | None:
    """Search for the request's ``file_search`` tool and put the sources into ``messages`` (in place); None when
    the request has no such tool."""
    tools = [t for t in request.tools or [] if isinstance(t, FileSearchTool)]
    if not tools:
        return None
    if len(tools) > 1:
        raise APIError("Give at most one file_search tool (it can name several vector stores).", param="tools")
    tool = tools[0]
    records = []
    for store_id in tool.vector_store_ids:
        usage.resources.append(store_id)
        record = await to_thread.run_sync(store_of(state).get, store_id, owner)
        if record is None:
            raise not_found(store_id)
        records.append(record)
    found = _last_user_text(messages)
    item = FileSearchCall(id=response_id("fs"), status="completed", queries=[found[1]] if found else [])
    if found is None:
        return FileSearchOutcome(item)
    index, query = found
    body = SearchRequest(query=query, filters=tool.filters, max_num_results=tool.max_num_results or DEFAULT_RESULTS,
                         ranking_options=tool.ranking_options)
    results, _ = await search(state, tool.vector_store_ids, body, usage, owner, records)
    sources = _fit_sources(state, results)
    if RESULTS in (request.include or []):
        item.results = [FileSearchResult(file_id=r.file_id, filename=r.filename, score=r.score,
                                         text=r.content[0].text, attributes=r.attributes) for r in results]
    if sources:
        prompt = sources_prompt(query, [(s.filename, s.content[0].text) for s in sources])
        messages[index] = {**messages[index], "content": prompt}
    return FileSearchOutcome(item, sources)


def search_events(event: Any, outcome: FileSearchOutcome, index: int) -> list[str]:
    """The streamed events of the ``file_search_call`` item at output ``index``."""
    started = outcome.item.model_copy(update={"status": "in_progress", "results": None})
    where = {"output_index": index, "item_id": outcome.item.id}
    return [event("response.output_item.added", output_index=index, item=started),
            event("response.file_search_call.in_progress", **where),
            event("response.file_search_call.searching", **where),
            event("response.file_search_call.completed", **where),
            event("response.output_item.done", output_index=index, item=outcome.item)]
