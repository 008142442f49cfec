"""Korean-aware chunking of extracted text, sized in tokens of the embedding model's tokenizer.

The text (one paragraph, heading or table row per line) becomes units: headings (``# ...``, 제N편/장/절/관/조,
``1.``, ``가.``, ``(1)``, ``①`` lines that are short and not a sentence), tables (whole when they take at most
three quarters of a chunk, else row by row), and the
sentences of other lines (Kiwi's ``split_into_sents``; a bare item marker such as ``1.`` stays with its
sentence). Units are packed greedily into chunks of at most ``max_tokens`` tokens:

- a chunk never ends with a heading: the heading moves to the next chunk, with the text it introduces;
- a chunk that starts inside a section begins with that section's headings (제3장 > 제5조(연차휴가)), when they
  take at most a quarter of the chunk, so that every chunk says where it comes from;
- a new article or higher heading starts a new chunk once the current one is half full (no overlap across it);
- consecutive chunks otherwise overlap by whole units of at most ``overlap_tokens`` tokens (OpenAI's
  ``chunk_overlap_tokens``); a single unit longer than a chunk is cut on token boundaries, with that overlap.

Token counts are those of each unit alone (the joining newlines and spaces are not counted), so a chunk may
differ from ``max_tokens`` by a few tokens where the tokenizer merges across unit boundaries.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

AUTO_MAX_TOKENS = 800
AUTO_OVERLAP_TOKENS = 400
"""OpenAI's ``auto`` chunking strategy."""

_MARKDOWN = re.compile(r"^(#{1,6})\s+\S")
_STRUCTURE = [
    (re.compile(r"^제\s*\d+\s*편"), 1),
    (re.compile(r"^제\s*\d+\s*장"), 1),
    (re.compile(r"^제\s*\d+\s*절"), 2),
    (re.compile(r"^제\s*\d+\s*관"), 2),
    (re.compile(r"^제\s*\d+\s*조(의\s*\d+)?"), 3),
    (re.compile(r"^(\d{1,3}|[IVX]{1,5})[.)]\s*\S"), 4),
    (re.compile(r"^[가-하][.)]\s*\S"), 5),
    (re.compile(r"^(\(\d{1,3}\)|[①-⑳]|\([가-하]\))\s*\S"), 6),
]
_MARKER_ONLY = re.compile(r"^\s*(제\s*\d+\s*[편장절관조](의\s*\d+)?|\d{1,3}[.)]|[가-하][.)]|\(\d{1,3}\)|[①-⑳])\s*$")
_SENTENCE_END = re.compile(r"(다|요|음|함|됨|임|니다|까)[.?!]?\s*$|[.?!。]\s*$")
ARTICLE_LEVEL = 3
"""Headings at this level (조, article) or above start a new chunk once the current one is half full."""


def heading_level(line: str) -> int | None:
    """The level of a heading line (1: 편/장 or ``#``), or None for a line of text."""
    mark = _MARKDOWN.match(line)
    if mark:
        return len(mark.group(1))
    stripped = line.strip()
    if len(stripped) > 60 or _SENTENCE_END.search(stripped) or " | " in stripped:
        return None
    for pattern, level in _STRUCTURE:
        if pattern.match(stripped):
            return level
    return None


def structure_level(line: str) -> int | None:
    """The level of the article or item number a line starts with, heading or not (제5조 ... : 3)."""
    stripped = line.strip()
    for pattern, level in _STRUCTURE[:5]:
        if pattern.match(stripped):
            return level
    return None


@dataclass
class Unit:
    """A piece that is never cut (unless it alone exceeds a chunk): a heading, a table row or a sentence."""

    text: str
    heading: int | None = None
    """Heading level, or None."""
    line_end: bool = True
    """Whether the unit ends its line (joined to the next by a newline, else by a space)."""
    path: tuple[str, ...] = ()
    """The headings above this unit (outermost first)."""
    article: bool = False
    """Whether the unit opens an article or a higher division (제N조 ...), heading or not."""
    table: bool = False
    """Whether the unit is a table row (or, after :func:`whole_tables`, a whole table)."""
    tokens: int = 0


@lru_cache(maxsize=1)
def _kiwi() -> tuple[Any, threading.Lock]:
    from kiwipiepy import Kiwi

    return Kiwi(num_workers=1), threading.Lock()


def sentences(line: str) -> list[str]:
    """The sentences of one line (Kiwi); short lines are one sentence, bare markers join what follows."""
    if len(line) < 80:
        return [line]
    kiwi, lock = _kiwi()
    with lock:
        parts = [s.text.strip() for s in kiwi.split_into_sents(line)]
    out: list[str] = []
    carry = ""
    for part in parts:
        if not part:
            continue
        if _MARKER_ONLY.match(part) or len(part) < 4:
            carry += part + " "
            continue
        out.append(carry + part)
        carry = ""
    if carry:
        if out:
            out[-1] += " " + carry.strip()
        else:
            out.append(carry.strip())
    return out or [line]


def units_of(text: str) -> list[Unit]:
    """The units of extracted text, each knowing the headings above it."""
    units: list[Unit] = []
    path: list[tuple[int, str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        level = heading_level(line)
        if level is not None:
            path = [(lvl, txt) for lvl, txt in path if lvl < level]
            units.append(Unit(line, heading=level, path=tuple(t for _, t in path), article=level <= ARTICLE_LEVEL))
            path.append((level, line))
            continue
        opens = structure_level(line)
        if opens is not None and opens <= ARTICLE_LEVEL:
            # "제5조(연차휴가) 직원은 ..." is both the article's heading and its first sentence.
            path = [(lvl, txt) for lvl, txt in path if lvl < opens]
        context = tuple(t for _, t in path)
        table = " | " in line
        pieces = [line] if table else sentences(line)
        for index, piece in enumerate(pieces):
            units.append(Unit(piece, line_end=index == len(pieces) - 1, path=context, table=table,
                              article=index == 0 and opens is not None and opens <= ARTICLE_LEVEL))
    return units


def whole_tables(units: list[Unit], limit: int) -> list[Unit]:
    """Consecutive table rows merged into one unit when the table takes at most ``limit`` tokens (then no chunk
    boundary falls inside it); larger tables stay row by row."""
    out: list[Unit] = []
    rows: list[Unit] = []

    def flush() -> None:
        if len(rows) > 1 and sum(r.tokens for r in rows) <= limit:
            out.append(Unit("\n".join(r.text for r in rows), path=rows[0].path, table=True,
                            tokens=sum(r.tokens for r in rows)))
        else:
            out.extend(rows)
        rows.clear()

    for unit in units:
        if unit.table:
            rows.append(unit)
            continue
        flush()
        out.append(unit)
    flush()
    return out


@dataclass
class _Chunk:
    units: list[Unit] = field(default_factory=list)
    prefix: list[str] = field(default_factory=list)
    prefix_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.prefix_tokens + sum(u.tokens for u in self.units)

    def text(self) -> str:
        out = "".join(line + "\n" for line in self.prefix)
        for index, unit in enumerate(self.units):
            out += unit.text
            if index < len(self.units) - 1:
                out += "\n" if unit.line_end else " "
        return out


class Chunker:
    """Chunks text by tokens of ``tokenizer`` (a Hugging Face tokenizer)."""

    def __init__(self, tokenizer: Any, max_tokens: int = AUTO_MAX_TOKENS,
                 overlap_tokens: int = AUTO_OVERLAP_TOKENS) -> None:
        if max_tokens < 1 or overlap_tokens < 0 or overlap_tokens > max_tokens // 2:
            raise ValueError("need max_tokens >= 1 and 0 <= overlap_tokens <= max_tokens / 2")
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens
        self._heading_tokens: dict[str, int] = {}

    def _count(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False).input_ids]

    def chunks(self, text: str) -> list[str]:
        """The chunks of ``text``, in order."""
        units = units_of(text)
        for unit, count in zip(units, self._count([u.text for u in units]), strict=True):
            unit.tokens = count
            if unit.heading is not None:
                self._heading_tokens[unit.text] = count
        units = whole_tables(units, self.max_tokens * 3 // 4)
        out: list[str] = []
        current = self._start(units[0]) if units else _Chunk()
        for unit in units:
            if unit.tokens > self.max_tokens - current.prefix_tokens:
                if current.units:
                    out.append(current.text())
                out += self._cut(unit)
                current = _Chunk()
                continue
            section_break = unit.article and current.tokens * 2 >= self.max_tokens
            if current.units and (section_break or current.tokens + unit.tokens > self.max_tokens):
                current = self._next(current, unit, out, overlap=not section_break)
            elif not current.units:
                current = self._start(unit)
            current.units.append(unit)
        if any(u.heading is None for u in current.units) or (current.units and not out):
            out.append(current.text())
        return out

    def _start(self, unit: Unit) -> _Chunk:
        """An empty chunk whose first unit is ``unit``: with its section's headings when they fit."""
        if not unit.path or (unit.heading is not None and unit.heading <= 1):
            return _Chunk()
        tokens = sum(self._heading_tokens.get(h) or self._count([h])[0] for h in unit.path)
        if tokens > self.max_tokens // 4:
            return _Chunk()
        return _Chunk(prefix=list(unit.path), prefix_tokens=tokens)

    def _next(self, current: _Chunk, unit: Unit, out: list[str], overlap: bool) -> _Chunk:
        """Close ``current`` (its trailing headings move on) and open the chunk ``unit`` goes to."""
        carried: list[Unit] = []
        while current.units and current.units[-1].heading is not None:
            carried.insert(0, current.units.pop())
        if any(u.heading is None for u in current.units):
            out.append(current.text())
        first = carried[0] if carried else unit
        following = self._start(first)
        room = self.max_tokens - following.prefix_tokens - unit.tokens - sum(u.tokens for u in carried)
        kept: list[Unit] = []
        if overlap and not carried:
            budget = min(self.overlap_tokens, room)
            for previous in reversed(current.units):
                if previous.tokens > budget or previous.heading is not None:
                    break
                kept.insert(0, previous)
                budget -= previous.tokens
        if kept:
            following = self._start(kept[0])
            while kept and following.prefix_tokens + sum(u.tokens for u in kept) + unit.tokens > self.max_tokens:
                kept.pop(0)
                following = self._start(kept[0]) if kept else self._start(unit)
        following.units = kept + carried
        return following

    def _cut(self, unit: Unit) -> list[str]:
        """A unit longer than a chunk, cut into windows of ``max_tokens`` tokens overlapping as configured."""
        ids = list(self.tokenizer(unit.text, add_special_tokens=False).input_ids)
        step = max(1, self.max_tokens - self.overlap_tokens)
        pieces = []
        for start in range(0, len(ids), step):
            pieces.append(self.tokenizer.decode(ids[start:start + self.max_tokens]).strip())
            if start + self.max_tokens >= len(ids):
                break
        return [p for p in pieces if p]


def chunk_text(text: str, tokenizer: Any, max_tokens: int = AUTO_MAX_TOKENS,
               overlap_tokens: int = AUTO_OVERLAP_TOKENS) -> list[str]:
    """The chunks of ``text`` (see the module's description)."""
    return Chunker(tokenizer, max_tokens, overlap_tokens).chunks(text)
