"""Chat templates shared by every area: the project's ChatML (with tools), its special tokens, and the one
way a conversation becomes prompt token ids."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

# ChatML with tool support: tools are listed in the system turn, tool calls are JSON in <tool_call> tags
# (the Hermes/Qwen convention, which serving/chat.py parses back into OpenAI tool_calls).
CHATML_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n"
    "{% if messages[0].role == 'system' %}{{ messages[0].content }}\n\n{% endif %}"
    "You may call these functions. Answer with <tool_call>{\"name\": ..., \"arguments\": {...}}</tool_call>.\n"
    "<tools>{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}\n</tools><|im_end|>\n"
    "{% elif messages[0].role == 'system' %}<|im_start|>system\n{{ messages[0].content }}<|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if message.role == 'system' %}"
    "{% elif message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant\n"
    "{% for call in message.tool_calls %}<tool_call>{\"name\": \"{{ call.function.name }}\", "
    "\"arguments\": {{ call.function.arguments if call.function.arguments is string "
    "else call.function.arguments | tojson }}}</tool_call>{% endfor %}<|im_end|>\n"
    "{% elif message.role == 'tool' %}<|im_start|>tool\n{{ message.content }}<|im_end|>\n"
    "{% else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]


def content_text(content: Any) -> str | None:
    """Plain text of an OpenAI message ``content``: a string, or its text parts joined (dicts or objects
    with ``type``/``text``); None when it is None or not made of text parts."""
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    parts = []
    for part in content:
        kind, text = (part.get("type"), part.get("text")) if isinstance(part, dict) else (
            getattr(part, "type", None), getattr(part, "text", None))
        if kind != "text" or not isinstance(text, str):
            return None
        parts.append(text)
    return "".join(parts)


def resolve_chat_template(tokenizer: Any) -> str:
    """The tokenizer's chat template, or ChatML (with a warning) for base models that have none."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default") or next(iter(template.values()))
    if template:
        return template
    log.warning("the tokenizer has no chat template; using ChatML (<|im_start|>role ... <|im_end|>)")
    return CHATML_TEMPLATE


def render_chat(tokenizer: Any, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
                add_generation_prompt: bool = True, chat_template: str | None = None,
                template_kwargs: dict[str, Any] | None = None) -> str:
    """The conversation rendered as text through ``chat_template`` (default: the tokenizer's own);
    ``template_kwargs`` are extra template variables (``enable_thinking``...)."""
    return tokenizer.apply_chat_template(messages, tools=tools or None, chat_template=chat_template,
                                         tokenize=False, add_generation_prompt=add_generation_prompt,
                                         **(template_kwargs or {}))


def chat_to_ids(tokenizer: Any, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
                add_generation_prompt: bool = True, chat_template: str | None = None,
                template_kwargs: dict[str, Any] | None = None) -> list[int]:
    """Prompt token ids of a conversation. The template already writes BOS and the other specials, so the
    tokenizer adds none."""
    text = render_chat(tokenizer, messages, tools=tools, add_generation_prompt=add_generation_prompt,
                       chat_template=chat_template, template_kwargs=template_kwargs)
    return list(tokenizer(text, add_special_tokens=False).input_ids)
