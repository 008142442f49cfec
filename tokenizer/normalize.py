"""Text normalisation (Unicode NFC) and morpheme-aware pre-tokenisation with Kiwi.

Korean can arrive as precomposed syllables (NFC) or as conjoining jamo (NFD, e.g. from macOS file names);
both must give the same tokens, so every text goes through NFC first.

Kiwi pre-tokenisation marks morpheme boundaries inside each eojeol (``영화가`` -> ``영화|가``) with a
private-use separator. Training splits on it, so no learned token crosses a morpheme boundary; the saved
tokenizer does not need Kiwi at inference (it is an ordinary Hugging Face tokenizer).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Iterator

# A private-use code point: never in real text, removed by the training pre-tokenizer.
MORPHEME_SEPARATOR = "\ue000"


def nfc(text: str) -> str:
    """Unicode NFC: conjoining jamo become precomposed Hangul syllables."""
    return unicodedata.normalize("NFC", text)


def morpheme_split_points(text: str, token_spans: Iterable[tuple[int, int]]) -> list[int]:
    """Offsets inside ``text`` where a new morpheme starts within a word (never at a space).

    ``token_spans`` are (start, length) pairs from a morphological analyser; contracted morphemes that share
    a span (``했`` = 하 + 었) give no split.
    """
    points: set[int] = set()
    for start, length in token_spans:
        for offset in (start, start + length):
            if 0 < offset < len(text) and not text[offset - 1].isspace() and not text[offset].isspace():
                points.add(offset)
    return sorted(points)


def insert_separators(text: str, points: list[int]) -> str:
    """``text`` with :data:`MORPHEME_SEPARATOR` inserted at each offset in ``points``."""
    pieces, last = [], 0
    for point in points:
        pieces.append(text[last:point])
        last = point
    pieces.append(text[last:])
    return MORPHEME_SEPARATOR.join(pieces)


class KiwiSplitter:
    """Marks morpheme boundaries in batches of texts with Kiwi (``kiwipiepy``)."""

    def __init__(self, num_workers: int = 0) -> None:
        """Load Kiwi's model; ``num_workers`` threads (0: Kiwi's default, all cores)."""
        from kiwipiepy import Kiwi

        self._kiwi = Kiwi(num_workers=num_workers or None)

    def split(self, texts: Iterable[str]) -> Iterator[str]:
        """Yield each text with morpheme separators inserted (order preserved)."""
        texts = list(texts)
        for text, tokens in zip(texts, self._kiwi.tokenize(texts), strict=True):
            spans = ((token.start, token.len) for token in tokens)
            yield insert_separators(text, morpheme_split_points(text, spans))

    def morphemes(self, text: str) -> list[str]:
        """The surface pieces of ``text`` between morpheme boundaries (spaces kept on the following piece)."""
        return next(self.split([text])).split(MORPHEME_SEPARATOR)
