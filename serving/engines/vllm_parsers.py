"""vLLM's own tool-call and reasoning parsers, chosen by vLLM's names (``--tool-call-parser``,
``--reasoning-parser``), for both engines: generated text in, (reasoning, content, tool calls) out.

With this module the server writes no parser of its own for any model family vLLM knows; the only other
place vLLM is imported is ``serving/engines/vllm.py``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from serving.engines.base import EngineError


def _pick(manager: Any, name: str, what: str) -> Any:
    try:
        return manager.get_tool_parser(name) if what == "tool-call" else manager.get_reasoning_parser(name)
    except KeyError:
        names = manager.list_registered()
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; vLLM has {', '.join(names)}"
        raise EngineError(f"--{what}-parser {name!r} is not one of vLLM's {what} parsers{hint}") from None


def check_parser_names(tool_call_parser: str, reasoning_parser: str | None) -> None:
    """Both names must be vLLM's; an unknown one is an error naming the closest."""
    from vllm.reasoning import ReasoningParserManager
    from vllm.tool_parsers import ToolParserManager

    _pick(ToolParserManager, tool_call_parser, "tool-call")
    if reasoning_parser:
        _pick(ReasoningParserManager, reasoning_parser, "reasoning")


@dataclass
class ToolCallText:
    """One parsed call: the function name and its arguments as a JSON string."""

    name: str
    arguments: str


class OutputParsers:
    """The parsers one server uses, built once on the model's tokenizer."""

    def __init__(self, tokenizer: Any, tool_call_parser: str = "hermes", reasoning_parser: str | None = None) -> None:
        from vllm.reasoning import ReasoningParserManager
        from vllm.tool_parsers import ToolParserManager

        self.tokenizer = tokenizer
        self.tool_call_parser = tool_call_parser
        self._tool_cls = _pick(ToolParserManager, tool_call_parser, "tool-call")
        self._reasoning_cls = _pick(ReasoningParserManager, reasoning_parser, "reasoning") if reasoning_parser \
            else None
        if self._reasoning_cls is not None:
            try:
                self._reasoning_cls(tokenizer)
            except (RuntimeError, ValueError, KeyError) as err:  # e.g. the vocabulary lacks <think>
                raise EngineError(f"--reasoning-parser {reasoning_parser}: {err}") from None

    @property
    def reasons(self) -> bool:
        """Whether a reasoning parser is configured."""
        return self._reasoning_cls is not None

    @staticmethod
    def _request(tools: list[dict[str, Any]] | None) -> Any:
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        return ChatCompletionRequest(model="nexus-k", messages=[{"role": "user", "content": ""}], tools=tools)

    def split_reasoning(self, text: str) -> tuple[str | None, str | None]:
        """(reasoning, content) of a whole reply."""
        if self._reasoning_cls is None:
            return None, text
        return self._reasoning_cls(self.tokenizer).extract_reasoning(text, self._request(None))

    def reasoning_tokens(self, token_ids: Sequence[int]) -> int:
        """How many of a reply's tokens were thinking."""
        if self._reasoning_cls is None:
            return 0
        counted = self._reasoning_cls(self.tokenizer).count_reasoning_tokens(token_ids)
        if counted:
            return int(counted)
        reasoning, _ = self.split_reasoning(self.tokenizer.decode(list(token_ids)))
        return len(self.tokenizer(reasoning, add_special_tokens=False).input_ids) if reasoning else 0

    def reasoning_stream(self) -> ReasoningStream:
        """A stateful splitter for one streamed reply."""
        assert self._reasoning_cls is not None
        return ReasoningStream(self._reasoning_cls(self.tokenizer))

    def extract_tool_calls(self, text: str, tools: list[dict[str, Any]]) -> tuple[str | None, list[ToolCallText]]:
        """(content, calls) of a whole reply; text that is no well-formed call stays content."""
        parser = self._tool_cls(self.tokenizer, tools) if _takes_tools(self._tool_cls) else self._tool_cls(
            self.tokenizer)
        found = parser.extract_tool_calls(text, self._request(tools))
        if not found.tools_called:
            return text, []
        calls = [ToolCallText(c.function.name, c.function.arguments if isinstance(c.function.arguments, str)
                              else json.dumps(c.function.arguments, ensure_ascii=False)) for c in found.tool_calls]
        content = found.content.strip() if found.content else None
        return content or None, calls


def _takes_tools(cls: type) -> bool:
    import inspect

    return "tools" in inspect.signature(cls.__init__).parameters


class ReasoningStream:
    """Feeds a vLLM reasoning parser delta by delta; returns the (reasoning, content) pieces of each."""

    def __init__(self, parser: Any) -> None:
        self.parser = parser
        self.text = ""
        self.token_ids: list[int] = []

    def feed(self, delta_text: str, delta_ids: Sequence[int]) -> tuple[str, str]:
        """The thinking and the answer text in this delta."""
        previous_text, previous_ids = self.text, list(self.token_ids)
        self.text += delta_text
        self.token_ids.extend(delta_ids)
        if not delta_text:
            return "", ""
        message = self.parser.extract_reasoning_streaming(previous_text, self.text, delta_text, previous_ids,
                                                          self.token_ids, list(delta_ids))
        if message is None:
            return "", ""
        return message.reasoning or "", message.content or ""
