"""How efficiently tokenizers encode Korean text: tokens per character and per eojeol, bytes per token,
unknown-token rate and round-trip exactness, side by side."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from nexus_k.core.errors import UserError

logger = logging.getLogger(__name__)


@dataclass
class TokenizerStats:
    """One tokenizer measured on one text source (texts encoded one by one, no special tokens added)."""

    tokenizer: str
    """Name or path the tokenizer was loaded from."""
    text: str
    """The text source measured."""
    vocab_size: int
    texts: int
    chars: int
    """Characters of the NFC text, spaces included."""
    eojeols: int
    """Space-separated words."""
    tokens: int
    tokens_per_char: float
    tokens_per_eojeol: float
    bytes_per_token: float
    """UTF-8 bytes per token."""
    unknown_rate: float
    """Share of tokens that are the unknown token."""
    roundtrip_exact: float
    """Share of texts for which decode(encode(text)) == text."""
    encode_seconds: float


def load_tokenizer(spec: str | Path):
    """A Hugging Face tokenizer from a folder, a hub name, or a ``.gguf`` file."""
    from transformers import AutoTokenizer

    path = Path(spec)
    if not path.exists() and (path.is_absolute() or str(spec).startswith(".")):
        raise UserError(f"tokenizer not found: {spec}")
    try:
        if path.suffix == ".gguf":
            if not path.is_file():
                raise UserError(f"GGUF file not found: {path}")
            return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        return AutoTokenizer.from_pretrained(str(spec))
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load tokenizer {spec}: {str(err).splitlines()[0]}") from err


def measure(tokenizer, texts: list[str], tokenizer_name: str, text_name: str) -> TokenizerStats:
    """Encode and decode ``texts`` with ``tokenizer`` and summarise."""
    if not texts:
        raise UserError(f"no text in {text_name}")
    start = time.perf_counter()
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    seconds = time.perf_counter() - start
    decoded = tokenizer.batch_decode(encoded, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    tokens = sum(len(ids) for ids in encoded)
    chars = sum(len(t) for t in texts)
    eojeols = sum(len(t.split()) for t in texts)
    text_bytes = sum(len(t.encode("utf-8")) for t in texts)
    unk = tokenizer.unk_token_id
    unknown = sum(ids.count(unk) for ids in encoded) if unk is not None else 0
    exact = sum(d == t for d, t in zip(decoded, texts, strict=True))
    return TokenizerStats(
        tokenizer=tokenizer_name,
        text=text_name,
        vocab_size=len(tokenizer),
        texts=len(texts),
        chars=chars,
        eojeols=eojeols,
        tokens=tokens,
        tokens_per_char=round(tokens / chars, 4),
        tokens_per_eojeol=round(tokens / max(eojeols, 1), 4),
        bytes_per_token=round(text_bytes / max(tokens, 1), 4),
        unknown_rate=round(unknown / max(tokens, 1), 6),
        roundtrip_exact=round(exact / len(texts), 6),
        encode_seconds=round(seconds, 3),
    )


def compare(tokenizers: dict[str, object], sources: dict[str, list[str]]) -> list[TokenizerStats]:
    """Measure every tokenizer on every text source (rows in tokenizer-major order)."""
    return [measure(tok, texts, name, source) for name, tok in tokenizers.items() for source, texts in sources.items()]


def stats_table(rows: list[TokenizerStats]):
    """A rich table of the rows, one line per (tokenizer, text)."""
    from rich.table import Table

    table = Table(title="Tokenizer efficiency (lower tokens/char is better)")
    for column in ("tokenizer", "text", "vocab", "tokens/char", "tokens/eojeol", "bytes/token", "unk", "round-trip"):
        if column in ("tokenizer", "text"):
            table.add_column(column, overflow="fold")  # long paths wrap instead of being cut to "/tmp/…"
        else:
            table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(
            row.tokenizer,
            row.text,
            f"{row.vocab_size:,}",
            f"{row.tokens_per_char:.3f}",
            f"{row.tokens_per_eojeol:.3f}",
            f"{row.bytes_per_token:.2f}",
            f"{row.unknown_rate:.2%}",
            f"{row.roundtrip_exact:.2%}",
        )
    return table


def rows_as_dicts(rows: list[TokenizerStats]) -> list[dict]:
    """Rows as plain dicts (for ``--json`` and benchmark files)."""
    return [asdict(row) for row in rows]
