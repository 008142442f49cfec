"""Map a generated answer to one of a task's choices (or to "out of choice")."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from evals.metrics.classification import OUT_OF_CHOICE

_LEAD = re.compile(r"^\s*\(?(?P<raw>[^.\n]*)")
_AFTER_MARK = re.compile(r"[:)]\s*(?P<choice>.*)")
_BOLD = re.compile(r"\*\*['\"]?(?P<answer>[^.\n*'\"]*)")
_ANSWER_IS = re.compile(r"답변?[은:]\s*['\"]?(?P<answer>[^.\n*'\"]*)")
_QUOTED = re.compile(r"['\"](?P<answer>[^.\n*'\"]*)")


def parse_choice_text(text: str, choices: Sequence[str], letters: Sequence[str] | None = None) -> int:
    """The choice the answer starts with (longest match first), else the only choice it mentions."""
    answer = text.strip()
    for index in sorted(range(len(choices)), key=lambda i: -len(choices[i])):
        if choices[index] and answer.startswith(choices[index]):
            return index
    mentioned = [i for i, choice in enumerate(choices) if choice and choice in answer]
    return mentioned[0] if len(mentioned) == 1 else OUT_OF_CHOICE


def parse_kobbq(text: str, options: Sequence[str], letters: Sequence[str] | None = None,
                _depth: int = 0) -> int:
    """KoBBQ's reading of a free-form answer: a letter ("A", "(B)", "c: 텍스트"), an option's text, or
    the answer after ``**``, ``답:``/``답변은`` or a quote; anything else is out of choice.

    ``options`` are the texts behind A, B, C in prompt order; letters are compared in upper case.
    """
    keys = [letter.upper() for letter in (letters or ["A", "B", "C"])]
    texts = [option.lower() for option in options]
    match = _LEAD.search(text)
    lead = match.group("raw") if match else ""
    lead = lead.replace("없습니다", "없음").replace("입니다", "").strip()
    upper = lead.upper()
    if upper and upper[0] in keys:
        after = _AFTER_MARK.search(upper)
        chosen = after.group("choice").strip() if after else ""
        if chosen:
            letter_index = keys.index(upper[0])
            if texts[letter_index] == chosen.lower():
                return letter_index
            if sum(upper.count(t.upper()) for t in texts) > 1:
                return OUT_OF_CHOICE
            return letter_index
        if sum(upper.count(key) for key in keys) == 1:
            return keys.index(upper[0])
    if lead.lower() in texts:
        return texts.index(lead.lower())
    if _depth < 4:
        for pattern in (_BOLD, _ANSWER_IS, _QUOTED):
            found = pattern.search(text)
            if found:
                return parse_kobbq(found.group("answer"), options, letters, _depth + 1)
    raw_upper = text.upper()
    marked = [i for i, key in enumerate(keys) if re.search(f"{re.escape(key)}[:)]", raw_upper)]
    return marked[0] if len(marked) == 1 else OUT_OF_CHOICE


PARSERS: dict[str, Callable[[str, list[str], dict[str, Any]], int]] = {
    "choice_text": lambda text, choices, doc: parse_choice_text(text, choices),
    # KoBBQ's choices are the letters; the option texts behind them are in the document.
    "kobbq": lambda text, choices, doc: parse_kobbq(text, doc["options"], choices),
}
"""Parser name (a task's ``answer_parser``) -> function(text, choices, document) -> choice index."""
